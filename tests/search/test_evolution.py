"""The pure algorithms: Pareto fronts, tournaments, aging, proposals, random search."""
import random

from hypothesis import given
from hypothesis import strategies as st

from evonorm import seeds
from primitives import PAPER_OPS, S_SERIES_OPS, get_op, random_graph, viable
from search.evolution import Evolution, Member, dominates, pareto_front
from search.random_search import RandomSearch


def _members(fitnesses):
    return [Member(i, seeds.get("evonorm_s0"), f) for i, f in enumerate(fitnesses)]


def _distinct_graphs(n, ops=PAPER_OPS):
    """``n`` graphs of distinct structure (the population keeps one member per function)."""
    out, hashes, rng = [], set(), random.Random(123)
    while len(out) < n:
        g = random_graph(rng, ops, 6, prior="structural")
        if g.structural_hash() not in hashes:
            hashes.add(g.structural_hash())
            out.append(g)
    return out


def _front_2d_by_sweep(points):
    """An independent 2-objective front: sort by the first objective (best first), keep a point when its
    second objective beats every point with a strictly better first objective and is not beaten at equal first."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
    front, best_second, i = set(), float("-inf"), 0
    while i < len(order):  # handle ties in the first objective as one group
        j = i
        while j < len(order) and points[order[j]][0] == points[order[i]][0]:
            j += 1
        group = order[i:j]
        top = max(points[k][1] for k in group)
        if top > best_second:
            front |= {k for k in group if points[k][1] == top}
        best_second = max(best_second, top)
        i = j
    return front


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=12))
def test_pareto_front_matches_a_sweep_over_two_objectives(points):
    members = _members([{"resnet": a, "mobilenetv2": b} for a, b in points])
    assert {m.id for m in pareto_front(members)} == _front_2d_by_sweep(points)


def test_dominates_needs_one_strict_improvement():
    assert dominates({"a": 1, "b": 2}, {"a": 1, "b": 1})
    assert not dominates({"a": 1, "b": 1}, {"a": 1, "b": 1})
    assert not dominates({"a": 2, "b": 0}, {"a": 1, "b": 1})
    assert dominates({"a": 0.1}, {})  # a missing architecture counts as the worst


def _evolution(**kw):
    args = dict(ops=PAPER_OPS, population_size=4, tournament_size=4, num_nodes=6)
    args.update(kw)
    return Evolution(**args)


def test_tournament_winner_is_drawn_uniformly_from_the_front():
    evo = _evolution()
    fits = [{"a": 0.9, "b": 0.1}, {"a": 0.1, "b": 0.9}, {"a": 0.5, "b": 0.5}, {"a": 0.4, "b": 0.4}]
    for i, (f, g) in enumerate(zip(fits, _distinct_graphs(4))):
        evo.tell(i, g, f)
    picks = [evo.select(random.Random(k)).id for k in range(600)]
    assert set(picks) == {0, 1, 2}  # 3 is dominated by 2
    assert all(150 < picks.count(i) < 250 for i in (0, 1, 2))


def test_aging_removes_the_oldest_and_rejected_never_join():
    evo = _evolution(population_size=3, tournament_size=2)
    for i, g in enumerate(_distinct_graphs(6)):
        evo.tell(i, g, {"a": 0.5} if i != 4 else None)
    assert [m.id for m in evo.population] == [2, 3, 5]


def test_proposals_seeds_then_random_then_children_of_members():
    evo = _evolution(seeds=[("evonorm_s0", seeds.get("evonorm_s0"))], population_size=2, tournament_size=2)
    first = evo.ask(random.Random(0), 0)
    assert (first.role, first.name, first.graph) == ("seed", "evonorm_s0", seeds.get("evonorm_s0"))
    assert [evo.ask(random.Random(k), k).role for k in (1, 2)] == ["initial", "initial"]
    evo.tell(1, first.graph, {"a": 0.3})
    assert evo.ask(random.Random(3), 3).role == "initial"  # one member of two: keep filling
    other = _distinct_graphs(1)[0]
    evo.tell(2, other, {"a": 0.2})
    child = evo.ask(random.Random(4), 4)
    assert child.role == "child" and child.parent_id in (1, 2)


def test_a_duplicate_never_joins_the_population():
    evo = _evolution(population_size=4, tournament_size=2)
    a, b = _distinct_graphs(2)
    evo.tell(1, a, {"a": 0.5}, fingerprint="f-a")
    evo.tell(2, a, {"a": 0.5}, fingerprint="f-a")      # a duplicate answered from the journal
    evo.tell(3, b, {"a": 0.6}, fingerprint="f-a")      # another graph computing the same function
    evo.tell(4, a, {"a": 0.5}, fingerprint=None)        # the same structure, no fingerprint
    assert [m.id for m in evo.population] == [1]
    evo.tell(5, b, {"a": 0.6}, fingerprint="f-b")
    assert [m.id for m in evo.population] == [1, 5]


def test_an_aged_out_function_does_not_come_back():
    evo = _evolution(population_size=2, tournament_size=2)
    graphs = _distinct_graphs(3)
    for i, g in enumerate(graphs):
        evo.tell(i, g, {"a": 0.5}, fingerprint=f"f{i}")
    assert [m.id for m in evo.population] == [1, 2]
    evo.tell(9, graphs[0], {"a": 0.9}, fingerprint="f0")
    assert [m.id for m in evo.population] == [1, 2]


def test_mutation_waits_for_a_full_population_or_the_cap():
    evo = _evolution(population_size=3, tournament_size=2)
    evo.tell(0, _distinct_graphs(1)[0], {"a": 0.5})
    assert all(evo.ask(random.Random(k), k).role == "initial" for k in range(1, 60))
    capped = _evolution(population_size=3, tournament_size=2, max_initial=10)
    assert capped.ask(random.Random(0), 10).role == "initial"  # nothing passed yet: nothing to mutate
    capped.tell(0, _distinct_graphs(1)[0], {"a": 0.5})
    assert [capped.ask(random.Random(k), k).role for k in (9, 10, 11)] == ["initial", "child", "child"]


def test_children_are_never_structural_clones_of_members():
    evo = _evolution(population_size=4, tournament_size=2, mutation="paper")
    for i, g in enumerate(_distinct_graphs(4)):
        evo.tell(i, g, {"a": 0.5 + i / 10})
    taken = {m.graph.structural_hash() for m in evo.population}
    children = [evo.ask(random.Random(k), 4 + k) for k in range(200)]
    assert all(c.role == "child" and c.graph.structural_hash() not in taken for c in children)


def test_structural_prior_children_are_viable():
    evo = _evolution(population_size=2, tournament_size=2, prior="structural", mutation="structural")
    for i, g in enumerate(_distinct_graphs(2)):
        evo.tell(i, g, {"a": 0.5})
    assert all(viable(evo.ask(random.Random(k), 2 + k).graph) for k in range(200))
    assert all(viable(evo.ask(random.Random(k), 0).graph) for k in range(50))  # random proposals too


def test_proposals_are_a_function_of_the_generator_and_respect_the_op_set():
    evo = _evolution(ops=S_SERIES_OPS, population_size=1, tournament_size=1, prior="structural",
                     mutation="structural")
    evo.tell(7, seeds.get("evonorm_s0"), {"a": 0.3})
    for k in range(40):
        a, b = evo.ask(random.Random(k), 5), evo.ask(random.Random(k), 5)
        assert a == b and a.role == "child"
        assert not any(get_op(op).uses_batch_stats for _, op, _ in a.graph.rows())


def test_mutation_nodes_bounds_the_changed_nodes():
    evo = _evolution(population_size=1, tournament_size=1, mutation_nodes=3)
    parent = seeds.get("evonorm_s0")
    evo.tell(0, parent, {"a": 0.3})
    for k in range(20):
        child = evo.ask(random.Random(k), 1).graph
        assert sum(a != b for a, b in zip(child.rows(), parent.rows())) <= 3


def test_random_search_ignores_results():
    rs = RandomSearch(PAPER_OPS, num_nodes=5, seeds=[("evonorm_b0", seeds.get("evonorm_b0"))])
    assert rs.ask(random.Random(0), 0).role == "seed"
    before = rs.ask(random.Random(1), 1)
    rs.tell(1, before.graph, {"a": 1.0})
    after = rs.ask(random.Random(1), 1)
    assert before == after and after.role == "random" and len(after.graph) == 5 and rs.population == ()
