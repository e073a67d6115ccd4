"""The C++ depthwise convolution against nn.Conv2d in float64: values, both gradients, double backward."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from evaluator import depthwise
from evaluator.config import DEFAULTS, merge
from evaluator.depthwise import DepthwiseConv2d
from evaluator.evaluate import Evaluator
from evaluator.models import NormActFactory, build_model

CL = torch.channels_last

# (N, C, H, W, kernel, stride): channels below, at and above the vector width, 1x1 and odd maps, batch 1.
SHAPES = [(32, 240, 2, 2, 3, 1), (4, 48, 16, 16, 3, 2), (3, 5, 7, 9, 3, 2), (2, 17, 5, 6, 5, 1),
          (1, 3, 1, 1, 3, 1), (2, 20, 9, 9, 5, 2), (2, 4, 3, 3, 7, 1), (1, 33, 4, 4, 1, 1), (2, 16, 6, 5, 3, 3),
          (3, 1, 4, 3, 7, 4), (1, 31, 2, 5, 5, 3)]


needs_library = pytest.mark.skipif(depthwise._library() is None, reason="depthwise.cpp could not be built here")


def _reference(x, weight, stride, grad):
    x64, w64 = (t.detach().double().requires_grad_() for t in (x, weight))
    out = F.conv2d(x64, w64, None, stride, weight.shape[-1] // 2, 1, x.shape[1])
    return (out, *torch.autograd.grad(out, (x64, w64), grad.double()))


@needs_library
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_values_and_gradients_match_float64_conv(shape):
    n, c, h, w, k, s = shape
    torch.manual_seed(0)
    conv = DepthwiseConv2d(c, k, s)
    x = torch.randn(n, c, h, w).contiguous(memory_format=CL).requires_grad_()
    out = conv(x)
    assert out.grad_fn is not None and "_Conv" in type(out.grad_fn).__name__
    grad = torch.randn_like(out)
    ours = (out, *torch.autograd.grad(out, (x, conv.weight), grad))
    for mine, reference in zip(ours, _reference(x, conv.weight, s, grad)):
        assert mine.shape == reference.shape
        torch.testing.assert_close(mine.double(), reference, rtol=1e-5, atol=1e-5)
    assert out.is_contiguous(memory_format=CL) and ours[1].is_contiguous(memory_format=CL)


@needs_library
def test_the_weight_gradient_is_the_same_at_any_thread_count():
    torch.manual_seed(0)
    conv = DepthwiseConv2d(24, 3, 1)
    x = torch.randn(8, 24, 16, 16).contiguous(memory_format=CL).requires_grad_()
    grad = torch.randn(8, 24, 16, 16).contiguous(memory_format=CL)
    threads = torch.get_num_threads()
    results = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            results.append(torch.autograd.grad(conv(x), (x, conv.weight), grad))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@needs_library
@pytest.mark.parametrize("shape", [(4, 12, 8, 8, 3, 2), (2, 20, 5, 5, 5, 1)], ids=str)
def test_second_and_third_derivatives_match_float64_conv(shape):
    """The stability check differentiates a gradient norm: higher derivatives are those of F.conv2d."""
    n, c, h, w, k, s = shape
    torch.manual_seed(0)
    conv = DepthwiseConv2d(c, k, s)
    x = torch.randn(n, c, h, w).contiguous(memory_format=CL)
    results = []
    for dtype in (torch.float32, torch.float64):
        xi = x.to(dtype).requires_grad_()
        wi = conv.weight.detach().to(dtype).requires_grad_()
        if dtype == torch.float32:
            out = torch.func.functional_call(conv, {"weight": wi}, (xi,))
            assert "_Conv" in type(out.grad_fn).__name__
        else:
            out = F.conv2d(xi, wi, None, s, k // 2, 1, c)
        gx, gw = torch.autograd.grad(out.square().sum(), (xi, wi), create_graph=True)
        second = torch.autograd.grad(gx.square().sum() + gw.square().sum(), (xi, wi), create_graph=True)
        third = torch.autograd.grad(second[0].sum() + second[1].sum(), (xi, wi))
        results.append((*second, *third))
    for ours, reference in zip(*results):
        torch.testing.assert_close(ours.double(), reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layout,dtype", [(torch.contiguous_format, torch.float32), (CL, torch.float64),
                                          (CL, torch.bfloat16)])
def test_other_inputs_take_the_convolution(layout, dtype):
    torch.manual_seed(0)
    conv = DepthwiseConv2d(6, 3, 1).to(dtype)
    x = torch.randn(2, 6, 5, 5, dtype=dtype).contiguous(memory_format=layout)
    out = conv(x)
    assert out.grad_fn is None or "_Conv" not in type(out.grad_fn).__name__
    torch.testing.assert_close(out, F.conv2d(x, conv.weight, None, 1, 1, 1, 6))


@needs_library
def test_nan_and_inf_propagate_like_the_convolution():
    conv = DepthwiseConv2d(4, 3, 1)
    x = torch.randn(1, 4, 4, 4)
    x[0, 1, 2, 2], x[0, 2, 0, 0] = float("nan"), float("inf")
    x = x.contiguous(memory_format=CL)
    reference = F.conv2d(x, conv.weight, None, 1, 1, 1, 4)
    torch.testing.assert_close(conv(x), reference, equal_nan=True)


def test_without_the_loops_it_is_the_convolution(monkeypatch):
    monkeypatch.setitem(depthwise._state, "library", None)
    monkeypatch.setitem(depthwise._state, "failed", True)  # as after a failed build
    conv = DepthwiseConv2d(6, 3, 2)
    x = torch.randn(2, 6, 5, 5).contiguous(memory_format=CL).requires_grad_()
    out = conv(x)
    assert "_Conv" not in type(out.grad_fn).__name__
    torch.testing.assert_close(out, F.conv2d(x, conv.weight, None, 2, 1, 1, 6))


@needs_library
def test_an_evaluator_on_cpu_loads_the_loops_when_it_starts(monkeypatch, tiny_cfg):
    monkeypatch.setitem(depthwise._state, "library", None)
    Evaluator(tiny_cfg())
    assert depthwise._state["library"] is not None


@pytest.mark.parametrize("kernel", [2, 9])
def test_unsupported_kernels_are_refused(kernel):
    with pytest.raises(ValueError, match="odd kernel size"):
        DepthwiseConv2d(4, kernel)


def test_the_mobile_networks_use_it_for_their_depthwise_convs():
    cfg = merge(DEFAULTS, {"model": {a: {"width": 0.25, "depth": 0.2, "stem_stride": 2}
                                     for a in ("mobilenetv2", "efficientnet")}})["model"]
    for arch in ("mobilenetv2", "efficientnet"):
        model = build_model(arch, cfg, NormActFactory("bn_relu"))
        grouped = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
        assert grouped and all(isinstance(m, DepthwiseConv2d) for m in grouped)
