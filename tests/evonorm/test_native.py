"""The channels_last float32 C++ loops (evonorm.fused._native) against the reference layers.

The same parity checks as test_fused.py (output, input and parameter gradients, running variance,
rtol=1e-5), on the shapes that exercise the C++: channels that fill no whole vector, spatial sizes
that fill no whole row tile, batch 1, 3d, every variant; plus where the loops must not serve, a
library that cannot be built, special values, and thread counts.
"""
import logging

import pytest
import torch

from evonorm import fused
from evonorm.fused import _compile, _native
from test_fused import FUSED, TOL, assert_same, inductor_only, make_pair, rand, step


@pytest.fixture
def native():
    assert _native._library() is not None, "channels_last.cpp did not build"


def served(monkeypatch):
    """Count the calls that the C++ takes."""
    calls = []
    original = _native._call
    monkeypatch.setattr(_native, "_call", lambda name, *a: calls.append(name) or original(name, *a))
    return calls


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [
    (2, 40, 7, 9),     # C = 40: two vectors and a partial one; 63 rows, one tile
    (1, 20, 33, 31),   # batch 1, C = 20, 1023 rows in tiles of 409 and a partial one
    (3, 3, 4, 5),      # C = 3 < one vector
    (2, 256, 6, 6),    # C = 256: tiles of 32 rows
    (2, 12, 3, 5, 2),  # channels_last_3d
], ids=["c40", "n1-tiles", "c3", "c256", "3d"])
@pytest.mark.parametrize("variant", FUSED)
def test_matches_reference(native, monkeypatch, variant, shape, training):
    kw = {"groups": 4 if shape[1] % 4 == 0 else 1} if variant[0] == "S" else {}
    fast, ref = make_pair(variant, shape, **kw)
    calls = served(monkeypatch)
    y = assert_same(fast, ref, rand(shape, channels_last=True), training)[0]
    assert len(calls) == 4 and y.is_contiguous(memory_format=y.dim() == 4 and torch.channels_last
                                                or torch.channels_last_3d)


@pytest.mark.parametrize("kernels", ["native", "inductor"])
@pytest.mark.parametrize("variant", ["S0", "B0"])
def test_large_gate_arguments_and_constant_input(native, monkeypatch, variant, kernels):
    """v x far beyond exp's float32 range (overflow to inf, underflow to 0) and zero variance."""
    if kernels == "inductor":
        inductor_only(monkeypatch)
    shape = (2, 16, 5, 6)
    fast, ref = make_pair(variant, shape, **({"groups": 4} if variant == "S0" else {}))
    with torch.no_grad():
        fast.v.mul_(200), ref.v.mul_(200)
    assert_same(fast, ref, rand(shape, channels_last=True))
    # Against float64: with zero variance, rstd = eps^-1/2 amplifies any rounding in x - mean by
    # eps^-3/2 in backward, the float32 reference's own rounding included.
    constant = torch.full(shape, 0.7).to(memory_format=torch.channels_last)
    grad_y = rand(shape, seed=10)
    got = step(fast, constant, grad_y)
    want = step(ref.double(), constant.double(), grad_y.double())
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-6 * float(b.detach().abs().max()))


@pytest.mark.parametrize("variant", ["S0", "B0"])
def test_nan_and_inf_propagate_as_in_the_inductor_kernels(native, monkeypatch, variant):
    shape = (3, 16, 4, 4)
    x = rand(shape, channels_last=True)
    x[0, 3, 1, 2], x[1, 5, 0, 0], x[1, 6, 2, 2] = float("nan"), float("inf"), -float("inf")
    layer, _ = make_pair(variant, shape, **({"groups": 4} if variant == "S0" else {}))
    grad_y = rand(shape, seed=3, channels_last=True)
    got = step(layer, x, grad_y)
    inductor_only(monkeypatch)
    want = step(layer, x, grad_y)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, equal_nan=True, **TOL[torch.float32])


def test_thread_count_changes_no_bit(native):
    """Reductions run per sample and cross-sample sums serially, in the same order at any count."""
    fast, _ = make_pair("B0", (4, 24, 9, 9))
    x, grad_y = rand((4, 24, 9, 9), channels_last=True), rand((4, 24, 9, 9), seed=2)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = step(fast, x, grad_y)
        torch.set_num_threads(2)
        two = step(fast, x, grad_y)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, two))


@pytest.mark.parametrize("case", ["nchw", "float64", "bfloat16", "grad_y strides"])
def test_serves_only_channels_last_float32(monkeypatch, case):
    x = rand((2, 16, 64, 64), channels_last=True)
    if case == "nchw":
        x = x.contiguous()
    elif case in ("float64", "bfloat16"):
        x = x.to(getattr(torch, case))
    others = [rand((2, 16, 64, 64))] if case == "grad_y strides" else []
    assert _native.serves(rand((2, 16, 64, 64), channels_last=True))
    assert not _native.serves(x, *others)


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
