"""Plug-in ops (``primitives.register_op``): YAML, formula, hashes, fingerprint, compiler and code generator
treat them as built-in ops, and the registry refuses what would make two ops one name."""
import importlib
import random
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from evaluator.fingerprint import fingerprint
from primitives import (LayerGraph, compile_graph, graph_from_yaml, graph_to_yaml, layer_source, mutate,
                        random_graph, register_op)
from primitives.ops import BUILTIN_OPS, OPS, get_op, unregister_op
from tests.conftest import REPO
from tests.primitives.test_codegen import load_layer, same_state


@pytest.fixture
def plugin():
    module = importlib.import_module("tests.plugin_ops")
    yield module
    module.forget()


def gated(op="softsign_t"):
    """x * smax_t(v1 * x, op(x)) / std_group(x): both plug-in ops, a batch-independent normalizer."""
    g = LayerGraph("plugged")
    gate = g.add("smax_t", g.add("mul", "v1", "x"), g.add(op, "x"))
    return LayerGraph.from_nodes(g.rows() + [("n4", "mul", ("x", gate)), ("n5", "std_group", ("x",)),
                                             ("n6", "div", ("n4", "n5"))], name="plugged")


def test_a_plugin_op_reads_and_writes_yaml_prints_and_hashes(plugin):
    g = gated()
    assert g.formula() == "x * smax_t(v1 * x, softsign_t(x)) / std_group(x)"
    back = graph_from_yaml(graph_to_yaml(g))
    assert back == g and back.structural_hash() == g.structural_hash() and back.formula() == g.formula()
    swapped = LayerGraph.from_nodes([(n, op, inputs[::-1] if op == "smax_t" else inputs) for n, op, inputs in g.rows()])
    assert swapped.structural_hash() == g.structural_hash()  # registered commutative
    assert gated("tanh").structural_hash() != g.structural_hash()
    assert get_op("SoftSign-T").name == "softsign_t" and get_op("softsign_t").plugin
    assert not get_op("tanh").plugin and "softsign_t" not in BUILTIN_OPS


def test_the_fingerprint_sees_a_plugin_op(plugin):
    g = gated()
    swapped = LayerGraph.from_nodes([(n, op, inputs[::-1] if op == "smax_t" else inputs) for n, op, inputs in g.rows()])
    assert fingerprint(g, groups=4) == fingerprint(swapped, groups=4)
    assert fingerprint(g, groups=4) != fingerprint(gated("tanh"), groups=4)


def test_the_compiled_layer_computes_the_plugin_function(plugin):
    g = gated()
    layer = compile_graph(g, 8, groups=4)
    x = torch.randn(3, 8, 4, 4, requires_grad=True)
    y = layer(x)
    v1 = layer.v1.view(1, -1, 1, 1)
    xg = x.view(3, 4, -1)
    std = torch.sqrt(xg.var(dim=-1, unbiased=False, keepdim=True) + 1e-5).expand_as(xg).reshape_as(x)
    soft = x / (1 + x.abs())
    a = v1 * x
    expected = x * (0.5 * (a + soft + torch.sqrt((a - soft) ** 2 + 1))) / std
    torch.testing.assert_close(y, expected * layer.weight.view(1, -1, 1, 1) + layer.bias.view(1, -1, 1, 1))
    gx, = torch.autograd.grad(y.sum(), x)
    ex, = torch.autograd.grad(expected.sum(), x)
    torch.testing.assert_close(gx, ex)


def test_random_graphs_and_mutation_draw_plugin_ops(plugin):
    rng = random.Random(0)
    ops = ("softsign_t", "smax_t", "mul", "std_group")
    graphs = [random_graph(rng, ops, 6, "structural") for _ in range(20)]
    graphs += [mutate(g, rng, ops, "structural", 12) for g in graphs]
    used = {op for g in graphs for _, op, _ in g.rows()}
    assert {"softsign_t", "smax_t"} <= used


def test_an_exported_layer_imports_the_plugin_and_matches_the_compiled_one(plugin, tmp_path):
    g = gated()
    source = layer_source(g, "Plugged")
    assert "from tests.plugin_ops import softsign as _op_softsign_t" in source
    assert "from tests.plugin_ops import smooth_max as _op_smax_t" in source
    assert "needs torch and the plug-in module(s) tests.plugin_ops" in source
    generated, compiled = load_layer(g, tmp_path, "Plugged")(8, groups=4), compile_graph(g, 8, groups=4)
    same_state(generated, compiled, seed=0)
    gen = torch.Generator().manual_seed(1)
    for train in (True, False):
        generated.train(train), compiled.train(train)
        x = torch.randn(3, 8, 4, 5, generator=gen)
        torch.testing.assert_close(generated(x), compiled(x), rtol=0, atol=0)


def test_an_exported_layer_runs_in_a_fresh_process(plugin, tmp_path):
    """The file imports the plug-in's functions itself: nothing needs registering before it is loaded."""
    g = gated()
    (tmp_path / "plugged.py").write_text(layer_source(g, "Plugged"))
    script = textwrap.dedent("""
        import sys, torch
        import plugged
        layer = plugged.Plugged(8, groups=4)
        with torch.no_grad():
            for p in layer.parameters():
                p.copy_(torch.linspace(0.5, 1.5, p.numel()))
        torch.save(layer(torch.load(sys.argv[1])), sys.argv[2])
    """)
    x = torch.randn(2, 8, 3, 3)
    torch.save(x, tmp_path / "x.pt")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                         cwd=tmp_path, env={"PYTHONPATH": f"{tmp_path}:{REPO}"}, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    compiled = compile_graph(g, 8, groups=4)
    with torch.no_grad():
        for p in compiled.parameters():
            p.copy_(torch.linspace(0.5, 1.5, p.numel()))
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), compiled(x), rtol=0, atol=0)


def test_a_code_expression_exports_with_torch_alone(tmp_path):
    register_op("softsign_f", 1, torch.nn.functional.softsign, "softsign_f({0})",
                code="torch.nn.functional.softsign({0})")
    try:
        g = LayerGraph.from_nodes([("n1", "softsign_f", ("x",)), ("n2", "mul", ("n1", "v1"))])
        source = layer_source(g, "Soft")
        assert "torch.nn.functional.softsign(x)" in source and "_op_" not in source
        assert "needs only torch" in source
        generated, compiled = load_layer(g, tmp_path, "Soft")(4), compile_graph(g, 4)
        same_state(generated, compiled, seed=0)
        x = torch.randn(2, 4, 3, 3)
        torch.testing.assert_close(generated(x), compiled(x), rtol=0, atol=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script's deprecation
            torch.testing.assert_close(torch.jit.script(generated)(x), compiled(x))
    finally:
        unregister_op("softsign_f")


def test_a_lambda_op_compiles_but_cannot_be_exported():
    register_op("halve_t", 1, lambda a: a * 0.5, "halve_t({0})")
    try:
        g = LayerGraph.from_nodes([("n1", "halve_t", ("x",))])
        x = torch.randn(2, 4, 3, 3)
        torch.testing.assert_close(compile_graph(g, 4)(x), x * 0.5)
        with pytest.raises(ValueError, match="op 'halve_t' cannot be exported: .*code="):
            layer_source(g)
    finally:
        unregister_op("halve_t")


def test_importing_a_plugin_module_twice_is_harmless(plugin):
    before = dict(OPS)
    importlib.reload(plugin)  # the module runs again: new function objects, the same code
    assert OPS.keys() == before.keys() and OPS["softsign_t"] is before["softsign_t"]
    assert register_op("softsign_t", 1, plugin.softsign, "softsign_t({0})") is before["softsign_t"]


@pytest.mark.parametrize("args, message", [
    (("tanh", 1, torch.tanh, "tanh({0})"), "'tanh' is a built-in op"),
    (("Std-Group", 1, torch.tanh, "s({0})"), "'std_group' is a built-in op"),
    (("1st", 1, torch.tanh, "f({0})"), "lowercase letters"),
    (("f_t", 0, torch.tanh, "f_t()"), "arity must be a positive integer"),
    (("f_t", 2, torch.add, "f_t({0})"), r"placeholders \{0\}, \{1\}"),
    (("f_t", 1, torch.tanh, "f_t({1})"), r"placeholders \{0\}"),
    (("f_t", 1, torch.tanh, 3), "formula must be a format string"),
    (("f_t", 1, torch.sum, "f_t({0})"), "must be element-wise"),
    (("f_t", 1, lambda a: a.unknown(), "f_t({0})"), "fn raised"),
])
def test_the_registry_refuses_bad_definitions(args, message):
    with pytest.raises(ValueError, match=message):
        register_op(*args)
    assert "f_t" not in OPS


def test_another_function_under_a_taken_name_is_refused(plugin):
    with pytest.raises(ValueError, match="'softsign_t' is registered already, as tests.plugin_ops.softsign"):
        register_op("softsign_t", 1, torch.tanh, "softsign_t({0})")
    with pytest.raises(ValueError, match="built-in op and cannot be unregistered"):
        unregister_op("tanh")


def test_a_plugin_op_has_a_cost(plugin):
    from primitives.cost import passes

    one = passes(gated())  # softsign_t(x) is full-size, and smax_t of two full-size values
    # the affine map's 11, then a read and a write forward, and a gradient kernel reading the gradient and x
    assert passes(LayerGraph.from_nodes([("n1", "softsign_t", ("x",))])) == 11 + 2 + 3
    assert one > passes(LayerGraph.from_nodes([("n1", "mul", ("v1", "x"))]))
