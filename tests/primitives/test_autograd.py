"""The lean backward passes must be the true derivatives, to second order (the stability check uses it)."""
import itertools

import pytest
import torch

from primitives import ops
from primitives.autograd import divide, maximum, moment, signed_log, signed_sqrt
from primitives.stats import axis_moment


@pytest.mark.parametrize("axes,kind", list(itertools.product(["batch", "layer", "instance", "group"], ["mean", "var", "msq"])))
@pytest.mark.parametrize("shape", [(3, 4, 2, 3), (2, 4, 5), (3, 4), (1, 4, 1, 1)])
def test_moment_gradients_to_second_order(axes, kind, shape):
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    fn = lambda t: moment(t, axes, kind, 2)  # noqa: E731
    torch.testing.assert_close(fn(x), axis_moment(x, axes, kind, 2), rtol=0, atol=0)
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_moment_through_an_expanded_input_and_half_precision():
    v = torch.randn(1, 4, 1, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: moment(t.expand(3, 4, 2, 2), "group", "msq", 2), (v,))
    x = torch.randn(2, 8, 3, 3, dtype=torch.float16, requires_grad=True)
    (grad,) = torch.autograd.grad(moment(x, "instance", "var", 1).sum(), x)
    expected = torch.autograd.grad(axis_moment(x, "instance", "var", 1).sum(), x)[0]
    assert grad.dtype == torch.float16
    torch.testing.assert_close(grad, expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("shape_b", [(3, 4, 2, 2), (1, 4, 1, 1), ()])
def test_maximum_gradients_and_nan(shape_b):
    a = torch.randn(3, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(shape_b, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(maximum, (a, b))
    assert torch.autograd.gradgradcheck(maximum, (a, b))
    assert torch.isnan(maximum(torch.tensor([float("nan"), 1.0]), torch.tensor([0.0, float("nan")]))).all()


def test_maximum_gives_ties_to_its_first_argument():
    a = torch.ones(3, requires_grad=True)
    b = torch.ones(3, requires_grad=True)
    maximum(a, b).sum().backward()
    assert a.grad.tolist() == [1.0, 1.0, 1.0] and b.grad.tolist() == [0.0, 0.0, 0.0]
    inf = torch.tensor([float("inf"), -float("inf")], requires_grad=True)
    other = inf.detach().clone().requires_grad_(True)
    maximum(inf, other).sum().backward()  # Inf - Inf is NaN, yet the tie still goes to the first argument
    assert inf.grad.tolist() == [1.0, 1.0] and other.grad.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("shape_a, shape_b", [((3, 4, 2, 2), (3, 4, 2, 2)), ((3, 4, 2, 2), (1, 4, 1, 1)),
                                              ((1, 4, 1, 1), (3, 4, 2, 2)), ((3, 1, 2, 2), (1, 4, 1, 1))])
def test_divide_gradients_and_ieee(shape_a, shape_b):
    a = torch.randn(shape_a, dtype=torch.float64, requires_grad=True)
    b = (torch.rand(shape_b, dtype=torch.float64) + 0.5).requires_grad_(True)
    assert torch.autograd.gradcheck(divide, (a, b)) and torch.autograd.gradgradcheck(divide, (a, b))
    out = divide(torch.tensor([1.0, 0.0, -1.0]), torch.zeros(3))
    assert out[0] == float("inf") and torch.isnan(out[1]) and out[2] == float("-inf")


def _channels_last(shape, seed=0):
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return x.contiguous(memory_format=torch.channels_last).requires_grad_(True)


@pytest.mark.parametrize("axes,kind", list(itertools.product(["batch", "layer", "instance", "group"], ["mean", "var", "msq"])))
@pytest.mark.parametrize("groups", [1, 2, 4])  # 4 of 4 channels: one channel per group, the instance shortcut
def test_channels_last_moments_match_the_plain_path(axes, kind, groups):
    """channels_last inputs take NHWC-friendly sums: the same values and derivatives (to rounding)."""
    x = _channels_last((3, 4, 2, 3))
    fn = lambda t: moment(t, axes, kind, groups)  # noqa: E731
    plain = x.detach().contiguous().requires_grad_(True)
    torch.testing.assert_close(fn(x), axis_moment(plain, axes, kind, groups))
    g = torch.randn(fn(x).shape, dtype=torch.float64)
    (grad,) = torch.autograd.grad(fn(x), x, g)
    (expected,) = torch.autograd.grad(axis_moment(plain, axes, kind, groups), plain, g)
    torch.testing.assert_close(grad, expected)
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("axes", ["batch", "layer", "instance", "group"])
@pytest.mark.parametrize("shape", [(3, 4, 2, 3), (2, 4, 5), (3, 4)])
def test_variance_backward_from_saved_centred_values(axes, shape):
    """The first-order backward reuses x - mean from the forward pass; double backward recomputes it: both
    must give plain autograd's gradient of the two-pass variance."""
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    g = torch.randn(moment(x, axes, "var", 2).shape, dtype=torch.float64)
    (first,) = torch.autograd.grad(moment(x, axes, "var", 2), x, g)
    (second,) = torch.autograd.grad(moment(x, axes, "var", 2), x, g, create_graph=True)
    (expected,) = torch.autograd.grad(axis_moment(x, axes, "var", 2), x, g)
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(second, expected)
    assert second.requires_grad


@pytest.mark.parametrize("lean, plain", [(signed_log, ops.signed_log), (signed_sqrt, ops.signed_sqrt)])
def test_signed_log_and_sqrt_match_the_double_where_path_bit_for_bit(lean, plain):
    """The same values and float32 gradients as autograd through ``ops``' functions (zeros, signed zeros,
    NaN and Inf included), and true derivatives to second order, 0 at 0."""
    a = torch.randn(500, generator=torch.Generator().manual_seed(0))
    a[::9] = 0.0
    a[1], a[2], a[3], a[4] = float("nan"), float("inf"), -float("inf"), -0.0
    x, y = a.clone().requires_grad_(True), a.clone().requires_grad_(True)
    out, expected = lean(x), plain(y)
    assert torch.equal(out.nan_to_num(7.0), expected.nan_to_num(7.0))
    grad = torch.randn(500, generator=torch.Generator().manual_seed(1))
    out.backward(grad)
    expected.backward(grad)
    assert torch.equal(x.grad.nan_to_num(7.0), y.grad.nan_to_num(7.0))
    t = torch.randn(12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lean, (t,)) and torch.autograd.gradgradcheck(lean, (t,))
    zero = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(lean(zero).sum(), zero, create_graph=True)
    assert g.tolist() == [0.0] * 3 and torch.autograd.grad(g.sum(), zero)[0].tolist() == [0.0] * 3
