"""The generators: the paper's uniform prior and operator, and the structural ones."""
import random

import networkx as nx
import pytest

from evonorm import seeds
from primitives import PAPER_OPS, S_SERIES_OPS, get_op, mutate, random_graph, viable
from primitives.generate import INSERT_PROBABILITY


def _live(g):
    return nx.ancestors(g.graph, g.output) | {g.output}


def _typed(g, nodes=None):
    """Aggregates and binary ops (among ``nodes``, default all) read a full-size node in their first slot."""
    full = g.full_size
    return all(inputs[0] in full for n, op, inputs in g.rows()
               if (nodes is None or n in nodes) and (get_op(op).is_aggregate or get_op(op).arity == 2))


def test_structural_prior_draws_only_viable_typed_graphs():
    rng = random.Random(0)
    for _ in range(300):
        g = random_graph(rng, PAPER_OPS, 10, prior="structural")
        assert viable(g) and len(g) == 10 and _typed(g)


def test_uniform_prior_is_the_papers_and_mostly_not_viable():
    rng = random.Random(0)
    share = sum(viable(random_graph(rng, PAPER_OPS, 10)) for _ in range(500)) / 500
    assert 0.05 < share < 0.2  # the paper's space: about one graph in ten has a full-size, x-dependent output


def test_structural_prior_names_an_op_set_that_cannot_work():
    with pytest.raises(ValueError, match="structural prior drew no viable graph"):
        random_graph(random.Random(0), ["mean_batch", "std_group"], 4, prior="structural")
    with pytest.raises(ValueError, match="prior must be one of"):
        random_graph(random.Random(0), PAPER_OPS, 4, prior="typed")


def test_structural_mutation_touches_live_nodes_and_inserts():
    rng = random.Random(1)
    parent = random_graph(random.Random(5), PAPER_OPS, 10, prior="structural")
    live = _live(parent)
    grew = 0
    for _ in range(400):
        child = mutate(parent, rng, PAPER_OPS, "structural")
        if len(child) == len(parent) + 1:
            grew += 1
            assert _typed(child, set(child.intermediate) - set(parent.intermediate))
            continue
        changed = [a[0] for a, b in zip(parent.rows(), child.rows()) if a != b]
        assert _typed(child, changed)  # the redrawn node's own inputs; its readers may now read a reduced value
        assert len(child) == len(parent) and len(changed) <= 1 and set(changed) <= live
    assert abs(grew / 400 - INSERT_PROBABILITY) < 0.06


def test_paper_mutation_mostly_hits_dead_nodes_structural_rarely_changes_nothing():
    rng = random.Random(2)
    parents = [random_graph(rng, PAPER_OPS, 10, prior="structural") for _ in range(60)]
    same = {op: 0 for op in ("paper", "structural")}
    for p in parents:
        for op in same:
            for _ in range(10):
                same[op] += mutate(p, rng, PAPER_OPS, op).structural_hash() == p.structural_hash()
    assert same["paper"] / 600 > 0.5 and same["structural"] / 600 < 0.15


def test_insertion_rewires_the_edge_and_keeps_the_graph_valid():
    s0 = seeds.get("evonorm_s0")
    rng = random.Random(3)
    grown = 0
    for _ in range(200):
        child = mutate(s0, rng, PAPER_OPS, "structural")
        child.validate()
        if len(child) == len(s0):
            continue
        grown += 1
        (new,) = set(child.intermediate) - set(s0.intermediate)
        readers = [n for n in child.intermediate if new in child.inputs(n)]
        assert new in _live(child) and (readers or new == child.output)
        for n in readers:  # the reader kept its other inputs
            assert len([a for a, b in zip(child.inputs(n), s0.inputs(n)) if a != b]) == 1
    assert grown > 20


def test_seeds_grow_past_their_size_but_never_past_max_nodes():
    rng = random.Random(4)
    g = seeds.get("evonorm_s0")
    sizes = []
    for _ in range(300):
        g = mutate(g, rng, S_SERIES_OPS, "structural", max_nodes=8)
        sizes.append(len(g))
        assert not any(get_op(op).uses_batch_stats for _, op, _ in g.rows())
    assert max(sizes) == 8 and min(sizes) >= len(seeds.get("evonorm_s0"))


def test_mutation_is_a_function_of_its_generator():
    g = random_graph(random.Random(6), PAPER_OPS, 10, prior="structural")
    for k in range(30):
        assert mutate(g, random.Random(k), PAPER_OPS, "structural", 12) == \
            mutate(g, random.Random(k), PAPER_OPS, "structural", 12)
    with pytest.raises(ValueError, match="operator must be one of"):
        mutate(g, random.Random(0), PAPER_OPS, "grow")
