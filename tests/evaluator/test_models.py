"""The proxy families with every kind of layer, and the norm_act factory's slots."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from evaluator.config import DEFAULTS, merge
from evaluator.models import (InvertedResidual, NormActFactory, PointwiseConv2d, ResidualBlock, build_model,
                              resolve_layer)
from evonorm import seeds
from primitives import GraphLayer, LayerGraph

ARCHS = ("resnet", "mobilenetv2", "efficientnet")
LAYERS = ("bn_relu", "gn_relu", "evonorm_s0", "evonorm_b0")
SMALL = {"model": {a: {"width": 0.25, "depth": 0.4, "stem_stride": 2} for a in ARCHS}}


def small_model_cfg(**resnet) -> dict:
    return merge(DEFAULTS, merge(SMALL, {"model": {"groups": 4, "resnet": resnet}}))["model"]


def slots(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, (GraphLayer, nn.BatchNorm2d, nn.GroupNorm))]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("layer", LAYERS)
def test_family_trains_one_step_with_layer(arch, layer):
    torch.manual_seed(0)
    model = build_model(arch, small_model_cfg(), NormActFactory(layer, groups=4))
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    assert model(x).shape == (4, 10)
    repr(model)


def test_bottleneck_resnet_builds_and_runs():
    model = build_model("resnet", small_model_cfg(block="bottleneck"), NormActFactory("evonorm_s0", groups=4))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("arch", ARCHS)
def test_candidate_fills_activation_slots_and_affine_only_slots(arch):
    """Slots followed by an activation run the whole graph; the others are affine-only (no v0/v1, no plan)."""
    model = build_model(arch, small_model_cfg(), NormActFactory("evonorm_b0", groups=4))
    layers = [m for m in model.modules() if isinstance(m, GraphLayer)]
    full = [m for m in layers if m.apply_act]
    affine = [m for m in layers if not m.apply_act]
    assert full and affine
    assert all(m.v1 is not None and hasattr(m, "running_var") for m in full)
    assert all(m.v0 is None and m.v1 is None and not list(m.buffers()) for m in affine)
    x = torch.randn(2, affine[0].num_features, 3, 3)
    w, b = affine[0].weight.view(1, -1, 1, 1), affine[0].bias.view(1, -1, 1, 1)
    assert torch.allclose(affine[0](x), x * w + b)


def residual_blocks(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules()
            if isinstance(m, ResidualBlock) or (isinstance(m, InvertedResidual) and m.residual)]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("layer", ("bn_relu", "evonorm_s0"))
def test_each_residual_branch_ends_in_a_zero_init_norm_without_activation(arch, layer):
    model = build_model(arch, small_model_cfg(), NormActFactory(layer, groups=4)).eval()
    blocks = residual_blocks(model)
    assert blocks
    for block in blocks:
        last = block.branch[-1]
        assert isinstance(last, (GraphLayer, nn.BatchNorm2d))  # a bare norm: no activation after it
        assert torch.count_nonzero(last.weight) == 0
        if isinstance(last, GraphLayer):
            assert not last.apply_act
        identity_shortcut = isinstance(getattr(block, "shortcut", nn.Identity()), nn.Identity)
        if identity_shortcut:  # so the block starts as the identity (then the ResNet's post-add ReLU)
            x = torch.randn(2, block.branch[0].in_channels, 4, 4)
            expected = torch.relu(x) if isinstance(block, ResidualBlock) else x
            assert torch.allclose(block(x), expected)


def test_other_norms_start_at_weight_one():
    model = build_model("resnet", small_model_cfg(), NormActFactory("evonorm_s0", groups=4))
    zero = [m for m in slots(model) if torch.count_nonzero(m.weight) == 0]
    ones = [m for m in slots(model) if torch.all(m.weight == 1)]
    assert len(zero) + len(ones) == len(slots(model)) and ones


def test_group_count_comes_from_the_config():
    factory = NormActFactory("evonorm_s0", groups=32)
    assert factory(16).groups == 16       # falls back to one channel per group
    assert factory(64).groups == 32
    assert factory(40).groups == 20
    gn = NormActFactory("gn_relu", groups=32)(40)
    assert gn[0].num_groups == 20


def test_references_and_seed_names_resolve():
    assert resolve_layer("BN-ReLU") == "bn_relu"
    assert resolve_layer("s0") == seeds.get("evonorm_s0")
    graph = LayerGraph()
    graph.add("tanh", "x")
    assert resolve_layer(graph) is graph
    with pytest.raises(ValueError, match="bn_relu"):
        resolve_layer("batchnorm")


def test_width_and_depth_multipliers_scale_the_network():
    narrow = build_model("resnet", small_model_cfg(), NormActFactory("bn_relu"))
    wide = build_model("resnet", small_model_cfg(width=0.5), NormActFactory("bn_relu"))
    small = build_model("resnet", small_model_cfg(depth=0.33), NormActFactory("bn_relu"))
    deep = build_model("resnet", small_model_cfg(depth=0.66), NormActFactory("bn_relu"))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(wide) > 2 * count(narrow)
    assert len(small.body) == 3 and len(deep.body) == 6  # ceil(3 * depth) blocks per stage


def test_double_backward_through_compiled_networks():
    """The stability check differentiates a gradient norm: every family must support it."""
    model = build_model("efficientnet", small_model_cfg(), NormActFactory("evonorm_b0", groups=4))
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    params = list(model.parameters())
    grads = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params, create_graph=True)
    norm = torch.sqrt(sum(g.square().sum() for g in grads))
    second = torch.autograd.grad(norm, params, allow_unused=True)
    assert any(s is not None and s.abs().sum() > 0 for s in second)


@pytest.mark.parametrize("shape", [(4, 6, 5, 7), (1, 3, 1, 1), (2, 5, 1, 3), (2, 1, 4, 5)])
@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_pointwise_conv_matches_a_1x1_convolution(shape, layout):
    """Values, input and weight gradients and the output's layout are those of nn.Conv2d, in float64."""
    torch.manual_seed(0)
    conv = nn.Conv2d(shape[1], 4, 1, bias=False).double()
    pointwise = PointwiseConv2d(shape[1], 4).double()
    pointwise.load_state_dict(conv.state_dict())
    x = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=layout)
    grad = torch.randn(shape[0], 4, *shape[2:], dtype=torch.float64)
    outputs = []
    for module in (conv, pointwise):
        xi = x.clone(memory_format=torch.preserve_format).requires_grad_()
        out = module(xi)
        out.backward(grad)
        outputs.append((out, xi.grad, module.weight.grad))
    for ours, reference in zip(outputs[1], outputs[0]):
        torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)
    assert outputs[1][0].stride() == outputs[0][0].stride()


def test_the_networks_use_pointwise_convs_for_unstrided_1x1s():
    model = build_model("mobilenetv2", small_model_cfg(), NormActFactory("bn_relu"))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    pointwise = [m for m in convs if isinstance(m, PointwiseConv2d)]
    assert pointwise and all(m.kernel_size == (1, 1) and m.stride == (1, 1) for m in pointwise)
    assert all(m.kernel_size != (1, 1) or m.stride != (1, 1) for m in convs if m not in pointwise)


def test_pointwise_conv_scripts():
    pointwise = PointwiseConv2d(3, 4)
    x = torch.randn(2, 3, 5, 5).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(torch.jit.script(pointwise)(x), pointwise(x))
