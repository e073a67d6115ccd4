"""The Ray executor: a search on two workers, a worker killed mid-evaluation, the real evaluator remotely."""
import functools
import os
import subprocess
import sys
from collections import Counter

import pytest

import search
from search.executor import ExecutorError, node_capacity
from tests.conftest import REPO
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


class _Unbuildable:
    def __init__(self, cfg, data=None):
        raise ValueError("this evaluator cannot be built here")


def test_a_worker_that_cannot_build_its_evaluator_stops_the_run_with_its_error(tmp_path, ray_session):
    with pytest.raises(ExecutorError, match="an evaluator worker failed to start: ValueError: this evaluator "
                                            "cannot be built here"):
        search.run(small_config(*RAY, "search.max_evaluations=4"), tmp_path / "run", evaluator_factory=_Unbuildable)


@pytest.mark.parametrize("resources, cpus, gpus, fits", [
    ({"CPU": 4.0}, 1.0, 0.0, 4), ({"CPU": 4.0}, 1.5, 0.0, 2), ({"CPU": 1.0}, 2.0, 0.0, 0),
    ({"CPU": 16.0, "GPU": 1.0}, 2.0, 0.25, 4), ({"CPU": 16.0}, 2.0, 0.25, 0), ({}, 1.0, 0.0, 0),
    ({"CPU": 0.3 * 10}, 0.3, 0.0, 10),
])
def test_node_capacity_counts_whole_evaluations(resources, cpus, gpus, fits):
    assert node_capacity(resources, cpus, gpus) == fits


# Job-level runtime_env (working_dir, py_modules) needs a Ray instance that the executor starts itself, so this
# runs in a process of its own; the probe, defined in __main__, travels by value.
RUNTIME_ENV_SCRIPT = """
import os, sys
from evaluator.evaluate import EvalRecord
from search.executor import Job, RayExecutor, run_all
from tests.search.fakes import small_config

class Probe:
    def __init__(self, cfg, data=None):
        self.images = len(data.train_y)
    def evaluate(self, layer, seed):
        seen = f"{os.environ.get('EVONORM_PROBE')} {sorted(os.listdir('.'))} {self.images}"
        return EvalRecord.for_reason("quality", seen)

cfg = small_config("executor.kind=ray", "executor.num_workers=1", "data.synthetic_size=640", "data.val_size=160",
                   f"executor.runtime_env={{working_dir: {sys.argv[1]}, env_vars: {{EVONORM_PROBE: shipped}}}}")
executor = RayExecutor(cfg, Probe)
print(next(iter(run_all(executor, [Job.of(0, 0, None, "bn_relu")]))).record.detail)
executor.close()
"""


def test_runtime_env_reaches_the_workers(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "plugin_module.py").write_text("X = 1\n")
    done = subprocess.run([sys.executable, "-c", RUNTIME_ENV_SCRIPT, str(code)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "shipped ['plugin_module.py'] 480"


def test_a_bad_runtime_env_is_named(tmp_path):
    script = RUNTIME_ENV_SCRIPT.replace("working_dir: {sys.argv[1]}", "working_dir: /no/such/folder")
    done = subprocess.run([sys.executable, "-c", script, "x"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert done.returncode != 0
    assert "ExecutorError: could not start a local Ray instance with executor.runtime_env=" in done.stderr
    assert "/no/such/folder" in done.stderr
