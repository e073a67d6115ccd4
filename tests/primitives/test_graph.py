import random

import networkx as nx
import pytest
import torch
from hypothesis import given, strategies as st

from primitives import (PAPER_OPS, S_SERIES_OPS, GraphError, GraphFormatError, LayerGraph, compile_graph,
                        graph_from_yaml, graph_to_yaml, load_graph, mutate, random_graph, save_graph)
from primitives.ops import signed_log, signed_sqrt

S0 = [("n1", "mul", ["v1", "x"]), ("n2", "sigmoid", ["n1"]), ("n3", "mul", ["x", "n2"]),
      ("n4", "std_group", ["x"]), ("n5", "div", ["n3", "n4"])]


def test_formula_reads_like_the_paper():
    assert LayerGraph.from_nodes(S0).formula() == "x * sigmoid(v1 * x) / std_group(x)"
    g = LayerGraph.from_nodes([("a", "add", ["x", "v0"]), ("b", "add", ["v1", "a"]), ("c", "mul", ["b", "x"]),
                               ("d", "neg", ["c"]), ("e", "div", ["x", "c"]), ("f", "max", ["d", "e"])])
    assert g.formula() == "max(-((v1 + x + v0) * x), x / ((v1 + x + v0) * x))"


def test_structural_hash_ignores_numbering_argument_order_dead_nodes_and_repeats():
    base = LayerGraph.from_nodes(S0)
    renamed = LayerGraph.from_nodes([("g", "std_group", ["x"]), ("dead", "exp", ["v0"]), ("a", "mul", ["x", "v1"]),
                                     ("s", "sigmoid", ["a"]), ("m", "mul", ["s", "x"]), ("o", "div", ["m", "g"])])
    repeated = LayerGraph.from_nodes([("a", "mul", ["v1", "x"]), ("b", "mul", ["x", "v1"]), ("s", "sigmoid", ["b"]),
                                      ("m", "mul", ["x", "s"]), ("g", "std_group", ["x"]), ("o", "div", ["m", "g"])])
    assert base.structural_hash() == renamed.structural_hash() == repeated.structural_hash()
    assert len(repeated.pruned()) == 5 and len(renamed.pruned()) == 5
    swapped = LayerGraph.from_nodes(S0[:4] + [("n5", "div", ["n4", "n3"])])  # div is not commutative
    assert swapped.structural_hash() != base.structural_hash()


def test_batch_statistics_are_detected_on_the_pruned_graph():
    assert not LayerGraph.from_nodes(S0).uses_batch_stats
    assert LayerGraph.from_nodes([("a", "std_batch", ["x"]), ("b", "div", ["x", "a"])]).uses_batch_stats
    assert not LayerGraph.from_nodes([("a", "std_batch", ["x"]), ("b", "div", ["x", "v1"])]).uses_batch_stats


@pytest.mark.parametrize("rows,match", [
    ([("a", "add", ["x"])], "takes 2 input"),
    ([("a", "sigmoid", ["y"])], "reads 'y', which is not an earlier node"),
    ([("a", "sigmoid", ["b"]), ("b", "exp", ["x"])], "not an earlier node"),
    ([("a", "sigmoidd", ["x"])], "unknown op 'sigmoidd'; valid ops: add"),
    ([("a", "exp", ["x"]), ("a", "exp", ["x"])], "used twice"),
    ([], "no op nodes"),
])
def test_invalid_graphs_are_refused_with_the_node_named(rows, match):
    with pytest.raises(GraphError, match=match):
        LayerGraph.from_nodes(rows)


def test_a_validated_graph_is_a_value():
    g = LayerGraph.from_nodes([("a", "exp", ["x"]), ("b", "exp", ["a"])])
    with pytest.raises(nx.NetworkXError, match="Frozen"):  # no edge can make a cycle behind its back
        g.graph.add_edge("b", "a")
    with pytest.raises(GraphError, match="value"):
        g.add("exp", "b")
    same = LayerGraph.from_nodes([("a", "exp", ["x"]), ("b", "exp", ["a"])], name="other name")
    assert same == g and hash(same) == hash(g) and len({g, same}) == 1
    assert g.pruned() is g.pruned() and g.pruned().pruned() is g.pruned()  # computed once
    building = LayerGraph()
    building.add("exp", "x")
    with pytest.raises(TypeError, match="once validated"):
        hash(building)
    assert hash(building.validate()) == hash(LayerGraph.from_nodes([("n1", "exp", ["x"])]))


def test_yaml_round_trip(tmp_path):
    g = LayerGraph.from_nodes(S0, name="evonorm_s0")
    save_graph(g, tmp_path / "s0.yaml")
    back = load_graph(tmp_path / "s0.yaml")
    assert back == g and back.name == "evonorm_s0" and back.formula() == g.formula()
    assert "formula: x * sigmoid(v1 * x) / std_group(x)" in (tmp_path / "s0.yaml").read_text()


@pytest.mark.parametrize("text,match", [
    ("nodes: [", "not valid YAML"),
    ("- 1\n- 2", "expected a mapping"),
    ("name: x\n", "'nodes' must be a non-empty list"),
    ("nodes:\n- {id: a, op: exp}\n", r"nodes\[0\] must be a mapping with keys id, op, inputs"),
    ("nodes:\n- {id: a, op: exp, inputs: x}\n", r"nodes\[0\].inputs must be a list"),
    ("nodes:\n- {id: a, op: frobnicate, inputs: [x]}\n", "unknown op 'frobnicate'"),
    ("nodes:\n- {id: a, op: exp, inputs: [q]}\n", "reads 'q'"),
    ("format: 7\nnodes:\n- {id: a, op: exp, inputs: [x]}\n", "format 7 is not supported"),
    ("nodez: []\n", r"unknown key\(s\) \['nodez'\]"),
])
def test_malformed_graph_files_name_the_file_and_the_problem(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(GraphFormatError, match=match) as err:
        load_graph(path)
    assert str(path) in str(err.value)


def test_missing_graph_file():
    with pytest.raises(GraphFormatError, match="cannot read graph file"):
        load_graph("/nonexistent/graph.yaml")


def test_generation_and_mutation_are_reproducible_and_copy():
    a = random_graph(random.Random(7), PAPER_OPS, num_nodes=10)
    assert a == random_graph(random.Random(7), PAPER_OPS, num_nodes=10) and len(a) == 10
    before = a.rows()
    children = [mutate(a, random.Random(s), PAPER_OPS) for s in range(20)]
    assert a.rows() == before, "mutation must not touch its parent"
    for child in children:
        changed = [i for i, (r, s) in enumerate(zip(a.rows(), child.rows())) if r != s]
        assert len(changed) <= 1 and len(child) == len(a)
    assert any(child != a for child in children)
    assert all(not op.endswith("_batch") for _, op, _ in random_graph(random.Random(1), S_SERIES_OPS, 30).rows())


@given(seed=st.integers(0, 100_000), num_nodes=st.integers(1, 12), mutations=st.integers(0, 3))
def test_random_graphs_validate_print_hash_round_trip_and_compile(seed, num_nodes, mutations):
    rng = random.Random(seed)
    g = random_graph(rng, PAPER_OPS, num_nodes)
    for _ in range(mutations):
        g = mutate(g, rng, PAPER_OPS)
    g.validate()
    back = graph_from_yaml(graph_to_yaml(g))
    assert back == g and back.formula() == g.formula() and back.structural_hash() == g.structural_hash()
    assert g.pruned().structural_hash() == g.structural_hash() and g.pruned().formula() == g.formula()
    x = torch.randn(2, 8, 3, 3)
    assert compile_graph(g, 8, groups=4)(x).shape == x.shape


def test_signed_log_and_sqrt_are_zero_with_zero_gradient_at_zero():
    a = torch.tensor([-4.0, 0.0, 4.0], requires_grad=True)
    for fn, expected in ((signed_log, [-1.3862944, 0.0, 1.3862944]), (signed_sqrt, [-2.0, 0.0, 2.0])):
        out = fn(a)
        torch.testing.assert_close(out, torch.tensor(expected))
        (grad,) = torch.autograd.grad(out.sum(), a)
        assert grad[1] == 0 and torch.isfinite(grad).all()


def test_division_is_plain_ieee():
    g = LayerGraph.from_nodes([("a", "div", ["x", "zero"])])
    out = compile_graph(g, 2)(torch.tensor([[1.0, 0.0]]))
    assert torch.isinf(out[0, 0]) and torch.isnan(out[0, 1])
