"""Functional fingerprints: equal for genuinely equivalent graphs, different for different functions."""
from __future__ import annotations

import pytest
import torch

from evaluator.fingerprint import fingerprint, probe_outputs
from evaluator.models import NormActFactory
from evonorm import seeds
from primitives import LayerGraph


def graph(*rows: tuple[str, ...]) -> LayerGraph:
    """Rows of (op, *inputs); inputs may name earlier rows as n1, n2, ... The last row is the output."""
    return LayerGraph.from_nodes([(f"n{i + 1}", op, list(inputs)) for i, (op, *inputs) in enumerate(rows)])


EQUIVALENT = {
    "commuted add": (graph(("tanh", "x"), ("sigmoid", "x"), ("add", "n1", "n2")),
                     graph(("sigmoid", "x"), ("tanh", "x"), ("add", "n2", "n1"))),
    "sub-graph written twice": (graph(("std_instance", "x"), ("std_instance", "x"), ("div", "x", "n1"),
                                      ("div", "x", "n2"), ("add", "n3", "n4")),
                                graph(("std_instance", "x"), ("div", "x", "n1"), ("add", "n2", "n2"))),
    "dead nodes": (graph(("exp", "x"), ("sigmoid", "x"), ("log", "n1"), ("mul", "x", "n2")),
                   graph(("sigmoid", "x"), ("mul", "x", "n1"))),
    "times exp(zero)": (graph(("exp", "zero"), ("mul", "x", "n1"), ("tanh", "n2")), graph(("tanh", "x"),)),
    "double negation": (graph(("neg", "x"), ("neg", "n1"), ("sigmoid", "n2")), graph(("sigmoid", "x"),)),
    "x*x is square(x)": (graph(("mul", "x", "x"), ("tanh", "n1")), graph(("square", "x"), ("tanh", "n1"))),
    "sqrt(square(x)) is abs(x)": (graph(("square", "x"), ("sqrt", "n1")), graph(("abs", "x"),)),
    "max(x, x) is x": (graph(("max", "x", "x"), ("sigmoid", "n1")), graph(("sigmoid", "x"),)),
    "division is multiplication by the reciprocal": (
        graph(("std_group", "x"), ("div", "x", "n1")),
        graph(("std_group", "x"), ("exp", "zero"), ("div", "n2", "n1"), ("mul", "x", "n3"))),
}


@pytest.mark.parametrize("name", EQUIVALENT)
def test_equivalent_graphs_share_a_fingerprint(name):
    a, b = EQUIVALENT[name]
    assert fingerprint(a) == fingerprint(b)


def test_equivalences_that_structure_alone_cannot_see():
    a, b = EQUIVALENT["times exp(zero)"]
    assert a.structural_hash() != b.structural_hash() and fingerprint(a) == fingerprint(b)


DIFFERENT = [
    ("evonorm_s0", "evonorm_s1"),  # v1 = 1 at init: only randomised parameters tell them apart
    ("evonorm_s1", "evonorm_s2"),
    ("evonorm_b0", "evonorm_b1"),
    ("evonorm_b1", "evonorm_b2"),
    ("bn_relu", "gn_relu"),
    ("bn_relu", "evonorm_b0"),
]


@pytest.mark.parametrize("a, b", DIFFERENT)
def test_different_layers_differ(a, b):
    assert fingerprint(a) != fingerprint(b)


@pytest.mark.parametrize("a, b", [("std_group", "std_instance"), ("std_instance", "std_layer"),
                                  ("mean_batch", "mean_layer"), ("rms_group", "std_group")])
def test_axis_sets_differ(a, b):
    """The second probe has 2 channels per group, so group statistics differ from instance ones."""
    assert fingerprint(graph((a, "x"), ("div", "x", "n1"))) != fingerprint(graph((b, "x"), ("div", "x", "n1")))


def test_eval_mode_reads_the_running_statistics():
    """In eval mode a batch statistic reads its running buffer, which the momentum moved after one step."""
    batch = graph(("std_batch", "x"), ("div", "x", "n1"))
    assert fingerprint(batch, momentum=0.1) != fingerprint(batch, momentum=0.5)


def test_seed_names_and_their_graphs_agree():
    assert fingerprint("evonorm_s0") == fingerprint(seeds.get("evonorm_s0")) == fingerprint("S0")


def test_nonfinite_outputs_still_fingerprint():
    inf = graph(("div", "x", "zero"))
    assert fingerprint(inf) == fingerprint(graph(("abs", "x"), ("div", "x", "zero")))
    assert fingerprint(inf) != fingerprint(graph(("neg", "x"), ("div", "n1", "zero")))


def test_fingerprint_touches_neither_the_global_rng_nor_a_built_layer():
    factory = NormActFactory("evonorm_b0", groups=32)
    layer = factory(64)
    for p in layer.parameters():
        torch.nn.init.normal_(p)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    fingerprint("evonorm_b0")
    assert torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(before[k], v) for k, v in layer.state_dict().items())


def test_probes_include_train_and_eval_mode_at_two_shapes():
    outputs = probe_outputs(NormActFactory("evonorm_s0", groups=8), 8, randomize=True)
    labels = [label for label, _ in outputs]
    assert labels == ["train(4, 6, 3, 3)", "eval(4, 6, 3, 3)", "train(3, 16, 2, 3)", "eval(3, 16, 2, 3)"]
    assert all(out.dtype == torch.float64 for _, out in outputs)
