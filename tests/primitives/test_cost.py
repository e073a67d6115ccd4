"""The cost model: pass counts checked by hand on small graphs, the references, and that the cost is a
function of the layer's pruned graph alone (measured times are bench/cost_model.py's business)."""
import random

import pytest

from primitives import OPS, PAPER_OPS, LayerGraph, graph_from_yaml, graph_to_yaml, random_graph, seeds
from primitives.cost import BN_RELU_PASSES, passes, reference_cost, relative_cost

AFFINE = 11  # g(x) * weight + bias: mul and add_ forward (4); g * weight, g * x summed, g summed backward (7)


def graph(*rows) -> LayerGraph:
    return LayerGraph.from_nodes(rows)


def test_references_are_counted_in_units_of_bn_relu():
    assert reference_cost("bn_relu") == reference_cost("BN-ReLU") == 1.0
    assert reference_cost("gn_relu") == pytest.approx(13 / BN_RELU_PASSES)
    with pytest.raises(ValueError, match="bn_relu"):
        reference_cost("layer_norm")


def test_hand_counted_graphs():
    # x * v1: the layer folds v1 into its affine weight, so only the affine map is left
    assert passes(graph(("n1", "mul", ["x", "v1"]))) == AFFINE
    # -x: a read and a write forward, the gradient read and written backward
    assert passes(graph(("n1", "neg", ["x"]))) == AFFINE + 4
    # x + v0: 2 forward; backward the gradient passes to x as it is and is summed (read) for v0
    assert passes(graph(("n1", "add", ["x", "v0"]))) == AFFINE + 3
    # ReLU as max(x, zero): 2 forward; backward the mask x - 0 (2), sign_, add_, clamp_ in place (6),
    # g * mask (3), g - g * mask (3) summed to zero's shape (1)
    relu = graph(("n1", "max", ["x", "zero"]))
    assert passes(relu) == AFFINE + 2 + 2 + 6 + 3 + 4
    # x / std_instance(x): folded; the statistic's two-pass variance (6 forward, 5 backward), and x's two
    # readers (the statistic and the affine's body) add their gradients (3)
    assert passes(graph(("n1", "std_instance", ["x"]), ("n2", "div", ["x", "n1"]))) == AFFINE + 11 + 3


def test_s0_by_hand_and_the_seeds_in_their_measured_order():
    # v1 * x: 2 forward; backward g * x for v1 (read 2, write 1, summed down 1) and g * v1 for x (read 1, write
    # 1): 8. sigmoid 2 + 3; x * gate 3 + 3 + 3; std_group 6 + 5; the division is folded; x has three readers (6)
    assert passes(seeds.get("evonorm_s0")) == AFFINE + 8 + 5 + 9 + 11 + 6 == 50
    cost = {name: relative_cost(seeds.get(name)) for name in seeds.names()}
    assert cost["evonorm_s0"] > 1
    # bench/cost_model.py measures B0 > B1 > B2 > S0 > S1 > S2 on a CPU
    assert sorted(cost, key=cost.get, reverse=True) == ["evonorm_b0", "evonorm_b1", "evonorm_b2", "evonorm_s0",
                                                        "evonorm_s1", "evonorm_s2"]


def test_the_cost_is_a_function_of_the_pruned_graph():
    s0 = seeds.get("evonorm_s0")
    renamed = graph(("a", "mul", ["x", "v1"]), ("dead", "tanh", ["x"]), ("b", "sigmoid", ["a"]),
                    ("c", "mul", ["b", "x"]), ("d", "std_group", ["x"]), ("e", "div", ["c", "d"]))
    assert relative_cost(renamed) == relative_cost(s0) == relative_cost(graph_from_yaml(graph_to_yaml(s0)))
    rng = random.Random(0)
    for _ in range(50):
        g = random_graph(rng, PAPER_OPS, 10, prior="uniform")
        assert passes(g) == passes(g.pruned()) == passes(graph_from_yaml(graph_to_yaml(g)))


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_has_a_count(op):
    arity = OPS[op].arity
    g = graph(("n1", op, ["x"] * arity))
    assert passes(g) >= AFFINE and isinstance(passes(g), int)
