"""The fused EvoNorm layers (impl="fused", the default) against the reference code (impl="reference").

Both share the parameters and running variance; every check compares the output, the input
gradient, every parameter gradient and the running variance, within rtol=1e-5, atol=1e-6 in float32
(1e-2 in fp16/bf16). Parameter gradients are sums over N * spatial terms that the two sides add in
different orders, so their atol grows with that count (as in test_layers.py); the rest is strict.
Small inputs run the compiled math eagerly (``_compile.MIN_NUMEL``), float32 ones excepted, which the
C++ loops serve in both layouts (test_native.py covers them; ``inductor_only`` turns them off); the
``compiled`` fixture lowers the same math with inductor, as large inputs of other dtypes do. The reference itself is checked against a float64 loop implementation
in test_layers.py; the Triton kernels are checked in test_triton_interpret.py.
"""
import copy
import logging

import pytest
import torch

import evonorm
from evonorm import fused
from evonorm.fused import _compile, _native, b0_cpu, s0_cpu

FUSED = ("B0", "S0", "S1", "S2")
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-10, atol=1e-12),
       torch.float16: dict(rtol=1e-2, atol=1e-2), torch.bfloat16: dict(rtol=1e-2, atol=1e-2)}
FORMATS = {4: torch.channels_last, 5: torch.channels_last_3d}


def make_pair(variant, shape, dtype=torch.float32, seed=0, **kwargs):
    """(fused, reference) layers with equal random parameters and running variance."""
    c = shape[1]
    cls = getattr(evonorm, f"EvoNorm{len(shape) - 2}d{variant}")
    fast = cls(c, dtype=dtype, **kwargs)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in fast.named_parameters():
            t.copy_(torch.randn(c, generator=g) * 0.8 + (name != "bias"))
        if getattr(fast, "running_var", None) is not None:
            fast.running_var.copy_(torch.rand(c, generator=g) * 3 + 0.25)
    ref = copy.deepcopy(fast)
    ref.impl = "reference"
    return fast, ref


def rand(shape, dtype=torch.float32, seed=1, channels_last=False):
    g = torch.Generator().manual_seed(seed)
    t = (torch.randn(shape, generator=g, dtype=torch.float64) * 1.5 + 0.3).to(dtype)
    return t.to(memory_format=FORMATS[len(shape)]) if channels_last else t


def step(layer, x, grad_y):
    x = x.detach().clone().requires_grad_(True)
    layer.zero_grad(set_to_none=True)
    y = layer(x)
    y.backward(grad_y)
    return [y, x.grad] + [p.grad for p in layer.parameters()]


def assert_same(fast, ref, x, training=True, steps=2, tol=None):
    """Fused and reference agree on everything over ``steps`` steps (running_var carries over)."""
    tol = tol or TOL[x.dtype]
    fast.train(training), ref.train(training)
    for i in range(steps):
        grad_y = rand(x.shape, x.dtype, seed=10 + i)
        got, want = step(fast, x * (i + 1), grad_y), step(ref, x * (i + 1), grad_y)
        names = ["output", "x.grad"] + [f"{n}.grad" for n, _ in ref.named_parameters()]
        for name, a, b in zip(names, got, want):
            summed = x.numel() // x.shape[1] if name not in ("output", "x.grad") else 1
            torch.testing.assert_close(a, b, rtol=tol["rtol"], atol=tol["atol"] * summed,
                                       msg=lambda m: f"{name}: {m}")
        if getattr(ref, "running_var", None) is not None:
            torch.testing.assert_close(fast.running_var, ref.running_var, **tol)
    return got


def inductor_only(monkeypatch):
    """The inductor kernels serve float32 too, as where cpu_loops.cpp cannot build, and the tests'
    small inputs as well."""
    monkeypatch.setitem(_native._state, "library", None)
    monkeypatch.setitem(_native._state, "failed", True)
    monkeypatch.setattr(_compile, "MIN_NUMEL", 0)


@pytest.fixture
def compiled(monkeypatch):
    """Inductor-compile the CPU math even for the tests' small inputs."""
    monkeypatch.setattr(_compile, "MIN_NUMEL", 0)


# ---------------------------------------------------------------- parity with the reference
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(3, 8, 7), (3, 8, 5, 4), (2, 8, 3, 2, 3)], ids=["1d", "2d", "3d"])
@pytest.mark.parametrize("variant", FUSED)
def test_matches_reference(variant, shape, training):
    kw = {"groups": 4} if variant[0] == "S" else {}
    fast, ref = make_pair(variant, shape, **kw)
    assert_same(fast, ref, rand(shape), training)


@pytest.mark.parametrize("shape", [(1, 8, 4, 4), (4, 8, 1, 1), (1, 6, 1, 1), (2, 24, 3, 5),
                                   (3, 40, 2, 3), (2, 6, 1, 7)])
@pytest.mark.parametrize("variant", FUSED)
def test_odd_shapes(variant, shape):
    """Batch 1, 1x1 spatial, C not a multiple of 32 (default groups=32 falls back)."""
    fast, ref = make_pair(variant, shape)
    assert_same(fast, ref, rand(shape))


@pytest.mark.parametrize("ndim", [4, 5])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("variant", FUSED)
def test_channels_last(variant, training, ndim):
    shape = (2, 12, 3, 5, 2)[:ndim]
    fast, ref = make_pair(variant, shape, **({"groups": 3} if variant[0] == "S" else {}))
    x = rand(shape, channels_last=True)
    y = assert_same(fast, ref, x, training)[0]
    assert y.is_contiguous(memory_format=FORMATS[ndim])


def test_mixed_layouts_and_broadcast_gradient():
    """grad_y in another layout, or expanded from a scalar (y.sum().backward())."""
    fast, ref = make_pair("S0", (2, 8, 3, 4), groups=2)
    x = rand((2, 8, 3, 4), channels_last=True)
    assert_same(fast, ref, x)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    fast(xs[0]).sum().backward(), ref(xs[1]).sum().backward()
    torch.testing.assert_close(xs[0].grad, xs[1].grad, **TOL[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("variant", FUSED)
def test_dtypes(variant, dtype):
    """Parameters and input in the same low (or double) precision; statistics stay >= float32."""
    fast, ref = make_pair(variant, (2, 8, 4, 4), dtype, **({"groups": 4} if variant[0] == "S" else {}))
    got = assert_same(fast, ref, rand((2, 8, 4, 4), dtype))
    assert all(t.dtype == dtype for t in got)
    if variant == "B0":
        assert fast.running_var.dtype == torch.promote_types(dtype, torch.float32)


def test_eval_ignores_the_batch_and_keeps_running_var():
    fast, ref = make_pair("B0", (3, 5, 2, 3))
    fast.eval()
    before = fast.running_var.clone()
    x = rand((3, 5, 2, 3))
    torch.testing.assert_close(fast(x)[1:2], fast(x[1:2]), **TOL[torch.float32])
    assert torch.equal(fast.running_var, before)


def test_deterministic():
    fast, _ = make_pair("B0", (4, 16, 5, 5))
    x, grad_y = rand((4, 16, 5, 5)), rand((4, 16, 5, 5), seed=3)
    first, second = step(fast, x, grad_y), step(fast, x, grad_y)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


# ---------------------------------------------------------------- inductor-compiled kernels
@pytest.mark.parametrize("variant, shape, channels_last, training", [
    ("S0", (1, 40, 4, 5), True, True),  # N=1, C=40 (groups fall back to 20), channels_last
    ("S2", (2, 16, 3, 3), False, True),
    ("B0", (3, 12, 1, 1), False, True),  # 1x1 spatial
    ("B0", (2, 24, 3, 4), True, False),
    ("S0", (3, 16, 3, 3), False, True),  # NCHW with v: grad_x's first part comes from the sums' pass
    ("S0", (2, 64, 12, 12), True, True),  # channels_last summed in _rows.chunk tiles: 2 of 72 rows
    ("B0", (2, 256, 6, 6), True, True),  # 2 tiles of 18 rows
])
def test_compiled_kernels_match_reference(compiled, monkeypatch, variant, shape, channels_last,
                                          training):
    inductor_only(monkeypatch)  # test_native.py covers the C++
    fast, ref = make_pair(variant, shape)
    before = len(_compile._kernels)
    assert_same(fast, ref, rand(shape, channels_last=channels_last), training)
    assert len(_compile._kernels) == before + 4, "forward and backward: two kernels each"


def test_inductor_failure_falls_back_to_eager(compiled, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    inductor_only(monkeypatch)
    monkeypatch.setattr(torch._inductor, "compile", broken)
    monkeypatch.setitem(_compile._state, "failed", False)
    fast, ref = make_pair("S0", (2, 16, 3, 3), groups=4)
    with caplog.at_level(logging.WARNING, logger=_compile.__name__):
        assert_same(fast, ref, rand((2, 16, 3, 3)), steps=1)
    assert "no C++ compiler" in caplog.text and _compile._state["failed"]


# ---------------------------------------------------------------- memory
def saved_bytes(layer, x):
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x.clone().requires_grad_(True))
    return sum(seen.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("variant", FUSED)
def test_saves_only_the_input_and_statistics(variant, training, dtype):
    """<= 1.0x the input plus O(N*C) float32 statistics and O(C) parameters."""
    n, c = 4, 32
    fast, ref = make_pair(variant, (n, c, 8, 8), dtype)
    x = rand((n, c, 8, 8), dtype)
    budget = x.numel() * x.element_size() + 8 * (n * c + c) * 4
    assert saved_bytes(fast.train(training), x) <= budget
    assert saved_bytes(ref.train(training), x) > budget  # the counter sees what the reference keeps


# ---------------------------------------------------------------- torch.compile and opcheck
@pytest.mark.parametrize("variant", ["S0", "B0"])
def test_torch_compile_fullgraph_aot_eager(variant):
    fast, ref = make_pair(variant, (2, 12, 3, 4), **({"groups": 4} if variant == "S0" else {}))
    x = rand((2, 12, 3, 4), channels_last=True)
    graphs = []

    def backend(gm, inputs):
        graphs.append(gm.code)
        return torch._dynamo.backends.debugging.aot_eager(gm, inputs)

    torch._dynamo.reset()
    compiled_layer = torch.compile(fast, fullgraph=True, backend=backend)
    assert_same(compiled_layer, ref, x)
    fast.eval(), ref.eval()
    torch.testing.assert_close(compiled_layer(x), ref(x), **TOL[torch.float32])
    assert all(f"evonorm.{variant.lower()}_cpu" in code for code in graphs)


def test_torch_compile_inductor_smoke():
    """The default compiler around both fused ops and the in-place running-variance update."""
    torch._dynamo.reset()
    model = torch.nn.Sequential(evonorm.EvoNorm2dB0(8), evonorm.EvoNorm2dS0(8, groups=2))
    ref = copy.deepcopy(model)
    for m in ref:
        m.impl = "reference"
    x = rand((2, 8, 4, 4))
    assert_same(torch.compile(model, fullgraph=True), ref, x, steps=1)


def opcheck_cases():
    x, w, b, v = rand((2, 6, 3, 4)), rand((6,), seed=2), rand((6,), seed=3), rand((6,), seed=4)
    rv = rand((6,), seed=5).abs() + 0.5
    gy = rand((2, 6, 3, 4), seed=6)
    y, mean, rstd = s0_cpu.evonorm_s0_cpu(x, w, b, v, 3, 1e-5, True)
    _, *stats = b0_cpu.evonorm_b0_cpu(x, w, b, v, None, 1e-5)
    req = [t.requires_grad_(True) for t in (x.clone(), w.clone(), b.clone(), v.clone())]
    return [
        (s0_cpu.evonorm_s0_cpu, (*req, 3, 1e-5, True)),
        (s0_cpu.evonorm_s0_cpu, (req[0], req[1], req[2], None, 3, 1e-5, False)),
        (b0_cpu.evonorm_b0_cpu, (*req, None, 1e-5)),
        (b0_cpu.evonorm_b0_cpu, (*req, rv, 1e-5)),
        (torch.ops.evonorm.s0_cpu_backward, (gy, x, w, v, mean, rstd, 3, True)),
        (torch.ops.evonorm.b0_cpu_backward, (gy, x, w, v, *stats, True, 1e-5)),
    ]


@pytest.mark.parametrize("case", range(6))
def test_opcheck(case):
    op, args = opcheck_cases()[case]
    torch.library.opcheck(op, args)


# ---------------------------------------------------------------- where the reference serves
def test_double_backward_needs_the_reference():
    fast, ref = make_pair("S0", (2, 8, 3, 3), groups=4)
    x = rand((2, 8, 3, 3)).requires_grad_(True)
    (gx,) = torch.autograd.grad(fast(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="impl='reference'"):
        gx.sum().backward()
    (gx,) = torch.autograd.grad(ref(x).square().sum(), x, create_graph=True)
    gx.sum().backward()  # the reference is twice differentiable


def test_functorch_transforms_take_the_reference_path():
    fast, ref = make_pair("B0", (3, 4, 2, 2))
    x = rand((3, 4, 2, 2))
    fast.eval(), ref.eval()  # vmap over samples: eval uses no batch statistic

    def per_sample(layer):
        return torch.func.vmap(lambda s: layer(s.unsqueeze(0)).squeeze(0))(x)

    torch.testing.assert_close(per_sample(fast), per_sample(ref), **TOL[torch.float32])
    grad = torch.func.grad(lambda t: fast(t).square().sum())(x)
    torch.testing.assert_close(grad, torch.func.grad(lambda t: ref(t).square().sum())(x))


def test_variants_and_subclasses_without_fused_kernels(monkeypatch):
    calls = []
    monkeypatch.setattr(fused, "evonorm_b0", lambda *a: calls.append(a))
    x = rand((2, 8, 3, 3))
    evonorm.EvoNorm2dB1(8)(x), evonorm.EvoNorm2dB0(8, apply_act=False)(x)

    class Custom(evonorm.EvoNorm2dB0):
        def _instance_term(self, x):
            return super()._instance_term(x) * 2

    Custom(8)(x)
    assert not calls, "no fused kernel for B1, apply_act=False or changed math"
    with pytest.raises(TypeError):
        evonorm.EvoNorm2dB0(8)(x)  # the stub above is reached by the plain layer


def test_impl_argument():
    with pytest.raises(ValueError, match=r"impl must be one of \('fused', 'reference'\), got 'fast'"):
        evonorm.EvoNorm2dS0(8, impl="fast")
    assert "impl=reference" in repr(evonorm.EvoNorm2dB0(8, impl="reference"))
    assert fused.backend_for(torch.zeros(1)) == "cpu"
