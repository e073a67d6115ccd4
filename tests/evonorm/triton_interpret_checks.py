"""Checks of the Triton EvoNorm kernels, run by test_triton_interpret.py in a process of its own.

``TRITON_INTERPRET=1`` must be set before triton is imported, so this file is not collected by the
main run (its name is not test_*.py); the parent sets the variable (CPU tensors, interpreter) or
``EVONORM_TEST_DEVICE=cuda`` (a real GPU). Each check runs the Triton op through autograd and
compares output, every gradient and the batch variance with the reference layer
(``impl="reference"``). Shapes are tiny and the tile is shrunk to 64 elements so that reductions
split across several programs.
"""
import os

import pytest
import torch

import evonorm
from evonorm.fused import _triton_common, b0_op, b0_triton, s0_op, s0_triton

DEVICE = os.environ.get("EVONORM_TEST_DEVICE", "cpu")
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float16: dict(rtol=1e-2, atol=1e-2),
       torch.bfloat16: dict(rtol=1e-2, atol=1e-2)}
FORMATS = {3: torch.contiguous_format, 4: torch.channels_last, 5: torch.channels_last_3d}
MOMENTUM = 0.1


@pytest.fixture(autouse=True)
def small_tiles(monkeypatch):
    monkeypatch.setattr(_triton_common, "_TILE", 64)


def rand(shape, dtype, seed, channels_last=False):
    g = torch.Generator().manual_seed(seed)
    t = (torch.randn(shape, generator=g, dtype=torch.float64) * 1.5 + 0.3).to(dtype).to(DEVICE)
    return t.to(memory_format=FORMATS[len(shape)]) if channels_last else t


def reference_layer(variant, shape, dtype, groups):
    cls = getattr(evonorm, f"EvoNorm{len(shape) - 2}d{variant}")
    kw = {"groups": groups} if variant[0] == "S" else {"momentum": MOMENTUM}
    layer = cls(shape[1], impl="reference", dtype=dtype, **kw).to(DEVICE)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in layer.named_parameters():
            t.copy_(torch.randn(shape[1], generator=g) * 0.8 + (name != "bias"))
        if variant == "B0":
            layer.running_var.copy_(torch.rand(shape[1], generator=g) * 3 + 0.25)
    return layer


def triton_call(layer, variant, x):
    """The layer's computation through the Triton op; (y, batch variance or None)."""
    if variant == "B0":
        running_var = None if layer.training else layer.running_var
        return b0_op.apply(b0_triton.evonorm_b0_triton, x, layer.weight, layer.bias, layer.v,
                           running_var, layer.eps)
    return s0_op.apply(s0_triton.evonorm_s0_triton, x, layer.weight, layer.bias, layer.v,
                       layer.groups, layer.eps, variant != "S2"), None


def gradients(y, inputs, grad_y):
    return torch.autograd.grad(y, inputs, grad_y)


BASE = (2, 12, 5, 7)  # 35 positions in tiles of 64 / 8: reductions split over programs
CASES = (
    [(v, t, torch.float32, cl, BASE) for v, t in [("S0", True), ("S1", True), ("S2", True),
                                                   ("B0", True), ("B0", False)]
     for cl in (False, True)]
    + [("S0", True, torch.float16, True, BASE), ("S2", True, torch.float16, False, BASE),
       ("B0", True, torch.float16, True, BASE), ("B0", False, torch.float16, False, BASE),
       ("S0", True, torch.float32, True, (1, 40, 3, 3)),  # N=1, C not a multiple of 32
       ("B0", True, torch.float32, False, (1, 40, 3, 3)),
       ("S0", True, torch.float32, False, (3, 6, 1, 1)),  # 1x1 spatial
       ("B0", True, torch.float32, True, (3, 6, 1, 1)),
       ("S1", True, torch.float32, False, (2, 6, 37)), ("B0", True, torch.float32, False, (2, 6, 37)),
       ("S0", True, torch.float32, True, (2, 5, 3, 4, 5)),  # channels_last_3d
       ("B0", False, torch.float32, True, (2, 5, 3, 4, 5))])


@pytest.mark.parametrize("variant, training, dtype, channels_last, shape", CASES)
def test_matches_reference(variant, training, dtype, channels_last, shape):
    groups = 3 if shape[1] % 3 == 0 else 5
    layer = reference_layer(variant, shape, dtype, groups).train(training)
    x = rand(shape, dtype, 1, channels_last).requires_grad_(True)
    grad_y = rand(shape, dtype, 2, channels_last)
    inputs = [x] + list(layer.parameters())
    y, batch_var = triton_call(layer, variant, x)
    got = [y] + list(gradients(y, inputs, grad_y))
    rv_before = getattr(layer, "running_var", None)
    rv_before = None if rv_before is None else rv_before.clone()
    want_y = layer(x)
    want = [want_y] + list(gradients(want_y, inputs, grad_y))
    tol = TOL[dtype]
    summed = x.numel() // x.shape[1]  # parameter gradients add this many terms, in another order
    for i, (a, b) in enumerate(zip(got, want)):
        atol = tol["atol"] * (summed if i >= 2 else 1)
        torch.testing.assert_close(a, b, rtol=tol["rtol"], atol=atol, msg=lambda m: f"#{i}: {m}")
    assert y.is_contiguous(memory_format=FORMATS[len(shape)] if channels_last else
                           torch.contiguous_format)
    if variant == "B0" and training:  # the layer's update from the returned batch variance
        updated = rv_before - (rv_before - batch_var) * MOMENTUM
        torch.testing.assert_close(updated, layer.running_var, **TOL[torch.float32])


def test_deterministic():
    layer = reference_layer("B0", (2, 6, 9, 9), torch.float32, 1)
    x = rand((2, 6, 9, 9), torch.float32, 1).requires_grad_(True)
    grad_y = rand((2, 6, 9, 9), torch.float32, 2)
    runs = [gradients(triton_call(layer, "B0", x)[0], [x, layer.weight, layer.v], grad_y)
            for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_opcheck():
    x = rand((2, 6, 3, 4), torch.float32, 1)
    w, b, v = (rand((6,), torch.float32, s) for s in (2, 3, 4))
    gy = rand((2, 6, 3, 4), torch.float32, 5)
    _, mean, rstd = s0_triton.evonorm_s0_triton(x, w, b, v, 3, 1e-5, True)
    _, *stats = b0_triton.evonorm_b0_triton(x, w, b, v, None, 1e-5)
    req = [t.clone().requires_grad_(True) for t in (x, w, b, v)]
    torch.library.opcheck(s0_triton.evonorm_s0_triton, (*req, 3, 1e-5, True))
    torch.library.opcheck(b0_triton.evonorm_b0_triton, (*req, None, 1e-5))
    torch.library.opcheck(torch.ops.evonorm.s0_triton_backward, (gy, x, w, v, mean, rstd, 3, True))
    torch.library.opcheck(torch.ops.evonorm.b0_triton_backward, (gy, x, w, v, *stats, True, 1e-5))
