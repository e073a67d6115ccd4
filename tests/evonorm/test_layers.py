"""Tests for evonorm.layers against an independent float64 reference.

The reference below is written from the formulas with explicit loops over
channels, samples and groups and hand-written means, so it shares no code or
reduction order with the layers; autograd through it gives reference gradients.
"""
import copy

import pytest
import torch

import evonorm
from evonorm import resolve_groups

VARIANTS = ("B0", "B1", "B2", "S0", "S1", "S2")
SHAPES = {1: (3, 8, 7), 2: (3, 8, 5, 4), 3: (2, 8, 3, 2, 3)}
# (rtol, atol) per layer dtype, for outputs and gradients
TOL = {torch.float32: (2e-4, 2e-5), torch.float64: (1e-10, 1e-12)}
EPS = 1e-5


# ---------------------------------------------------------------- reference
def _mean(t):
    return t.sum() / t.numel()


def _var(t):
    return _mean((t - _mean(t)) ** 2)


def reference(variant, x, p, running_var, training, groups, eps=EPS, apply_act=True):
    """float64 EvoNorm written from the paper/official formulas, channels-first."""
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    w, b, v = p["weight"], p["bias"], p.get("v")
    if not apply_act:
        out = [[flat[i, k] * w[k] + b[k] for k in range(c)] for i in range(n)]
    elif variant.startswith("B"):
        out = [[None] * c for _ in range(n)]
        for k in range(c):
            bv = _var(flat[:, k, :]) if training else running_var[k]
            left = torch.sqrt(bv + eps)
            for i in range(n):
                xi = flat[i, k]
                if variant == "B0":
                    right = v[k] * xi + torch.sqrt(_var(xi) + eps)
                elif variant == "B1":
                    right = (xi + 1) * torch.sqrt(_mean(xi * xi) + eps)
                else:
                    right = torch.sqrt(_mean(xi * xi) + eps) - xi
                out[i][k] = xi / torch.maximum(left.expand_as(right), right) * w[k] + b[k]
    else:
        cg = c // groups
        out = [[None] * c for _ in range(n)]
        for i in range(n):
            for g in range(groups):
                xs = flat[i, g * cg:(g + 1) * cg]
                den = torch.sqrt((_mean(xs * xs) if variant == "S2" else _var(xs)) + eps)
                for k in range(g * cg, (g + 1) * cg):
                    xi = flat[i, k]
                    gate = torch.sigmoid(v[k] * xi if variant == "S0" else xi)
                    out[i][k] = xi * gate / den * w[k] + b[k]
    return torch.stack([torch.stack(row) for row in out]).reshape(x.shape)


# ---------------------------------------------------------------- helpers
def make_layer(variant, ndim, c, dtype=torch.float32, seed=0, **kwargs):
    """A layer with random parameters and running_var (init values hide bugs)."""
    layer = getattr(evonorm, f"EvoNorm{ndim}d{variant}")(c, dtype=dtype, **kwargs)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in layer.named_parameters():
            t.copy_(torch.randn(c, generator=g, dtype=torch.float64) * 0.8 + (name != "bias"))
        if getattr(layer, "running_var", None) is not None:
            layer.running_var.copy_(torch.rand(c, generator=g, dtype=torch.float64) * 3 + 0.25)
    return layer


def rand_input(shape, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 1.5 + 0.3).to(dtype)


def run_layer(layer, x, grad_out):
    """Output, input grad and parameter grads of ``layer`` at ``x``."""
    x = x.detach().clone().requires_grad_(True)
    layer.zero_grad(set_to_none=True)
    y = layer(x)
    y.backward(grad_out.to(y.dtype))
    grads = {n: t.grad for n, t in layer.named_parameters()}
    return y.detach(), x.grad, grads


def run_reference(variant, layer, x, grad_out, training, groups=None):
    """The same quantities from the float64 reference with the layer's values."""
    x = x.detach().double().requires_grad_(True)
    p = {n: t.detach().double().requires_grad_(True) for n, t in layer.named_parameters()}
    rv = None if getattr(layer, "running_var", None) is None else layer.running_var.double()
    y = reference(variant, x, p, rv, training, groups or getattr(layer, "groups", 1),
                  layer.eps, layer.apply_act)
    y.backward(grad_out.double())
    return y.detach(), x.grad, {n: t.grad for n, t in p.items()}


def assert_matches_reference(variant, layer, x, training, groups=None):
    layer.train(training)
    grad_out = rand_input(x.shape, torch.float64, seed=7)
    ref = run_reference(variant, layer, x, grad_out, training, groups)  # before any update
    got = run_layer(layer, x, grad_out)
    rtol, atol = TOL[x.dtype]
    torch.testing.assert_close(got[0].double(), ref[0], rtol=rtol, atol=atol, msg="output")
    torch.testing.assert_close(got[1].double(), ref[1], rtol=rtol, atol=atol, msg="x.grad")
    assert got[2].keys() == ref[2].keys()
    for name in ref[2]:
        torch.testing.assert_close(got[2][name].double(), ref[2][name], rtol=rtol,
                                   atol=atol * x.numel(), msg=f"{name}.grad")


def all_classes():
    return [getattr(evonorm, f"EvoNorm{d}d{v}") for d in (1, 2, 3) for v in VARIANTS]


# ---------------------------------------------------------------- parity
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_reference(variant, ndim, training, dtype):
    kw = {"groups": 4} if variant.startswith("S") else {}
    layer = make_layer(variant, ndim, 8, dtype, **kw)
    assert_matches_reference(variant, layer, rand_input(SHAPES[ndim], dtype), training)


@pytest.mark.parametrize("shape", [(1, 8, 4, 4), (4, 8, 1, 1), (1, 6, 1, 1), (2, 24, 3, 5),
                                   (3, 40, 2, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("variant", VARIANTS)
def test_edge_shapes_match_reference(variant, dtype, shape):
    """Batch 1, 1x1 spatial, C not a multiple of 32 (default groups=32 falls back)."""
    layer = make_layer(variant, 2, shape[1], dtype)
    assert_matches_reference(variant, layer, rand_input(shape, dtype), training=True)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck(variant, ndim, training):
    kw = {"groups": 2} if variant.startswith("S") else {}
    layer = make_layer(variant, ndim, 4, torch.float64, **kw).train(training)
    x = rand_input((2, 4) + (3, 2, 2)[:ndim], torch.float64).requires_grad_(True)
    names = [n for n, _ in layer.named_parameters()]
    params = [t.detach().clone().requires_grad_(True) for _, t in layer.named_parameters()]

    def f(x, *ps):
        return torch.func.functional_call(layer, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params))


# ---------------------------------------------------------------- running variance
@pytest.mark.parametrize("variant", ["B0", "B1", "B2"])
def test_running_var_update_and_eval(variant):
    momentum = 0.3
    layer = make_layer(variant, 2, 5, momentum=momentum)
    expected = layer.running_var.double().clone()
    for step in range(4):
        x = rand_input((2, 5, 2, 2), seed=10 + step) * (step + 1)  # n=8: Bessel would show
        layer.train()(x)
        batch_var = x.double().permute(1, 0, 2, 3).reshape(5, -1).var(dim=1, unbiased=False)
        expected = (1 - momentum) * expected + momentum * batch_var
        torch.testing.assert_close(layer.running_var.double(), expected, rtol=1e-6, atol=0)
    before = layer.running_var.clone()
    x = rand_input((3, 5, 2, 3), seed=20)
    assert_matches_reference(variant, layer, x, training=False)
    assert torch.equal(layer.running_var, before), "eval must not update running_var"
    # eval: each sample uses its own instance statistics and nothing from the batch
    torch.testing.assert_close(layer(x)[1:2], layer(x[1:2]), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- groups
@pytest.mark.parametrize("c, groups, group_size, expected", [
    (40, 32, None, 20), (16, 32, None, 16), (48, 32, None, 24), (64, 32, None, 32),
    (13, 4, None, 1), (7, 32, None, 7), (40, 32, 8, 5), (40, 32, 40, 1)])
def test_resolve_groups(c, groups, group_size, expected):
    assert resolve_groups(c, groups, group_size) == expected


@pytest.mark.parametrize("variant", ["S0", "S1", "S2"])
def test_group_fallback_numerics(variant):
    layer = make_layer(variant, 2, 40, torch.float64, groups=32)
    assert layer.groups == 20
    assert_matches_reference(variant, layer, rand_input((2, 40, 3, 3), torch.float64),
                             training=True, groups=20)


@pytest.mark.parametrize("variant", ["S0", "S1", "S2"])
def test_group_size_must_divide(variant):
    with pytest.raises(ValueError, match=r"group_size=3 .*num_channels=40"):
        getattr(evonorm, f"EvoNorm2d{variant}")(40, group_size=3)
    assert getattr(evonorm, f"EvoNorm2d{variant}")(40, group_size=8).groups == 5


# ---------------------------------------------------------------- dtypes and layouts
@pytest.mark.parametrize("low, rtol, atol", [(torch.float16, 4e-3, 4e-3),
                                             (torch.bfloat16, 2e-2, 2e-2)])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_low_precision_inputs(variant, training, low, rtol, atol):
    layer = make_layer(variant, 2, 8, groups=4) if variant[0] == "S" else make_layer(variant, 2, 8)
    layer32 = copy.deepcopy(layer).train(training)
    x = rand_input((2, 8, 4, 4), low)
    y = layer.train(training)(x)
    assert y.dtype == low
    torch.testing.assert_close(y.float(), layer32(x.float()), rtol=rtol, atol=atol)
    if training and variant[0] == "B":  # statistics stay float32
        assert layer.running_var.dtype == torch.float32
        torch.testing.assert_close(layer.running_var, layer32.running_var)
    half = make_layer(variant, 2, 8, low).train(training)  # parameters in low precision too
    xg = x.clone().requires_grad_(True)
    half(xg).float().square().sum().backward()
    assert xg.grad.dtype == low and torch.isfinite(xg.grad).all()
    if variant[0] == "B":
        assert half.running_var.dtype == torch.float32


@pytest.mark.parametrize("value", [0.0, 3.0, -2.0])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_constant_input_is_finite(variant, training, value):
    layer = make_layer(variant, 2, 8).train(training)
    x = torch.full((2, 8, 3, 3), value, requires_grad=True)
    y = layer(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


@pytest.mark.parametrize("ndim, fmt", [(2, torch.channels_last), (3, torch.channels_last_3d)])
@pytest.mark.parametrize("variant", VARIANTS)
def test_channels_last(variant, ndim, fmt):
    layer = make_layer(variant, ndim, 8)
    shape = (2, 8) + (4, 3, 5)[:ndim]
    x = rand_input(shape)
    grad_out = rand_input(shape, seed=3)
    want = run_layer(copy.deepcopy(layer), x, grad_out)
    got = run_layer(layer, x.to(memory_format=fmt), grad_out.to(memory_format=fmt))
    assert got[0].is_contiguous(memory_format=fmt)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-6)
    for name in want[2]:
        torch.testing.assert_close(got[2][name], want[2][name], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- construction and checks
@pytest.mark.parametrize("cls", all_classes(), ids=lambda c: c.__name__)
def test_input_checks(cls):
    layer = cls(8)
    rank = 2 + layer._spatial_dims
    with pytest.raises(ValueError, match=rf"expected {rank}D input.*got {rank + 1}D"):
        layer(torch.randn((2, 8) + (2,) * (rank - 1)))
    with pytest.raises(ValueError, match=r"expected 8 channels.*got 7"):
        layer(torch.randn((2, 7) + (2,) * (rank - 2)))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_apply_act_false_is_affine(variant, training):
    layer = make_layer(variant, 2, 8, apply_act=False).train(training)
    assert layer.v is None
    assert set(layer.state_dict()) == {"weight", "bias"}
    if variant[0] == "B":
        assert layer.running_var is None
    x = rand_input((2, 8, 3, 3))
    want = x * layer.weight.view(1, -1, 1, 1) + layer.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x), want)


@pytest.mark.parametrize("cls", all_classes(), ids=lambda c: c.__name__)
def test_repr_doc_and_init(cls):
    layer = cls(6)
    text = repr(layer)
    assert text.startswith(f"{cls.__name__}(6, ") and "eps=1e-05" in text
    assert ".. math::" in cls.__doc__
    assert dict(layer.named_parameters()).keys() == (
        {"weight", "bias", "v"} if cls.__name__.endswith("0") else {"weight", "bias"})
    with torch.no_grad():
        for t in list(layer.parameters()) + list(layer.buffers()):
            t.fill_(7.0)
    layer.reset_parameters()
    assert torch.equal(layer.weight, torch.ones(6)) and torch.equal(layer.bias, torch.zeros(6))
    for t in [layer.v, getattr(layer, "running_var", None)]:
        assert t is None or torch.equal(t, torch.ones(6))


@pytest.mark.parametrize("variant", ["B0", "S0"])
def test_factory_kwargs(variant):
    layer = getattr(evonorm, f"EvoNorm2d{variant}")(4, dtype=torch.float64)
    assert layer.weight.dtype == torch.float64 and layer.v.dtype == torch.float64
    meta = getattr(evonorm, f"EvoNorm2d{variant}")(4, device="meta")
    assert meta.weight.is_meta
    if variant == "B0":
        assert layer.running_var.dtype == torch.float64 and meta.running_var.is_meta


def test_invalid_arguments():
    with pytest.raises(ValueError, match="momentum"):
        evonorm.EvoNorm2dB0(4, momentum=1.5)
    with pytest.raises(ValueError, match="num_features"):
        evonorm.EvoNorm2dS0(0)
    with pytest.raises(TypeError):
        evonorm.EvoNorm2dS0(4, group=2)  # misspelled kwargs are not swallowed


# ---------------------------------------------------------------- timm compatibility
@pytest.mark.parametrize("variant", VARIANTS)
def test_timm_state_dict_loads(variant):
    timm_layers = pytest.importorskip("timm.layers", reason="timm is not installed")
    theirs = getattr(timm_layers, f"EvoNorm2d{variant}")(64, eps=EPS)
    ours = getattr(evonorm, f"EvoNorm2d{variant}")(64)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in theirs.parameters():
            t.copy_(torch.randn(t.shape, generator=g))
    ours.load_state_dict(theirs.state_dict(), strict=True)
    # same formulas in training mode (they differ only in the running-var correction)
    x = rand_input((2, 64, 4, 4))
    torch.testing.assert_close(ours.train()(x), theirs.train()(x), rtol=1e-5, atol=1e-5)


def test_chan_merge_of_unequal_parts_is_the_moments_of_their_union():
    from evonorm._stats import merge_moments
    torch.manual_seed(0)
    parts = [torch.randn(k, 3, dtype=torch.float64) * (k + 1) + k for k in (1, 4, 7)]
    var_mean = [torch.var_mean(p, dim=0, correction=0) for p in parts]
    means = torch.stack([m for _, m in var_mean])
    m2 = torch.stack([v * len(p) for (v, _), p in zip(var_mean, parts)])
    counts = torch.tensor([[len(p)] for p in parts], dtype=torch.float64)
    mean, var = merge_moments(means, m2, counts, 0)
    want_var, want_mean = torch.var_mean(torch.cat(parts), dim=0, correction=0)
    torch.testing.assert_close(mean, want_mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(var, want_var, rtol=0, atol=1e-12)
