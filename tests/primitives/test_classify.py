"""Layer classes read off a graph's structure."""
import pytest

from evonorm import seeds
from primitives import LayerGraph
from primitives.classify import LAYER_CLASSES, is_normalizer, layer_class


def _graph(*rows):
    g = LayerGraph()
    names = {}
    for name, op, *inputs in rows:
        names[name] = g.add(op, *(names.get(i, i) for i in inputs))
    return g


@pytest.mark.parametrize("name", seeds.names())
def test_every_evonorm_is_a_gated_normalizer(name):
    assert layer_class(seeds.get(name)) == "gated normalizer"


@pytest.mark.parametrize("rows, expected", [
    ([("s", "std_group", "x"), ("o", "div", "x", "s")], "normalizer"),
    ([("s", "rms_instance", "x"), ("m", "mul", "x", "v1"), ("o", "div", "m", "s")], "normalizer"),
    ([("s", "std_layer", "x"), ("r", "sqrt", "s"), ("o", "mul", "r", "x")], "normalizer"),
    ([("n", "neg", "x"), ("q", "sqrt", "n"), ("s", "rms_instance", "v1"), ("o", "mul", "q", "s")], "pointwise"),
    ([("m", "mean_instance", "x"), ("o", "add", "x", "m")], "other statistic"),
    ([("m", "mean_instance", "x"), ("o", "sigmoid", "m")], "not viable"),
    ([("o", "mul", "v1", "v0")], "not viable"),
    ([("s", "std_group", "x"), ("d", "div", "x", "s"), ("o", "tanh", "d")], "gated normalizer"),
])
def test_classes(rows, expected):
    g = _graph(*rows)
    assert layer_class(g) == expected in LAYER_CLASSES
    assert is_normalizer(g) == expected.endswith("normalizer")


def test_dead_nodes_do_not_count():
    g = _graph(("s", "std_group", "x"), ("d", "div", "x", "s"), ("o", "sqrt", "x"))
    assert layer_class(g) == "pointwise"
