"""evonorm.convert on torchvision/timm models and on hand-written dataflow corner cases.

Expected counts come from the architectures (which BatchNorm precedes a ReLU,
which feeds a residual add), and converted blocks are checked against forwards
written out by hand from their converted parts.
"""
import copy
import pickle
from functools import partial

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import fx, nn

from timm.layers import BatchNormAct2d

import evonorm
from evonorm.convert import ConversionSummary
from evonorm.layers import _EvoNormBase


REF = "reference"  # the fused kernels compile per shape; conversion is what is tested here


def _evonorms(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, _EvoNormBase)}


def _params(model):
    return sum(p.numel() for p in model.parameters())


def _no_batchnorm_left(model):
    return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


# ---------------------------------------------------------------- torchvision ResNet-18
@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    original = torchvision.models.resnet18(num_classes=10)
    model, summary = evonorm.convert(copy.deepcopy(original), "S0", impl=REF)
    return original, model, summary


def test_resnet18_pairs_and_affine_only_layers(resnet18):
    original, model, summary = resnet18
    # stem bn1 and each block's bn1 precede a ReLU; bn2 and downsample.1 feed the residual add
    fused = {"bn1"} | {f"layer{s}.{b}.bn1" for s in range(1, 5) for b in range(2)}
    affine = {f"layer{s}.{b}.bn2" for s in range(1, 5) for b in range(2)} | \
             {f"layer{s}.0.downsample.1" for s in range(2, 5)}
    layers = _evonorms(model)
    assert {n for n, m in layers.items() if m.apply_act} == fused
    assert {n for n, m in layers.items() if not m.apply_act} == affine
    assert all(type(m) is evonorm.EvoNorm2dS0 for m in layers.values())
    assert (summary.fused, summary.affine_only, summary.traced) == (9, 11, True)
    assert _no_batchnorm_left(model)
    assert type(model) is torchvision.models.ResNet and isinstance(model.relu, nn.Identity)
    # the blocks reuse self.relu after the add: their forward is regenerated, not their ReLU deleted
    assert summary.rewritten == tuple(f"layer{s}.{b}" for s in range(1, 5) for b in range(2))
    assert all(isinstance(model.get_submodule(p).relu, nn.ReLU) for p in summary.rewritten)
    assert isinstance(summary, ConversionSummary) and "layer1.0.bn2" in str(summary)
    repr(model)


def test_resnet18_shapes_parameters_and_state_dict(resnet18):
    original, model, _ = resnet18
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # each fused BatchNorm gains EvoNorm-S0's v (one per channel); affine-only ones keep 2C
    fused_channels = 64 + 2 * (64 + 128 + 256 + 512)
    assert _params(model) == _params(original) + fused_channels == 11_181_642 + 1_984
    expected = {k for k in original.state_dict()
                if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    expected |= {f"{n}.v" for n, m in _evonorms(model).items() if m.apply_act}
    assert set(model.state_dict()) == expected


def test_resnet18_copies_batchnorm_affine_parameters():
    original = torchvision.models.resnet18(num_classes=10)
    with torch.no_grad():
        for m in original.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    bn = {n: (m.weight.clone(), m.bias.clone()) for n, m in original.named_modules()
          if isinstance(m, nn.BatchNorm2d)}
    model, _ = evonorm.convert(original, "B0", impl=REF)
    for name, layer in _evonorms(model).items():
        torch.testing.assert_close(layer.weight, bn[name][0], rtol=0, atol=0)
        torch.testing.assert_close(layer.bias, bn[name][1], rtol=0, atol=0)


@pytest.mark.parametrize("block", ["layer1.0", "layer2.0"])
def test_resnet18_block_computes_the_paper_dataflow(resnet18, block):
    _, model, _ = resnet18
    b = model.get_submodule(block)
    x = torch.randn(2, 64, 8, 8)
    shortcut = x if b.downsample is None else b.downsample(x)
    # EvoNorm (with its own non-linearity) in place of bn1+relu; one ReLU after the add
    expected = F.relu(b.bn2(b.conv2(b.bn1(b.conv1(x)))) + shortcut)
    torch.testing.assert_close(b(x), expected, rtol=0, atol=0)


def _cifar_batch(root, n):
    with open(root / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    x = torch.tensor(np.asarray(batch[b"data"][:n], dtype=np.float32)).view(n, 3, 32, 32) / 255
    x = (x - x.mean(dim=(0, 2, 3), keepdim=True)) / x.std(dim=(0, 2, 3), keepdim=True)
    return x, torch.tensor(batch[b"labels"][:n])


def test_converted_resnet18_trains_on_cifar10(shared_data_root):
    torch.manual_seed(0)
    model, _ = evonorm.convert(torchvision.models.resnet18(num_classes=10), "S0", impl=REF)
    x, y = _cifar_batch(shared_data_root, 8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    losses = []
    for _ in range(3):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[0] > 2.0  # ~ln(10) at initialisation
    assert losses[0] > losses[1] > losses[2] and losses[2] < 0.6 * losses[0], losses
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


# ---------------------------------------------------------------- other model zoos
def test_mobilenet_v2_converts_in_place():
    original = torchvision.models.mobilenet_v2(num_classes=10)
    model, summary = evonorm.convert(copy.deepcopy(original), "B0", impl=REF)
    # 17 inverted residuals: the first has (dw, project), the others (expand, dw, project);
    # the stem and the last 1x1 conv are BN+ReLU6; every project BN is linear
    assert (summary.fused, summary.affine_only, summary.rewritten) == (1 + 1 + 16 * 2 + 1, 17, ())
    assert type(model) is torchvision.models.MobileNetV2 and _no_batchnorm_left(model)
    assert not any(isinstance(m, nn.ReLU6) for m in model.modules())
    stem = model.features[0]
    assert isinstance(stem[1], evonorm.EvoNorm2dB0) and isinstance(stem[2], nn.Identity)
    fused_channels = sum(m.num_features for m in _evonorms(model).values() if m.apply_act)
    assert _params(model) == _params(original) + fused_channels
    model(torch.randn(2, 3, 32, 32)).sum().backward()


def test_timm_resnet18_keeps_its_class():
    model, summary = evonorm.convert(timm.create_model("resnet18", pretrained=False, num_classes=10),
                                     "S0", impl=REF)
    # timm's BasicBlock has one act1 and one act2 per block: no forward needs regenerating
    assert (summary.fused, summary.affine_only, summary.rewritten) == (9, 11, ())
    assert type(model).__module__ == "timm.models.resnet" and _no_batchnorm_left(model)
    assert isinstance(model.layer1[0].act1, nn.Identity) and isinstance(model.layer1[0].act2, nn.ReLU)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_timm_efficientnet_norm_act_layers():
    model, summary = evonorm.convert(timm.create_model("efficientnet_b0", pretrained=False, num_classes=10),
                                     "S0", impl=REF)
    # BatchNormAct2d with SiLU: stem, first depthwise, 15 x (expand, depthwise), head;
    # apply_act=False ones (projections) feed the residual add or the next block
    assert (summary.fused, summary.affine_only, summary.rewritten) == (1 + 1 + 15 * 2 + 1, 1 + 15, ())
    assert _no_batchnorm_left(model)
    assert all("(inside)" in r.feeds for r in summary.replacements if r.apply_act)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_torchvision_norm_layer_argument_takes_the_layers():
    model = torchvision.models.resnet18(num_classes=10, norm_layer=partial(evonorm.EvoNorm2dS0, impl=REF))
    assert len(_evonorms(model)) == 20 and _no_batchnorm_left(model)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    model = torchvision.models.mobilenet_v2(num_classes=10, norm_layer=partial(evonorm.EvoNorm2dB0, impl=REF))
    model(torch.randn(2, 3, 32, 32)).sum().backward()


# ---------------------------------------------------------------- dataflow corner cases
class SharedAndFunctional(nn.Module):
    """One ReLU module used twice, a functional act, a tensor-method act and a BN feeding two users."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 1)
        self.bn1, self.bn2, self.bn3, self.bn4 = (nn.BatchNorm2d(8) for _ in range(4))
        self.relu = nn.ReLU()
        self.body = nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8))
        self.skip = nn.Identity()

    def forward(self, x):
        x = self.conv(x)
        a = self.relu(self.skip(self.bn1(x)))  # through an Identity: still a pair
        b = F.silu(self.bn2(a))
        c = self.bn3(b).relu()
        d = self.bn4(c)
        e = torch.relu(self.body(d))  # the pair crosses a Sequential boundary
        return self.relu(d + c) + d + e  # bn4 has three users: affine-only


def _manual(m, x):
    x = m.conv(x)
    a = m.bn1(x)
    b = m.bn2(a)
    c = m.bn3(b)
    d = m.bn4(c)
    e = m.body(d)
    return F.relu(d + c) + d + e


def test_shared_and_functional_activations_are_removed_per_call():
    torch.manual_seed(0)
    model, summary = evonorm.convert(SharedAndFunctional(), "B0")
    apply = {r.name: r.apply_act for r in summary.replacements}
    assert apply == {"bn1": True, "bn2": True, "bn3": True, "bn4": False, "body.1": True}
    assert summary.rewritten == ("",) and isinstance(model, fx.GraphModule)
    assert type(model).__name__ == "SharedAndFunctional"
    x = torch.randn(3, 4, 5, 5)
    torch.testing.assert_close(model(x), _manual(model, x), rtol=0, atol=0)
    assert {n for n, _ in model.named_parameters()} >= {"bn1.v", "body.1.v", "bn4.weight"}


class ActInsideChild(nn.Module):
    """A BN in one module and its F.relu in a sibling's forward: only the parent sees both."""

    class Head(nn.Module):
        def forward(self, x):
            return F.relu(x) * 2

    class Tail(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn(x) + 0

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))
        self.head = self.Head()
        self.block = nn.Sequential(nn.Conv2d(3, 3, 1), self.Tail())

    def forward(self, x):
        return self.block(self.head(self.stem(x)))


def test_pair_split_across_modules_regenerates_their_common_parent():
    model, summary = evonorm.convert(ActInsideChild(), "S0")
    assert [(r.name, r.apply_act) for r in summary.replacements] == [("stem.1", True), ("block.1.bn", False)]
    assert summary.rewritten == ("",)
    x = torch.randn(2, 3, 4, 4)
    expected = model.block(model.stem(x) * 2)
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def test_sequential_is_read_without_tracing(monkeypatch):
    def no_trace(*args, **kwargs):
        raise AssertionError("traced")
    monkeypatch.setattr(fx.Tracer, "trace", no_trace)
    shared = nn.ReLU()
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), shared,
                          nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)),
                          nn.Identity(), shared, nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4))
    model, summary = evonorm.convert(model, "S1")
    assert not summary.traced
    assert [(r.name, r.apply_act) for r in summary.replacements] == [("1", True), ("3.1", True), ("7", False)]
    assert isinstance(model[2], nn.Identity) and isinstance(model[5], nn.Identity)
    assert model(torch.randn(1, 3, 6, 6)).shape == (1, 4, 4, 4)


class DropoutBetween(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.drop = nn.Dropout2d(0.5)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.drop(self.bn(x))) + self.act(x)


def test_dropout_between_norm_and_activation_keeps_the_pair_and_the_mode():
    model = DropoutBetween().eval()
    model, summary = evonorm.convert(model, "S0")
    # EvoNorm's activation now runs before the dropout, as in the official code
    assert summary.replacements[0].apply_act and summary.rewritten == ("",)
    assert not model.training and not model.drop.training and not model.bn.training
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(model(x), model.bn(x) + F.relu(x), rtol=0, atol=0)
    model.train()
    torch.manual_seed(0)
    y = model(x)
    torch.manual_seed(0)
    torch.testing.assert_close(y, model.drop(model.bn(x)) + F.relu(x), rtol=0, atol=0)


def test_sequential_with_custom_blocks_is_traced():
    class Swish(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(x)
    model, summary = evonorm.convert(nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), Swish()), "S0")
    assert summary.traced and [r.apply_act for r in summary.replacements] == [False]


def test_1d_and_3d_batchnorms_get_matching_layers():
    model = nn.Sequential(nn.Conv1d(2, 4, 1), nn.BatchNorm1d(4), nn.GELU(),
                          nn.Unflatten(2, (1, 1, 3)), nn.Conv3d(4, 4, 1), nn.BatchNorm3d(4))
    model, summary = evonorm.convert(model, "evonorm_b2", momentum=0.2)
    assert type(model[1]) is evonorm.EvoNorm1dB2 and model[1].apply_act
    assert type(model[5]) is evonorm.EvoNorm3dB2 and not model[5].apply_act
    assert model[1].momentum == 0.2
    assert model(torch.randn(2, 2, 3)).shape == (2, 4, 1, 1, 3)


def test_dtype_device_mode_and_frozen_parameters_are_kept():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.ReLU()).double().eval()
    model[1].weight.requires_grad_(False)
    model, _ = evonorm.convert(model, "B0", eps=1e-3)
    layer = model[1]
    assert layer.weight.dtype == torch.float64 and not layer.training and layer.eps == 1e-3
    assert not layer.weight.requires_grad and layer.bias.requires_grad
    meta = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.ReLU()).to("meta")
    meta, _ = evonorm.convert(meta, "S0")
    assert all(t.device.type == "meta" for t in meta[1].parameters())


# ---------------------------------------------------------------- refusals
class TwiceBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn(self.bn(x))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn(x) if x.sum() > 0 else x


class OwnForwardBN(nn.BatchNorm2d):
    def forward(self, x):
        return super().forward(x) * 2


class TrainingDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return F.dropout(F.relu(self.bn(x)), 0.5, training=self.training)


@pytest.mark.parametrize("model,match", [
    (TwiceBN(), "'bn' is called 2 times"),
    (DataDependent(), "cannot convert DataDependent: torch.fx could not trace it"),
    (nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3), nn.Hardswish()), "'1' feeds Hardswish"),
    (torchvision.models.mobilenet_v3_small(num_classes=10), "Hardswish"),
    (nn.Sequential(OwnForwardBN(3)), "'0': OwnForwardBN is a BatchNorm subclass with its own forward"),
    (nn.Sequential(BatchNormAct2d(3, drop_layer=nn.Dropout)), "'0' .BatchNormAct2d. applies Dropout"),
    (TrainingDependent(), "cannot regenerate the forward of '<root>' .TrainingDependent."),
])
def test_refusals_name_the_module_and_leave_the_model_untouched(model, match):
    before = copy.deepcopy(model.state_dict())
    modules = [type(m) for m in model.modules()]
    with pytest.raises(ValueError, match=match):
        evonorm.convert(model, "S0")
    assert [type(m) for m in model.modules()] == modules
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_layer_names_and_reserved_options():
    model = nn.Sequential(nn.BatchNorm2d(3))
    with pytest.raises(ValueError, match=r"unknown EvoNorm layer 'S9'.*'B0'"):
        evonorm.convert(model, "S9")
    with pytest.raises(ValueError, match=r"\['apply_act'\]"):
        evonorm.convert(model, "S0", apply_act=False)
    with pytest.raises(TypeError):
        evonorm.convert(model, "S0", gropus=4)
    assert isinstance(model[0], nn.BatchNorm2d)
