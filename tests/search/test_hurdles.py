"""Progressive hurdles: who trains another stage, what a staged result is, and a staged run's journal."""
from collections import Counter
from types import SimpleNamespace

import pytest

import search
from evaluator.evaluate import EvalRecord, Status
from search.hurdles import clears_hurdle, combine_stages
from search.state import evaluation_seed
from tests.search.fakes import FakeEvaluator, small_config


def _members(*means):
    return [SimpleNamespace(fitness={"a": m, "b": m}) for m in means]


def test_the_hurdle_is_the_population_quantile_and_an_empty_population_lets_everyone_on():
    population = _members(0.1, 0.2, 0.3, 0.4)
    assert clears_hurdle({"a": 0.25, "b": 0.25}, population, 0.5)       # the median is 0.25
    assert not clears_hurdle({"a": 0.2, "b": 0.29}, population, 0.5)    # mean 0.245
    assert not clears_hurdle({"a": 0.35, "b": 0.35}, population, 0.9)   # the 0.9 quantile is 0.37
    assert clears_hurdle({"a": 0.0, "b": 0.0}, [], 0.5)


def test_a_staged_result_averages_passing_stages_and_keeps_the_first_verdict_that_did_not_pass():
    one = EvalRecord("ok", fitness={"a": 0.2, "b": 0.4}, test_accuracy={"a": 0.3, "b": 0.5}, steps=10, wall_time=1.0)
    two = EvalRecord("ok", fitness={"a": 0.4, "b": 0.6}, test_accuracy={"a": 0.5, "b": 0.7}, steps=10, wall_time=2.0)
    both = combine_stages([one, two])
    assert both.status is Status.OK and both.fitness == pytest.approx({"a": 0.3, "b": 0.5})
    assert both.test_accuracy == pytest.approx({"a": 0.4, "b": 0.6}) and both.steps == 20 and both.wall_time == 3.0
    assert combine_stages([one]) is one
    diverged = EvalRecord.for_reason("nonfinite", "loss is nan", steps=4)
    worse = combine_stages([one, diverged])
    assert worse.status is Status.REJECTED and worse.reason == "nonfinite" and not worse.fitness and worse.steps == 14
    with pytest.raises(ValueError):
        combine_stages([])


def test_stage_one_keeps_the_seed_a_run_without_hurdles_uses_and_later_stages_get_their_own():
    assert evaluation_seed(3, 17) == evaluation_seed(3, 17, stage=1)
    seeds = {evaluation_seed(3, 17, stage=k) for k in (1, 2, 3)}
    assert len(seeds) == 3
    assert evaluation_seed(3, 17, True, 2) == evaluation_seed(3, 99, True, 2) != evaluation_seed(3, 17, True, 1)


def test_a_staged_run_journals_every_stage_and_records_the_mean_over_them(tmp_path):
    cfg = small_config("search.max_evaluations=40", "search.stages=3")
    result = search.run(cfg, tmp_path / "run", evaluator_factory=lambda c: FakeEvaluator(c, noise=0.2))
    view = search.open_run(result.run_dir)
    stages = view.journal.stages()
    rows = {r.id: r for r in view.candidates()}
    reached = Counter(s.candidate_id for s in stages)
    assert not any(rows[cid].is_reference for cid in reached)
    assert set(reached.values()) == {1, 2, 3}  # some stop at each hurdle
    for cid, count in reached.items():
        mine = [s for s in stages if s.candidate_id == cid]
        assert [s.stage for s in mine] == list(range(1, count + 1))
        assert [s.advanced for s in mine] == [True] * (count - 1) + [False]
        assert len({s.seed for s in mine}) == count and mine[0].seed == rows[cid].eval_seed
        assert rows[cid].steps == sum(s.record.steps for s in mine)
        if rows[cid].status == "ok":
            for arch, value in rows[cid].fitness.items():
                assert value == pytest.approx(sum(s.record.fitness[arch] for s in mine) / count)
    assert view.stages_reached() == dict(reached)


def test_without_hurdles_no_stage_is_journaled(tmp_path):
    result = search.run(small_config("search.max_evaluations=10"), tmp_path / "run",
                        evaluator_factory=lambda c: FakeEvaluator(c))
    assert search.open_run(result.run_dir).journal.stages() == []


def test_inspect_shows_the_stage_each_candidate_reached(tmp_path):
    from search.leaderboard import leaderboard
    from search.report import table

    cfg = small_config("search.max_evaluations=20", "search.stages=2")
    view = search.open_run(search.run(cfg, tmp_path / "run", evaluator_factory=lambda c: FakeEvaluator(c)).run_dir)
    entries = leaderboard(view.candidates())
    lines = table(entries, ["resnet", "mobilenetv2"], stages=view.stages_reached()).splitlines()
    assert lines[0].split()[:4] == ["rank", "front", "id", "stage"]
    assert lines[1].split()[3] == str(view.stages_reached()[entries[0].row.id])
    assert "stage" not in table(entries, ["resnet", "mobilenetv2"]).splitlines()[0]
