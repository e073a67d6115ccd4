"""The Ray executor: a search on two workers, a worker killed mid-evaluation, the real evaluator remotely."""
import functools
from collections import Counter

import search
from tests.search.fakes import FakeEvaluator, small_config, tiny_real_config

RAY = ("executor.kind=ray", "executor.num_workers=2")


def test_search_on_two_ray_workers(tmp_path, ray_session):
    cfg = small_config(*RAY, "search.max_evaluations=30")
    result = search.run(cfg, tmp_path / "run", evaluator_factory=functools.partial(FakeEvaluator, sleep=0.02))
    rows = search.open_run(result.run_dir).candidates()
    assert result.stop_reason == "max_evaluations" and result.summary.evaluated == 30
    assert all(r.finished for r in rows)
    assert sorted(r.told_seq for r in rows) == list(range(1, len(rows) + 1))
    assert len({r.worker for r in rows if r.duplicate_of is None}) == 2  # both workers were kept busy
    fingerprints = Counter(r.fingerprint for r in rows if r.duplicate_of is None and r.role != "reference")
    assert max(fingerprints.values()) == 1  # dedup holds with evaluations in flight


def test_a_worker_that_dies_is_replaced_and_its_evaluation_retried(tmp_path, ray_session):
    cfg = small_config(*RAY, "search.max_evaluations=12")
    factory = functools.partial(FakeEvaluator, crash_marker=str(tmp_path / "crashed"))
    result = search.run(cfg, tmp_path / "run", evaluator_factory=factory)
    rows = search.open_run(result.run_dir).candidates()
    assert (tmp_path / "crashed").exists() and result.stop_reason == "max_evaluations"
    retried = [r for r in rows if r.attempts == 2]
    assert len(retried) == 1 and retried[0].status in ("ok", "rejected")
    assert not result.summary.failed and all(r.finished for r in rows)


def test_without_retries_a_lost_worker_is_recorded_failed(tmp_path, ray_session):
    cfg = small_config(*RAY, "executor.max_retries=0", "search.max_evaluations=10")
    factory = functools.partial(FakeEvaluator, crash_marker=str(tmp_path / "crashed"))
    result = search.run(cfg, tmp_path / "run", evaluator_factory=factory)
    failed = [r for r in search.open_run(result.run_dir).candidates() if r.status == "failed"]
    assert [(r.reason, r.attempts) for r in failed] == [("worker_lost", 1)]
    assert result.stop_reason == "max_evaluations"


def test_real_evaluator_on_ray_workers(tmp_path, ray_session):
    cfg = tiny_real_config(*RAY, "search.max_evaluations=4")
    result = search.run(cfg, tmp_path / "run")
    refs = result.references
    assert set(refs) == {"bn_relu", "evonorm_s0"}
    assert all(r.status == "ok" and set(r.fitness) == {"resnet", "mobilenetv2"} for r in refs.values())
    rows = search.open_run(result.run_dir).candidates()
    assert result.summary.evaluated == 4 and all(r.finished for r in rows)
    trained = [r for r in rows if r.duplicate_of is None and r.steps > 0]
    assert trained and all(r.fingerprint for r in rows if r.graph_yaml)


def test_time_budget_abandons_evaluations_in_flight(tmp_path, ray_session):
    cfg = small_config(*RAY, "search.max_evaluations=0", "search.max_time=3.0")
    # each evaluation takes 120 s, so a run that waited for one (instead of abandoning it) lasts longer than that,
    # however slowly the workers start on a loaded machine
    result = search.run(cfg, tmp_path / "run", evaluator_factory=functools.partial(FakeEvaluator, sleep=120.0))
    rows = search.open_run(result.run_dir).candidates()
    assert result.stop_reason == "max_time" and result.summary.wall_time < 120
    abandoned = [r for r in rows if r.status == "abandoned"]
    assert len(abandoned) == 2 and all(r.reason == "abandoned" for r in abandoned)
    assert all(r.finished for r in rows if r.status != "abandoned")


def test_more_workers_than_the_cluster_fits_start_as_many_as_fit(tmp_path, ray_session, caplog):
    cfg = small_config("executor.kind=ray", "executor.num_workers=3", "search.max_evaluations=8")
    result = search.run(cfg, tmp_path / "run", evaluator_factory=functools.partial(FakeEvaluator, sleep=0.02))
    assert result.stop_reason == "max_evaluations" and result.summary.evaluated == 8
    rows = search.open_run(result.run_dir).candidates()
    assert len({r.worker for r in rows if r.duplicate_of is None}) == 2
    assert "fit 2 at a time; starting 2" in caplog.text
