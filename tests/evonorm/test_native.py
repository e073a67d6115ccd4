"""The float32 C++ loops (evonorm.fused._native), channels_last and NCHW, against the reference layers.

The same parity checks as test_fused.py (output, input and parameter gradients, running variance,
rtol=1e-5), on the shapes that exercise the C++ in both walks: channels (channels_last) or planes
(NCHW) that fill no whole vector, spatial sizes that fill no whole row tile or plane tile, batch 1,
1d and 3d, every variant; plus where the loops must not serve, a library that cannot be built,
special values, and thread counts.
"""
import logging

import pytest
import torch

from evonorm import fused
from evonorm.fused import _compile, _native
from test_fused import FUSED, TOL, assert_same, inductor_only, make_pair, rand, step


@pytest.fixture
def native():
    assert _native._library() is not None, "cpu_loops.cpp did not build"


def served(monkeypatch):
    """Count the calls that the C++ takes."""
    calls = []
    original = _native._call
    monkeypatch.setattr(_native, "_call", lambda name, *a: calls.append(name) or original(name, *a))
    return calls


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [
    (2, 40, 7, 9),     # C = 40: two vectors and a partial one; 63 rows, one tile. NCHW: planes of 63
    (1, 20, 33, 31),   # batch 1, C = 20, 1023 rows in tiles of 409 and a partial one
    (3, 3, 4, 5),      # C = 3 < one vector
    (2, 256, 6, 6),    # C = 256: tiles of 32 rows
    (2, 12, 3, 5, 2),  # channels_last_3d
    (1, 2, 100, 90),   # NCHW planes of 9000 floats: a tile of 8192 and a partial one
], ids=["c40", "n1-tiles", "c3", "c256", "3d", "big-planes"])
@pytest.mark.parametrize("layout", ["channels_last", "nchw"])
@pytest.mark.parametrize("variant", FUSED)
def test_matches_reference(native, monkeypatch, variant, layout, shape, training):
    kw = {"groups": 4 if shape[1] % 4 == 0 else 1} if variant[0] == "S" else {}
    fast, ref = make_pair(variant, shape, **kw)
    calls = served(monkeypatch)
    y = assert_same(fast, ref, rand(shape, channels_last=layout == "channels_last"), training)[0]
    want = torch.contiguous_format if layout == "nchw" else {4: torch.channels_last, 5: torch.channels_last_3d}[y.dim()]
    assert len(calls) == 4 and y.is_contiguous(memory_format=want)


@pytest.mark.parametrize("variant", ["S0", "B0"])
def test_1d_inputs(native, monkeypatch, variant):
    """(N, C, L) is NCHW with planes of L floats."""
    fast, ref = make_pair(variant, (3, 8, 37), **({"groups": 4} if variant == "S0" else {}))
    calls = served(monkeypatch)
    assert_same(fast, ref, rand((3, 8, 37)))
    assert len(calls) == 4


@pytest.mark.parametrize("layout", ["channels_last", "nchw"])
@pytest.mark.parametrize("kernels", ["native", "inductor"])
@pytest.mark.parametrize("variant", ["S0", "B0"])
def test_large_gate_arguments_and_constant_input(native, monkeypatch, variant, kernels, layout):
    """v x far beyond exp's float32 range (overflow to inf, underflow to 0) and zero variance."""
    if kernels == "inductor":
        inductor_only(monkeypatch)
    shape = (2, 16, 5, 6)
    fast, ref = make_pair(variant, shape, **({"groups": 4} if variant == "S0" else {}))
    with torch.no_grad():
        fast.v.mul_(200), ref.v.mul_(200)
    cl = layout == "channels_last"
    assert_same(fast, ref, rand(shape, channels_last=cl))
    # Against float64: with zero variance, rstd = eps^-1/2 amplifies any rounding in x - mean by
    # eps^-3/2 in backward, the float32 reference's own rounding included.
    constant = torch.full(shape, 0.7).to(memory_format=torch.channels_last if cl else torch.contiguous_format)
    grad_y = rand(shape, seed=10)
    got = step(fast, constant, grad_y)
    want = step(ref.double(), constant.double(), grad_y.double())
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-6 * float(b.detach().abs().max()))


@pytest.mark.parametrize("layout", ["channels_last", "nchw"])
@pytest.mark.parametrize("variant", ["S0", "B0"])
def test_nan_and_inf_propagate_as_in_the_inductor_kernels(native, monkeypatch, variant, layout):
    shape = (3, 16, 4, 4)
    x = rand(shape, channels_last=layout == "channels_last")
    x[0, 3, 1, 2], x[1, 5, 0, 0], x[1, 6, 2, 2] = float("nan"), float("inf"), -float("inf")
    layer, _ = make_pair(variant, shape, **({"groups": 4} if variant == "S0" else {}))
    grad_y = rand(shape, seed=3, channels_last=layout == "channels_last")
    got = step(layer, x, grad_y)
    inductor_only(monkeypatch)
    want = step(layer, x, grad_y)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, equal_nan=True, **TOL[torch.float32])


@pytest.mark.parametrize("layout", ["channels_last", "nchw"])
@pytest.mark.parametrize("variant", ["S0", "B0"])
def test_a_huge_constant_channel_has_zero_variance(native, monkeypatch, variant, layout):
    """A channel at 2e19 in one sample: its square overflows float32, its variance is 0. The first
    row tile (plane tile) must not add a cross term of inf * 0 = NaN; the inductor kernels give the
    same outputs."""
    shape = (2, 8, 5, 5)
    x = rand(shape)
    x[0, 0] = 2e19
    x = x.to(memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
    layer, _ = make_pair(variant, shape, **({"groups": 4} if variant == "S0" else {}))
    calls = served(monkeypatch)
    with torch.no_grad():
        got = layer(x)
    assert calls == [f"{variant.lower()}_forward"]
    inductor_only(monkeypatch)
    with torch.no_grad():
        want = layer(x)
    assert not want.isnan().any()
    torch.testing.assert_close(got, want, **TOL[torch.float32])


@pytest.mark.parametrize("shape", [(2, 4, 0, 3), (0, 4, 3, 3), (2, 4, 0)])
def test_empty_inputs_are_not_served(native, shape):
    """An empty tensor's data pointer may be null: the loops never see one."""
    assert not _native.serves(rand(shape))
    assert not _native.serves(rand(shape, channels_last=len(shape) == 4))


@pytest.mark.parametrize("layout", ["channels_last", "nchw"])
@pytest.mark.parametrize("variant", ["S0", "B0"])
def test_thread_count_changes_no_bit(native, variant, layout):
    """Reductions run per sample (per plane in NCHW) and cross-sample sums serially, in the same
    order at any count."""
    fast, _ = make_pair(variant, (4, 24, 9, 9), **({"groups": 4} if variant == "S0" else {}))
    cl = layout == "channels_last"
    x, grad_y = rand((4, 24, 9, 9), channels_last=cl), rand((4, 24, 9, 9), seed=2, channels_last=cl)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = step(fast, x, grad_y)
        torch.set_num_threads(2)
        two = step(fast, x, grad_y)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, two))


@pytest.mark.parametrize("case", ["strided view", "float64", "bfloat16", "grad_y strides", "2d input"])
def test_serves_only_dense_float32(native, case):
    x = rand((2, 16, 64, 64), channels_last=True)
    if case == "strided view":
        x = rand((2, 16, 64, 128))[..., ::2]
    elif case in ("float64", "bfloat16"):
        x = x.to(getattr(torch, case))
    elif case == "2d input":
        x = rand((4, 16))
    others = [rand((2, 16, 64, 64))] if case == "grad_y strides" else []
    assert _native.serves(rand((2, 16, 64, 64), channels_last=True))
    assert _native.serves(rand((2, 16, 64, 64)), rand((2, 16, 64, 64), seed=1))
    assert not _native.serves(x, *others)


@pytest.mark.parametrize("variant", ["S0", "B0"])
def test_a_tensor_dense_in_both_layouts_is_served_both_ways(native, monkeypatch, variant):
    """(N, C, 1, 1) with channels_last strides (as after a global pool in a channels_last network)
    and an output gradient with NCHW strides: the same addresses, so backward takes the loops too.
    Against float64: with one value per instance, B0's sqrt(eps) instance std makes the float32
    reference's own rounding larger than the tolerance."""
    shape = (4, 16, 1, 1)
    fast, ref = make_pair(variant, shape, **({"groups": 4} if variant == "S0" else {}))
    x, grad_y = rand(shape).to(memory_format=torch.channels_last), rand(shape, seed=3)
    assert x.stride() != grad_y.stride()
    calls = served(monkeypatch)
    got = step(fast, x, grad_y)
    assert calls == [f"{variant.lower()}_forward", f"{variant.lower()}_backward"]
    for a, b in zip(got, step(ref.double(), x.double(), grad_y.double())):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-6 * float(b.detach().abs().max()))


def test_serves_inputs_too_small_for_inductor(native, monkeypatch):
    """The loops are built once for every shape, so they take the inputs under MIN_NUMEL as well,
    which would otherwise run the math eagerly, op by op."""
    x = rand((2, 40, 2, 2), channels_last=True)
    assert x.numel() < _compile.MIN_NUMEL and not _compile.compiling_enabled([x])
    fast, ref = make_pair("S0", x.shape, groups=4)
    calls = served(monkeypatch)
    assert_same(fast, ref, x, steps=1)
    assert len(calls) == 2


def test_set_cpu_compile_off_also_stops_the_loops():
    x = rand((2, 16, 64, 64), channels_last=True)
    previous = fused.set_cpu_compile(False)
    try:
        assert not _native.serves(x)
    finally:
        fused.set_cpu_compile(previous)


def test_build_failure_falls_back_to_inductor(native, monkeypatch, caplog):
    import torch._inductor.codecache as codecache

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(codecache.CppCodeCache, "load", broken)
    monkeypatch.setitem(_native._state, "library", None)
    monkeypatch.setitem(_native._state, "failed", False)
    fast, ref = make_pair("S0", (2, 16, 3, 3), groups=4)
    with caplog.at_level(logging.WARNING, logger=_native.__name__):
        assert_same(fast, ref, rand((2, 16, 3, 3), channels_last=True), steps=1)
    assert "no C++ compiler" in caplog.text and _native._state["failed"]
