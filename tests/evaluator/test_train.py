"""The trainer's speed settings (channels_last networks, fused SGD, validation in inference mode, flushed
subnormals) change rounding only, never what is trained or scored."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from evaluator.data import load_dataset
from evaluator.models import NormActFactory, build_model
from evaluator.train import NonFiniteError, Trainer, accuracy, flush_denormal, make_optimizer


@pytest.fixture
def data(tiny_cfg):
    return load_dataset(tiny_cfg()["data"], 0)


def _trainer(cfg, data, layer, arch, channels_last):
    train = {**cfg["train"], "channels_last": channels_last}
    torch.manual_seed(0)
    model = build_model(arch, cfg["model"], NormActFactory(layer, groups=cfg["model"]["groups"]))
    return Trainer(model, data, train, seed=1)


@pytest.mark.parametrize("layer", ["bn_relu", "evonorm_s0"])
@pytest.mark.parametrize("arch", ["resnet", "mobilenetv2"])
def test_channels_last_trains_the_same_network(tiny_cfg, data, layer, arch):
    cfg = tiny_cfg()
    cl, plain = (_trainer(cfg, data, layer, arch, flag) for flag in (True, False))
    conv = next(p for p in cl.model.parameters() if p.dim() == 4 and p.shape[2] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    x, y = cl.batch(cl.order.next(), cl.generator)
    assert x.is_contiguous(memory_format=torch.channels_last)
    px, py = plain.batch(plain.order.next(), plain.generator)
    assert torch.equal(x, px) and torch.equal(y, py)  # the same images, in another layout
    # the same step in float64 (float32 rounding differs between layouts, and some channels of these tiny
    # networks amplify it)
    nets = [copy.deepcopy(t.model).double() for t in (cl, plain)]
    losses = [F.cross_entropy(net(b.double()), y) for net, b in zip(nets, (x, px))]
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-10, atol=0)
    for loss in losses:
        loss.backward()
    scale = max(p.grad.abs().max().item() for p in nets[1].parameters())
    for (name, a), b in zip(nets[0].named_parameters(), nets[1].parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-9 * scale, msg=name)
    cl.train_to(3)
    plain.train_to(3)
    assert cl.step == plain.step == 3
    assert abs(cl.accuracy() - plain.accuracy()) <= 0.1


def test_fused_sgd_takes_the_plain_step(tiny_cfg, data):
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = build_model("resnet", cfg["model"], NormActFactory("evonorm_s0", groups=4))
    other = copy.deepcopy(model)
    fast = make_optimizer(model, cfg["train"])
    assert fast.defaults["fused"]
    slow = make_optimizer(other, cfg["train"])
    for group in slow.param_groups:
        group["fused"], group["foreach"] = False, False
    x = torch.randn(8, 3, 32, 32)
    y = torch.randint(0, 10, (8,))
    for _ in range(3):
        for net, opt in ((model, fast), (other, slow)):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            opt.step()
    for a, b in zip(model.parameters(), other.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_accuracy_counts_every_batch_and_refuses_non_finite_outputs():
    images = torch.randn(10, 3, 4, 4)
    labels = torch.arange(10) % 3
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
    expected = (net(images).argmax(1) == labels).float().mean().item()
    for batch in (1, 3, 10, 64):
        assert accuracy(net, images, labels, batch) == pytest.approx(expected)
        assert accuracy(net, images, labels, batch, channels_last=True) == pytest.approx(expected)
    assert net.training
    images[7] = float("nan")
    with pytest.raises(NonFiniteError):
        accuracy(net, images, labels, 3)
    assert net.training


def _flushes() -> bool:
    return (torch.tensor([1e-39]) * 1.0).item() == 0.0  # a float32 subnormal


def test_flush_denormal_only_inside_its_block_and_bn_relu_trains_the_same(tiny_cfg, data):
    """Subnormals count as 0 in the block and are back after it (even after an error); a layer whose values
    stay normal trains to the same bits with it on or off."""
    assert not _flushes()
    with flush_denormal(True):
        assert _flushes()
    with pytest.raises(RuntimeError), flush_denormal(True):
        raise RuntimeError("a failed evaluation")
    assert not _flushes()
    with flush_denormal(False):
        assert not _flushes()
    cfg = tiny_cfg()
    nets = []
    for flush in (False, True):
        trainer = _trainer(cfg, data, "bn_relu", "resnet", channels_last=True)
        with flush_denormal(flush):
            trainer.train_to(5)
        nets.append(trainer.model)
    for a, b in zip(*(net.state_dict().values() for net in nets)):
        assert torch.equal(a, b)
