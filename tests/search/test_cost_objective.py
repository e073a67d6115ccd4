"""``search.objectives: [accuracy, cost]``: the config key, the tournament, replay and resume, the ranking and
search.inspect's column (fake-evaluator runs)."""
import json
import random
from dataclasses import replace

import pytest

import search
from primitives import LayerGraph, graph_to_yaml, seeds
from primitives.cost import relative_cost
from search.config import ConfigError, check_resume_overrides, load_config
from search.evolution import Evolution
from search.inspect import main as inspect_main
from search.journal import CandidateRow
from search.leaderboard import leaderboard, places, row_cost
from search.random_search import RandomSearch
from search.state import make_algorithm, objectives
from tests.search.fakes import FakeEvaluator, journal_table, small_config

COST = "search.objectives=[accuracy, cost]"
CHEAP = LayerGraph.from_nodes([("n1", "mul", ["x", "v1"])])  # folded into the affine map: the cheapest layer
S0 = seeds.get("evonorm_s0")


def _run(run_dir, *overrides):
    cfg = small_config(*overrides)
    return search.run(cfg, run_dir, evaluator_factory=lambda c: FakeEvaluator(c))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cost")
    _run(root / "plain", "search.max_evaluations=30")
    _run(root / "cost", "search.max_evaluations=30", COST)
    return root


def test_the_key_defaults_to_accuracy_and_is_checked(tmp_path):
    assert small_config()["search"]["objectives"] == ["accuracy"] == list(objectives(small_config()))
    assert objectives(small_config(COST)) == ("accuracy", "cost")
    assert objectives({"search": {}}) == ("accuracy",)  # a run written before the key
    for bad in ("[accuracy, speed]", "[cost]", "[accuracy, accuracy]", "[]"):
        with pytest.raises(ConfigError, match="'search.objectives'.*accuracy among them"):
            load_config(None, [f"search.objectives={bad}"])
    with pytest.raises(ConfigError, match="'search.objectives' cannot change"):
        check_resume_overrides([COST], tmp_path)


def _evolution(members, *objs):
    evo = Evolution(["add", "mul"], population_size=3, tournament_size=3, objectives=objs)
    for i, (graph, accuracy) in enumerate(members, 1):
        evo.tell(i, graph, {"resnet": accuracy})
    return evo


def _winners(evo) -> set[int]:
    return {evo.select(random.Random(k)).id for k in range(200)}


def test_the_tournament_prefers_the_cheaper_of_two_equally_accurate_members():
    b0 = seeds.get("evonorm_b0")
    assert relative_cost(CHEAP) < relative_cost(S0) < relative_cost(b0)
    tied = [(S0, 0.5), (CHEAP, 0.5)]
    assert _winners(_evolution(tied, "accuracy")) == {1, 2}
    assert _winners(_evolution(tied, "accuracy", "cost")) == {2}
    # a more accurate member stays on the front however much it costs
    assert _winners(_evolution([*tied, (b0, 0.6)], "accuracy")) == {3}
    assert _winners(_evolution([*tied, (b0, 0.6)], "accuracy", "cost")) == {2, 3}
    assert [m.cost for m in _evolution(tied, "accuracy", "cost").population] == [relative_cost(S0),
                                                                                relative_cost(CHEAP)]
    assert [m.cost for m in _evolution(tied, "accuracy").population] == [None, None]
    with pytest.raises(ValueError, match="objectives"):
        Evolution(["add"], 2, 2, objectives=("cost",))


def test_make_algorithm_passes_the_objectives_and_random_search_ignores_them():
    assert make_algorithm(small_config(COST)).objectives == ("accuracy", "cost")
    assert make_algorithm(small_config()).objectives == ("accuracy",)
    assert isinstance(make_algorithm(small_config(COST, "search.algorithm=random")), RandomSearch)


def test_a_cost_aware_run_replays_and_resumes_exactly(runs, tmp_path):
    cut = _run(tmp_path / "cut", "search.max_evaluations=14", COST)
    assert cut.stop_reason == "max_evaluations"
    search.resume(tmp_path / "cut", ["search.max_evaluations=30"], evaluator_factory=lambda c: FakeEvaluator(c))
    assert journal_table(tmp_path / "cut") == journal_table(runs / "cost")
    assert journal_table(runs / "cost") != journal_table(runs / "plain")  # the objective steered the search
    with search.open_run(runs / "cost") as view:
        population = view.population()
    assert population and all(m.cost == relative_cost(m.graph) for m in population)


def _row(**kw) -> CandidateRow:
    base = dict(id=1, role="child", name=None, graph_yaml=graph_to_yaml(S0), formula=None, structural_hash=None,
                fingerprint=None, batch_dependent=False, parent_id=None, duplicate_of=None, status="ok",
                reason=None, detail=None, fitness={"a": 0.5}, test_accuracy=None, steps=1, eval_seed=1, attempts=1,
                worker="w", wall_time=1.0, proposed_at=1.0, started_at=1.0, finished_at=1.0, told_seq=1)
    return CandidateRow(**{**base, **kw})


def test_the_ranking_counts_the_cost_and_references_have_one():
    rows = [_row(id=1), _row(id=2, graph_yaml=graph_to_yaml(CHEAP)),
            _row(id=3, role="reference", name="bn_relu", graph_yaml=None, fitness={"a": 0.5})]
    plain = leaderboard(rows)
    assert [(e.row.id, e.pareto_rank, e.cost) for e in plain] == [(1, 1, None), (2, 1, None)]
    aware = leaderboard(rows, objectives=("accuracy", "cost"))
    assert [(e.row.id, e.pareto_rank) for e in aware] == [(2, 1), (1, 2)]
    assert aware[0].cost == relative_cost(CHEAP) and aware[0].as_dict()["cost"] == aware[0].cost
    assert "cost" not in plain[0].as_dict()
    assert row_cost(rows[2]) == 1.0
    # all three tie on accuracy: by id, BN-ReLU comes last; by cost it sits between the cheap layer and S0
    assert places(rows) == {3: "3 of 3"} and places(rows, ("accuracy", "cost")) == {3: "2 of 3"}
    assert row_cost(replace(rows[0], graph_yaml=None, name="gn_relu")) < 1.0


def test_inspect_shows_a_cost_column_only_with_the_objective(runs, capsys):
    assert inspect_main([str(runs / "cost"), "--top", "4"]) == 0
    head = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("rank"))
    assert head.split()[head.split().index("mean") + 1] == "cost"
    assert inspect_main([str(runs / "cost"), "--top", "4", "--json"]) == 0
    top = json.loads(capsys.readouterr().out)["top"]
    with search.open_run(runs / "cost") as view:
        rows = {r.id: r for r in view.candidates()}
    assert top and all(e["cost"] == row_cost(rows[e["id"]]) for e in top)
    assert inspect_main([str(runs / "plain"), "--top", "4"]) == 0
    head = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("rank"))
    assert "cost" not in head.split()
    assert inspect_main([str(runs / "plain"), "--top", "4", "--json"]) == 0
    assert all("cost" not in e for e in json.loads(capsys.readouterr().out)["top"])
