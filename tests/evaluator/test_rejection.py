"""Pre-rejection on probe outputs and the gradient-ascent stability estimate."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from evaluator.models import NormActFactory, build_model
from evaluator.rejection import is_input_independent, prefilter, worst_grad_norm
from primitives import LayerGraph


def graph(*rows: tuple[str, ...]) -> LayerGraph:
    return LayerGraph.from_nodes([(f"n{i + 1}", op, list(inputs)) for i, (op, *inputs) in enumerate(rows)])


def verdict(layer) -> str | None:
    result = prefilter(NormActFactory(layer, groups=4), 4)
    return None if result is None else result[0]


@pytest.mark.parametrize("layer", ["bn_relu", "gn_relu", "evonorm_b0", "evonorm_b1", "evonorm_b2",
                                   "evonorm_s0", "evonorm_s1", "evonorm_s2"])
def test_known_good_layers_pass(layer):
    assert verdict(layer) is None


@pytest.mark.parametrize("rows", [
    (("div", "x", "zero"),),                      # x / 0: Inf and NaN everywhere
    (("div", "x", "v0"),),                        # v0 starts at 0: the first step would be Inf
    (("exp", "x"), ("exp", "n1"), ("exp", "n2")),  # overflows float32 on ordinary activations
])
def test_nonfinite_outputs_are_rejected(rows):
    assert verdict(graph(*rows)) == "prefilter_nonfinite"


@pytest.mark.parametrize("rows", [
    (("mul", "x", "zero"),),                  # always 0
    (("sigmoid", "v1"),),                     # a per-channel constant
    (("mean_batch", "x"),),                   # the same for every sample and position (train mode)
    (("std_layer", "x"), ("div", "n1", "n1")),  # always 1
])
def test_input_independent_outputs_are_rejected(rows):
    assert verdict(graph(*rows)) == "prefilter_constant"


def test_constant_only_at_initial_parameters_is_kept():
    """x * v0 is 0 while v0 = 0, but v0 learns: rejected only if constant at random parameters too."""
    assert verdict(graph(("mul", "x", "v0"),)) is None


def test_input_independence_is_per_channel_over_samples_and_positions():
    out = torch.arange(3.0).view(1, 3, 1, 1).expand(4, 3, 2, 2)
    assert is_input_independent(out)
    varied = out.clone()
    varied[2, 1, 0, 1] += 1e-3
    assert not is_input_independent(varied)


def tiny_net(layer) -> nn.Module:
    cfg = {"resnet": {"block": "basic", "width": 0.25, "depth": 0.33, "stem_stride": 2}}
    torch.manual_seed(0)
    return build_model("resnet", cfg, NormActFactory(layer, groups=4))


def test_stable_layers_have_moderate_worst_case_gradients():
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    for layer in ("bn_relu", "evonorm_s0", "evonorm_b0"):
        norm = worst_grad_norm(tiny_net(layer), x, y, steps=3, lr=0.05)
        assert 0 < norm < 1e3, layer


def test_exploding_layer_has_huge_worst_case_gradients():
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    explode = graph(("square", "x"), ("square", "n1"), ("mul", "n2", "x"))  # x^5 in every slot
    assert worst_grad_norm(tiny_net(explode), x, y, steps=3, lr=0.05) > 1e8


def test_ascent_raises_the_estimate_and_leaves_the_model_alone():
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    model = tiny_net("evonorm_s0")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    at_init = worst_grad_norm(model, x, y, steps=0, lr=0.05)
    searched = worst_grad_norm(model, x, y, steps=3, lr=0.05)
    assert math.isfinite(at_init) and searched > at_init
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
