"""Searches on a multi-node Ray cluster, made on this machine with Ray's own ``ray.cluster_utils.Cluster``:
each node is a raylet of its own, all on 127.0.0.1, and nodes join and leave while a search runs.

The driver is a separate process that joins with ``--address`` (``executor.address``), as a user's would;
the test process owns the cluster and reads the run's journal to time the changes it makes.
"""
import os
import subprocess
import sys
import time
from collections import Counter

import pytest
from ray.cluster_utils import Cluster

import search
from search.journal import Journal, JournalError
from tests.conftest import REPO
from tests.search.fakes import SMALL_SEARCH, TINY_REAL
from tests.search.sockets import LOOPBACKS, listening_names

# A search with the fake evaluator (carried to the workers by value) joining the cluster at argv[1].
SCRIPT = """
import functools, sys
import ray
import search
import tests.search.fakes as fakes
ray.cloudpickle.register_pickle_by_value(fakes)
cfg = fakes.small_config("executor.kind=ray", f"executor.address={sys.argv[1]}", *sys.argv[5:])
factory = functools.partial(fakes.FakeEvaluator, sleep=float(sys.argv[3]), trace=sys.argv[4])
search.run(cfg, sys.argv[2], evaluator_factory=factory)
"""
NODE = {"num_cpus": 1, "object_store_memory": 150 << 20}


def _env(**extra: str) -> dict:
    """The environment of a driver, read when it starts: Ray may have set its auth mode in this process since."""
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **extra}


@pytest.fixture
def cluster():
    """A head without CPUs (no evaluation runs there) and one node of one CPU; tests add and remove nodes."""
    made = Cluster(initialize_head=True, head_node_args={**NODE, "num_cpus": 0})
    made.add_node(**NODE)
    made.wait_for_nodes()
    yield made
    made.shutdown()


def _start(cluster, run_dir, trace, sleep: float, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, cluster.address, str(run_dir), str(sleep), str(trace),
                             *overrides], cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_results(proc, run_dir, count: int) -> None:
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, f"the run ended early: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "the run made no progress"
        try:
            with Journal.open(run_dir, readonly=True) as j:
                if sum(r.told_seq is not None for r in j.rows()) >= count:
                    return
        except JournalError:
            pass
        time.sleep(0.1)


def _finish(proc) -> None:
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr


def _node(row) -> str:
    """The node prefix in a worker's name (``host:pid@node``)."""
    return row.worker.rsplit("@", 1)[1]


def _evaluated(run_dir) -> list:
    return [r for r in search.open_run(run_dir).candidates() if r.duplicate_of is None]


def test_cluster_a_node_that_leaves_loses_nothing_and_repeats_nothing(cluster, tmp_path):
    leaving = cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    run_dir, trace = tmp_path / "run", tmp_path / "trace"
    proc = _start(cluster, run_dir, trace, 1.5, "search.max_evaluations=14")
    _wait_for_results(proc, run_dir, 4)
    cluster.remove_node(leaving)
    _finish(proc)
    rows = _evaluated(run_dir)
    assert all(r.finished for r in rows) and sum(r.role != "reference" for r in rows) == 14
    told = [r.told_seq for r in search.open_run(run_dir).candidates()]
    assert sorted(told) == list(range(1, len(told) + 1))  # every result journaled once
    gone = leaving.node_id[:8]
    assert gone in {_node(r) for r in rows}, "no evaluation ran on the node before it left"
    retried = [r for r in rows if r.attempts > 1]
    assert retried and all(_node(r) != gone for r in retried), "the lost evaluation re-ran on the node that left"
    assert not [r for r in rows if r.status == "failed"]
    starts = Counter(trace.read_text().split())
    for r in rows:  # an evaluation starts again only after its worker was lost, never after it finished
        assert 1 <= starts[r.fingerprint] <= r.attempts, (r.id, starts[r.fingerprint], r.attempts)


def test_cluster_a_node_that_joins_gets_workers(cluster, tmp_path):
    run_dir, trace = tmp_path / "run", tmp_path / "trace"
    proc = _start(cluster, run_dir, trace, 1.0, "search.max_evaluations=16")
    _wait_for_results(proc, run_dir, 3)
    joined = cluster.add_node(**NODE)
    _finish(proc)
    rows = sorted(_evaluated(run_dir), key=lambda r: r.told_seq)
    nodes = [_node(r) for r in rows]
    assert joined.node_id[:8] in nodes, "no evaluation ran on the node that joined"
    assert len(set(nodes)) == 2 and nodes.index(joined.node_id[:8]) >= 3


def test_cluster_search_from_the_command_line_spreads_over_nodes_that_have_no_data(tmp_path, shared_data_root,
                                                                                 monkeypatch):
    """The real evaluator on CIFAR-10 that only the driver can read: the nodes get it from the object store."""
    monkeypatch.setenv("EVONORM_DATA", str(tmp_path / "no-data-here"))  # what the nodes' processes inherit
    made = Cluster(initialize_head=True, head_node_args=NODE)
    try:
        made.add_node(**NODE)
        made.wait_for_nodes()
        run_dir = tmp_path / "run"
        overrides = [o for o in TINY_REAL + SMALL_SEARCH if not o.startswith(("data.synthetic", "executor.kind"))]
        args = ["--config", "quick", "--address", made.address, "--out", run_dir, "--quiet",
                "--set", "search.max_evaluations=4",
                "--set", "data.max_train=640", "--set", "data.download=false"]
        for item in overrides:
            args += ["--set", item]
        done = subprocess.run([sys.executable, "run_search.py", *map(str, args)], cwd=REPO, capture_output=True,
                              text=True, timeout=600, env=_env(EVONORM_DATA=str(shared_data_root)))
        assert done.returncode == 0, done.stderr
        listening = listening_names(os.getpid())  # the nodes' processes are this process's children
        assert any("raylet" in names for names in listening.values())
        assert set(listening) <= LOOPBACKS, f"the cluster listens beyond the loopback address: {listening}"
        nodes = {n.node_id[:8] for n in made.list_all_nodes()}
    finally:
        made.shutdown()
    rows = _evaluated(run_dir)
    assert all(r.status == "ok" and set(r.fitness) == {"resnet", "mobilenetv2"} for r in rows if r.role == "reference")
    assert all(r.finished for r in rows)
    assert {_node(r) for r in rows} == nodes and len(nodes) == 2


def test_cluster_that_fits_no_evaluation_fails_at_once_with_the_reason(cluster, tmp_path):
    args = ["--address", cluster.address, "--out", tmp_path / "run", "--quiet", "--set", "data.synthetic=true",
            "--set", "executor.cpus_per_eval=2"]
    done = subprocess.run([sys.executable, "run_search.py", "--config", "quick", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=_env())
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "no node of the Ray cluster can run one evaluation (executor.cpus_per_eval=2)" in done.stderr
    assert "127.0.0.1: 1 CPUs, 0 GPUs" in done.stderr and "127.0.0.1: 0 CPUs, 0 GPUs" in done.stderr
