import copy
import pickle
import random

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from primitives import PAPER_OPS, LayerGraph, compile_graph, random_graph
from primitives import ops as ops_module
from primitives.compile import output_scale

from .reference import run_graph

S0 = [("n1", "mul", ["v1", "x"]), ("n2", "sigmoid", ["n1"]), ("n3", "mul", ["x", "n2"]),
      ("n4", "std_group", ["x"]), ("n5", "div", ["n3", "n4"])]
B0 = [("n1", "std_batch", ["x"]), ("n2", "mul", ["v1", "x"]), ("n3", "std_instance", ["x"]),
      ("n4", "add", ["n2", "n3"]), ("n5", "max", ["n1", "n4"]), ("n6", "div", ["x", "n5"])]


def randomise(layer: torch.nn.Module, seed: int = 0) -> dict:
    """Draw every parameter and buffer at random (initial values hide bugs); return them as float64 numpy."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + 1.0)
        for b in layer.buffers():
            b.copy_(torch.rand(b.shape, generator=gen) + 0.5)
    params = {k: v.detach().double().numpy() for k, v in layer.named_parameters()}
    c = layer.num_features
    params.setdefault("v0", np.zeros(c))
    params.setdefault("v1", np.ones(c))
    return params


def graph_of(rows):
    return LayerGraph.from_nodes(rows)


@pytest.mark.parametrize("shape", [(4, 12, 5, 5), (3, 12, 7), (2, 12, 3, 4, 2), (5, 12), (1, 12, 1, 1)])
@pytest.mark.parametrize("rows", [S0, B0], ids=["s0", "b0"])
def test_matches_numpy_reference_in_float64(rows, shape):
    graph = graph_of(rows)
    layer = compile_graph(graph, 12, groups=4).double()
    params = randomise(layer)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = run_graph(graph, x.numpy(), params, groups=4)
    torch.testing.assert_close(layer(x), torch.from_numpy(np.ascontiguousarray(expected)), rtol=1e-10, atol=1e-12)


@given(seed=st.integers(0, 10_000), ops=st.sampled_from([PAPER_OPS, ("add", "mul", "div", "std_group", "rms_batch",
                                                                     "mean_layer", "log", "sqrt", "max")]))
def test_random_graphs_match_numpy_reference(seed, ops):
    graph = random_graph(random.Random(seed), ops, num_nodes=8)
    layer = compile_graph(graph, 6, groups=4).double().train()
    params = randomise(layer, seed)
    x = torch.randn(3, 6, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    out = layer(x)
    assert out.shape == x.shape
    expected = torch.from_numpy(np.ascontiguousarray(run_graph(graph, x.numpy(), params, groups=4)))
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-10, equal_nan=True)


def test_running_moments_follow_the_official_update_and_serve_eval_mode():
    graph = graph_of(B0 + [("n7", "rms_batch", ["n6"]), ("n8", "mul", ["n6", "n7"])])
    layer = compile_graph(graph, 8, momentum=0.1).double()
    assert sorted(n for n, _ in layer.named_buffers()) == ["running_msq", "running_var"]
    params = randomise(layer)
    var, msq = layer.running_var.clone(), layer.running_msq.clone()
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        x = torch.randn(4, 8, 3, 3, dtype=torch.float64, generator=gen) * 2 + 1
        n6 = torch.from_numpy(np.ascontiguousarray(run_graph(graph_of(B0), x.numpy(), {**params, "weight": np.ones(8),
                                                                                  "bias": np.zeros(8)})))
        var = 0.9 * var + 0.1 * x.var(dim=(0, 2, 3), unbiased=False)
        msq = 0.9 * msq + 0.1 * n6.square().mean(dim=(0, 2, 3))
        layer(x)
    torch.testing.assert_close(layer.running_var, var, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.running_msq, msq, rtol=1e-12, atol=1e-12)
    layer.eval()
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64, generator=gen)
    expected = run_graph(graph, x.numpy(), params, running={"n1": var.numpy(), "n7": msq.numpy()})
    before = layer.running_var.clone()
    torch.testing.assert_close(layer(x), torch.from_numpy(np.ascontiguousarray(expected)), rtol=1e-10, atol=1e-12)
    assert torch.equal(layer.running_var, before), "eval mode must not update running statistics"


def test_buffers_and_parameters_exist_only_where_the_output_needs_them():
    graph = LayerGraph()
    dead = graph.add("std_batch", "v0")
    graph.add("add", dead, "x")
    graph.add("mul", "x", "v1")  # the output ignores the batch aggregate and v0
    layer = compile_graph(graph, 4)
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias", "v1"]
    assert list(layer.named_buffers()) == []
    affine = compile_graph(graph_of(B0), 4, apply_act=False)
    assert [n for n, _ in affine.named_parameters()] == ["weight", "bias"] and list(affine.buffers()) == []


def test_affine_only_form_is_affine():
    layer = compile_graph(graph_of(S0), 6, apply_act=False).double()
    params = randomise(layer)
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(layer(x), x * torch.from_numpy(params["weight"]).view(1, -1, 1, 1)
                               + torch.from_numpy(params["bias"]).view(1, -1, 1, 1))


def test_each_shared_subexpression_runs_once(monkeypatch):
    calls = []
    sigmoid = ops_module.OPS["sigmoid"]
    monkeypatch.setitem(ops_module.OPS, "sigmoid", ops_module.Op(
        "sigmoid", 1, False, sigmoid.formula, lambda a: calls.append(1) or torch.sigmoid(a), sigmoid.code))
    graph = graph_of([("a", "sigmoid", ["x"]), ("b", "sigmoid", ["x"]), ("c", "mul", ["a", "b"]), ("d", "add", ["c", "a"])])
    compile_graph(graph, 3)(torch.randn(2, 3, 2, 2))
    assert len(calls) == 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rows", [S0, B0], ids=["s0", "b0"])
def test_half_precision_inputs_keep_their_dtype_and_track_float32(rows, dtype):
    layer = compile_graph(graph_of(rows), 32)
    randomise(layer)
    x = torch.randn(4, 32, 6, 6, generator=torch.Generator().manual_seed(0))
    expected = copy.deepcopy(layer)(x)
    out = layer(x.to(dtype))
    assert out.dtype == dtype
    # element-wise ops run in the input dtype: a few roundings of 2^-8 (bf16) or 2^-11 (fp16)
    tol = 3e-2 if dtype == torch.bfloat16 else 5e-3
    torch.testing.assert_close(out.float(), expected, rtol=tol, atol=tol)
    assert layer.running_var.dtype == torch.float32 if rows is B0 else True


@pytest.mark.parametrize("rows", [S0, B0], ids=["s0", "b0"])
def test_channels_last_and_constant_inputs(rows):
    layer = compile_graph(graph_of(rows), 16)
    randomise(layer)
    x = torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(layer(x.to(memory_format=torch.channels_last)), copy.deepcopy(layer)(x))
    assert torch.isfinite(layer(torch.full((1, 16, 1, 1), 3.0))).all()
    assert torch.isfinite(layer(torch.zeros(2, 16, 4, 4))).all()


def test_gradcheck_float64():
    for rows in (S0, B0):
        layer = compile_graph(graph_of(rows), 4, groups=2).double()
        randomise(layer)
        x = torch.randn(3, 4, 2, 3, dtype=torch.float64, requires_grad=True)
        params = tuple(layer.parameters())

        def fn(x, *p):
            return torch.func.functional_call(layer, dict(zip([n for n, _ in layer.named_parameters()], p)), (x,))

        assert torch.autograd.gradcheck(fn, (x,) + params)


def test_pickle_deepcopy_and_repr():
    layer = compile_graph(graph_of(B0), 8)
    randomise(layer)
    x = torch.randn(2, 8, 3, 3)
    for clone in (pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
        torch.testing.assert_close(clone.eval()(x), copy.deepcopy(layer).eval()(x))
    assert "max(std_batch(x), v1 * x + std_instance(x))" in repr(layer)


@pytest.mark.parametrize("shape,match", [((8,), "at least 2 dims, got 1D"), ((2, 5, 3, 3), "expected 8 channels")])
def test_bad_inputs_raise_clear_errors(shape, match):
    with pytest.raises(ValueError, match=match):
        compile_graph(graph_of(S0), 8)(torch.randn(shape))


def test_group_fallback_uses_the_largest_divisor():
    layer = compile_graph(graph_of(S0), 40, groups=32)
    assert layer.groups == 20
    params = randomise(layer.double())
    x = torch.randn(2, 40, 3, 3, dtype=torch.float64)
    expected = run_graph(graph_of(S0), x.numpy(), params, groups=20)
    torch.testing.assert_close(layer(x), torch.from_numpy(np.ascontiguousarray(expected)))


def _graph(*rows):
    return LayerGraph.from_nodes([(f"n{i}", op, tuple(inputs)) for i, (op, *inputs) in enumerate(rows, 1)])


@pytest.mark.parametrize("rows, expected", [
    ((("mul", "x", "v1"),), ("x", "v1", "mul")),
    ((("std_group", "x"), ("mul", "n1", "x")), ("x", "n1", "mul")),
    ((("std_batch", "x"), ("div", "x", "n1")), ("x", "n1", "div")),
    ((("sigmoid", "x"), ("std_layer", "x"), ("div", "n1", "n2")), ("n1", "n2", "div")),
    ((("std_group", "x"), ("mul", "v1", "n1")), None),   # both reduced: the output is not full-size
    ((("std_group", "x"), ("div", "n1", "x")), None),    # a full-size denominator
    ((("mul", "x", "x"),), None),
    ((("std_group", "x"), ("add", "x", "n1")), None),
])
def test_output_scale_folds_exactly_a_full_body_times_or_over_a_reduced_scale(rows, expected):
    graph = _graph(*rows).pruned()
    assert output_scale(graph) == expected
    assert {"x"} <= graph.full_size and "v1" not in graph.full_size


@pytest.mark.parametrize("rows", [(("mul", "x", "v1"),), (("std_group", "x"), ("div", "x", "n1")),
                                  (("sigmoid", "x"), ("std_instance", "x"), ("div", "n1", "n2"))])
def test_folded_layer_matches_the_unfolded_formula(rows):
    """The fold changes rounding only; float16 does not fold, so its range is the plain formula's."""
    graph = _graph(*rows)
    layer = compile_graph(graph, 8, groups=4).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.uniform_(0.5, 2.0)
    x = torch.randn(4, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    unfolded = compile_graph(graph, 8, groups=4).double()
    unfolded.load_state_dict(layer.state_dict())
    unfolded._fold = None
    assert layer._fold is not None
    y, y_ref = layer(x), unfolded(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(y.square().sum(), [x, *layer.parameters()])
    grads_ref = torch.autograd.grad(y_ref.square().sum(), [x, *unfolded.parameters()])
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-10)
    # float16: a tiny divisor and large weight, where weight / scale alone would overflow
    half = compile_graph(_graph(("div", "x", "v0")), 8).half()
    with torch.no_grad():
        half.v0.fill_(1e-4), half.weight.fill_(10.0)
    x16 = torch.full((2, 8, 3, 3), 1e-2, dtype=torch.float16)
    assert torch.isfinite(half(x16)).all()


@pytest.mark.parametrize("rows", [S0, B0], ids=["s0", "b0"])
@pytest.mark.parametrize("groups", [4, 16])  # 4 channels per group, and one (group statistics become instance ones)
def test_channels_last_training_step_matches_nchw_in_float64(rows, groups):
    """The proxies train channels_last: outputs, input and parameter gradients, and running moments must be
    those of the NCHW path (to rounding), and the output must stay channels_last for the next convolution."""
    layer = compile_graph(graph_of(rows), 16, groups=groups).double()
    randomise(layer)
    other = copy.deepcopy(layer)
    x = torch.randn(3, 16, 4, 5, dtype=torch.float64)
    cl = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    plain = x.clone().requires_grad_(True)
    out, expected = layer(cl), other(plain)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected)
    g = torch.randn(out.shape, dtype=torch.float64)
    out.backward(g)
    expected.backward(g)
    torch.testing.assert_close(cl.grad, plain.grad)
    for (name, p), q in zip(layer.named_parameters(), other.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    for a, b in zip(layer.buffers(), other.buffers()):
        torch.testing.assert_close(a, b)
