"""Where evaluations run: Ray actors (a local instance or a cluster) or in-process, behind one small interface.

An executor has ``slots`` (how many evaluations it runs at once), ``submit(job)`` (only while ``in_flight <
slots``), ``wait(timeout)`` (the outcomes that finished, possibly none), ``abandon()`` (stop in-flight work
and hand its jobs back) and ``close()``. Workers receive plain jobs (a graph as YAML, or a reference layer's
name, and a seed) and return plain records; only the driver writes the journal.

Each Ray actor imports the config's ``search.plugins`` (``search/plugins.py``) and then builds one evaluator
when it starts, from the dataset that the driver loaded once and put in Ray's object store. The workers
follow the cluster's nodes as they join and leave. A worker that dies (killed, out of memory, node lost) is
replaced and its evaluation re-run up to
``executor.max_retries`` times, then recorded as ``failed`` / ``worker_lost``; an evaluation that outlives
``executor.hard_timeout`` has its worker killed and is recorded as ``failed`` / ``timeout``. The serial
executor runs evaluations in the driver's process, one at a time: for debugging and fully deterministic runs.
"""
from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Protocol

from evaluator.data import load_dataset
from evaluator.evaluate import EvalRecord, Evaluator
from primitives import graph_from_yaml

from .plugins import import_plugins, plugin_paths, plugins_of
from .states import WORKER_LOST

__all__ = ["Job", "Outcome", "Executor", "EvaluatorFactory", "ExecutorError", "SerialExecutor", "RayExecutor", "make_executor",
           "run_all", "run_job", "local_ray_options", "SINGLE_MACHINE_ENV"]

log = logging.getLogger(__name__)

# Builds the evaluator a worker holds: called once per worker with the run's config and, on Ray, ``data=`` the
# dataset that the driver loaded (the serial executor leaves the loading to the evaluator).
EvaluatorFactory = Callable[[Mapping[str, Any]], Any]
# How long workers may take to start (import torch, load the data) before the run gives up.
START_TIMEOUT = 600.0


class ExecutorError(RuntimeError):
    """The workers cannot run evaluations (they fail to start, or the cluster lacks the resources)."""


@dataclass(frozen=True)
class Job:
    """One evaluation: a graph (YAML) or, for reference layers that are not graphs, a name."""

    candidate_id: int
    seed: int
    graph_yaml: Optional[str] = None
    name: Optional[str] = None

    @classmethod
    def of(cls, candidate_id: int, seed: int, graph_yaml: Optional[str], name: Optional[str]) -> "Job":
        """The job for a layer: its graph when it has one, else (a reference such as ``bn_relu``) its name."""
        return cls(candidate_id, seed, graph_yaml, None if graph_yaml else name)


@dataclass(frozen=True)
class Outcome:
    job: Job
    record: EvalRecord
    worker: str
    attempts: int


class Executor(Protocol):
    """Where the driver and ``search.rerank`` send evaluations (see the module docstring)."""

    slots: int  # how many evaluations it runs at once

    @property
    def in_flight(self) -> int:
        """Jobs submitted whose outcome has not been returned by ``wait`` yet."""

    def submit(self, job: Job) -> None:
        """Start ``job``; only while ``in_flight < slots``."""

    def wait(self, timeout: Optional[float] = None) -> list[Outcome]:
        """The outcomes that finished within ``timeout`` seconds, possibly none."""

    def abandon(self) -> list[Job]:
        """Stop the work in flight and hand its jobs back."""

    def close(self) -> None:
        """Release the workers (and a Ray instance this executor started)."""


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_job(evaluator: Any, job: Job) -> dict[str, Any]:
    """Evaluate one job with ``evaluator``; the record as a plain dict. An exception that escapes the
    evaluator (which should never raise) becomes a failed record instead of ending the search."""
    try:
        layer = graph_from_yaml(job.graph_yaml, f"candidate {job.candidate_id}") if job.graph_yaml else job.name
        return evaluator.evaluate(layer, job.seed).to_dict()
    except Exception as err:  # noqa: BLE001 -- one bad candidate must not stop the search
        where = traceback.extract_tb(err.__traceback__)[-1]
        return EvalRecord.for_reason(
            "exception", f"{type(err).__name__}: {err} (at {where.filename}:{where.lineno})").to_dict()


class SerialExecutor:
    """Evaluations in the driver's process, one at a time."""

    slots = 1

    def __init__(self, cfg: Mapping[str, Any], factory: EvaluatorFactory = Evaluator):
        import_plugins(plugins_of(cfg), "search.plugins")  # done already when the config came from load_config
        self._evaluator = factory(cfg)
        self._queue: deque[Job] = deque()
        self._worker = f"serial@{worker_id()}"

    @property
    def in_flight(self) -> int:
        return len(self._queue)

    def submit(self, job: Job) -> None:
        if self._queue:
            raise RuntimeError(f"the serial executor runs one evaluation at a time; candidate "
                               f"{self._queue[0].candidate_id} is still queued")
        self._queue.append(job)

    def wait(self, timeout: Optional[float] = None) -> list[Outcome]:
        if not self._queue:
            return []
        job = self._queue[0]
        record = EvalRecord.from_dict(run_job(self._evaluator, job))
        self._queue.popleft()
        return [Outcome(job, record, self._worker, attempts=1)]

    def abandon(self) -> list[Job]:
        jobs = list(self._queue)
        self._queue.clear()
        return jobs

    def close(self) -> None:
        self._queue.clear()


class _EvaluatorActor:
    """The body of a Ray actor: one evaluator, built once, serving evaluations. The config's plug-ins are
    imported first, from the folders the driver found them in (``paths``), which the actor's own ``sys.path``
    may lack; the dataset arrives from the object store, so the node needs no copy of it."""

    def __init__(self, factory: EvaluatorFactory, cfg: Mapping[str, Any], data: Any, paths: tuple[str, ...] = ()):
        import_plugins(plugins_of(cfg), "search.plugins (on a Ray worker)", paths)
        self._evaluator = factory(cfg, data=data)
        import ray
        self._node = ray.get_runtime_context().get_node_id()
        self._worker = f"{worker_id()}@{self._node[:8]}"

    def ready(self) -> tuple[str, str]:
        return self._worker, self._node

    def evaluate(self, job: Job) -> tuple[dict[str, Any], str]:
        return run_job(self._evaluator, job), self._worker


@dataclass(eq=False)
class _Worker:
    """One evaluator actor: ``started`` is the reference of its ``ready`` call until it has answered."""

    actor: Any
    started: Any
    name: str = ""
    node: str = ""


@dataclass
class _Running:
    worker: _Worker
    job: Job
    attempt: int
    started: float


# Ray's switch for an instance confined to one machine (its macOS and Windows mode): every server of the node
# listens on 127.0.0.1, never on the machine's other interface. Ray reads it when it is imported.
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# How often the executor reads the cluster's nodes, to start workers on new ones and forget those of lost ones.
FOLLOW_SECONDS = 2.0


def local_ray_options(object_store_mb: int) -> dict[str, Any]:
    """``ray.init`` options of a local instance: no dashboard, a small object store. Set ``SINGLE_MACHINE_ENV``
    to 0 before importing Ray, so that the instance binds to loopback; Ray's token authentication (on by
    default) refuses other users of the machine."""
    return {"include_dashboard": False, "object_store_memory": object_store_mb << 20}


def dataset_mb(data: Any) -> int:
    """The size of a ``Dataset``'s tensors, in MiB (rounded up)."""
    tensors = [v for v in vars(data).values() if hasattr(v, "nbytes")]
    return -(-sum(t.nbytes for t in tensors) // (1 << 20))


def node_capacity(resources: Mapping[str, float], cpus: float, gpus: float) -> int:
    """How many evaluations of ``cpus`` CPUs and ``gpus`` GPUs fit on a node with ``resources`` at once."""
    count = int(resources.get("CPU", 0) / cpus + 1e-9)
    if gpus > 0:
        count = min(count, int(resources.get("GPU", 0) / gpus + 1e-9))
    return count


class RayExecutor:
    """Evaluations on Ray actors, each reserving ``cpus_per_eval`` CPUs and ``gpus_per_eval`` GPUs.

    Without ``executor.address`` it starts a local Ray instance (and shuts it down on ``close``); with one it
    joins that cluster. An instance already initialised in the process (tests, notebooks) is used as is. The
    driver loads the dataset once and puts it in the object store, and ``executor.runtime_env`` (working_dir,
    py_modules, pip, env_vars) brings the code, so a node needs neither the data nor this package.

    The workers follow the cluster: every few seconds the executor reads the alive nodes, starts workers
    where evaluations fit (up to ``executor.num_workers`` when it is set) and forgets those of lost nodes.
    Jobs wait in a queue for an idle worker, and the evaluation of a lost worker goes back to the front of it.
    """

    def __init__(self, cfg: Mapping[str, Any], factory: EvaluatorFactory = Evaluator):
        ex = cfg["executor"]
        if not ex["address"]:
            os.environ.setdefault(SINGLE_MACHINE_ENV, "0")
        import ray  # imported here: the serial executor and the readers of a journal do not need Ray

        import_plugins(plugins_of(cfg), "search.plugins")  # done already when the config came from load_config
        paths = plugin_paths(plugins_of(cfg))
        data = load_dataset(cfg["data"], cfg["seed"])  # here, once: a DataError before any worker starts
        self._ray = ray
        self._started_ray = False
        runtime_env = ex["runtime_env"]
        if not ray.is_initialized():
            self._started_ray = True
            self._init(ex, dataset_mb(data))
            runtime_env = None  # the job's own, set by ray.init
        self._cpus, self._gpus = ex["cpus_per_eval"], ex["gpus_per_eval"]
        self._cap = ex["num_workers"]
        self._max_retries = ex["max_retries"]
        self._hard_timeout = ex["hard_timeout"] or 2 * cfg["train"]["time_limit"] + 60
        options = {"runtime_env": runtime_env} if runtime_env else {}
        actor_class = ray.remote(num_cpus=self._cpus, num_gpus=self._gpus, max_restarts=0, **options)(_EvaluatorActor)
        data_ref = ray.put(data)
        del data
        self._new_actor = lambda: actor_class.remote(factory, cfg, data_ref, paths)
        self._workers: list[_Worker] = []
        self._idle: deque[_Worker] = deque()
        self._running: dict[Any, _Running] = {}
        self._queue: deque[tuple[Job, int]] = deque()  # (job, attempt) waiting for an idle worker
        self._followed = -float("inf")
        self._starved = False
        self._lost = False  # a worker was dropped since the last reading of the nodes
        nodes = self._alive_nodes()
        fitting = self._fitting(nodes)
        if fitting == 0:
            self.close()
            raise ExecutorError(self._no_room(nodes))
        if self._cap > fitting:
            log.warning("executor.num_workers=%d, but the cluster's resources fit %d at a time; starting %d",
                        self._cap, fitting, fitting)
        self._follow(force=True)
        self._await_start()

    def _init(self, ex: Mapping[str, Any], data_mb: int) -> None:
        ray = self._ray
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        options: dict[str, Any] = {"logging_level": logging.WARNING}
        if ex["runtime_env"]:
            options["runtime_env"] = dict(ex["runtime_env"])
        try:
            if ex["address"]:
                ray.init(address=ex["address"], **options)
            else:  # "local": a new instance, never one that `ray start` left running here; room for the dataset
                ray.init(address="local", **local_ray_options(max(ex["object_store_mb"], 2 * data_mb + 64)),
                         **options)
        except Exception as err:  # noqa: BLE001 -- Ray raises many kinds; the user needs the setting that failed
            where = f"join the Ray cluster at executor.address={ex['address']!r}" if ex["address"] else \
                "start a local Ray instance"
            if ex["runtime_env"]:
                where += f" with executor.runtime_env={dict(ex['runtime_env'])!r}"
            raise ExecutorError(f"could not {where}: {type(err).__name__}: {_first_line(err)}") from None

    # --- following the cluster -------------------------------------------------------------------------
    def _alive_nodes(self) -> dict[str, Mapping[str, Any]]:
        return {n["NodeID"]: n for n in self._ray.nodes() if n["Alive"]}

    def _fitting(self, nodes: Mapping[str, Mapping[str, Any]]) -> int:
        return sum(node_capacity(n["Resources"], self._cpus, self._gpus) for n in nodes.values())

    def _no_room(self, nodes: Mapping[str, Mapping[str, Any]]) -> str:
        ask = f"executor.cpus_per_eval={self._cpus:g}" + (f", gpus_per_eval={self._gpus:g}" if self._gpus else "")
        have = "; ".join(f"{n['NodeManagerAddress']}: {n['Resources'].get('CPU', 0):g} CPUs, "
                         f"{n['Resources'].get('GPU', 0):g} GPUs" for n in nodes.values()) or "no alive node"
        return (f"no node of the Ray cluster can run one evaluation ({ask}); the nodes have {have}. Lower "
                "executor.cpus_per_eval / gpus_per_eval or add a larger node")

    def _follow(self, force: bool = False) -> None:
        """Forget the workers of lost nodes; start or stop workers to match what the alive nodes fit."""
        now = time.monotonic()
        if not force and now - self._followed < FOLLOW_SECONDS:
            return
        self._followed = now
        nodes = self._alive_nodes()
        for w in [w for w in self._workers if w.node and w.node not in nodes and not self._busy(w)]:
            self._drop(w, "its node left the cluster")  # busy ones fail their evaluation, handled in wait
        fitting = self._fitting(nodes)
        target = min(self._cap, fitting) if self._cap else fitting
        if target == 0 and not self._starved:
            log.warning(self._no_room(nodes) + "; waiting for the cluster to grow")
        self._starved = target == 0
        while len(self._workers) < target:
            actor = self._new_actor()
            self._workers.append(_Worker(actor, actor.ready.remote()))
        surplus = [w for w in self._workers if not self._busy(w)][::-1][:max(0, len(self._workers) - target)]
        for w in surplus:  # the cluster shrank: the newest idle or starting ones go first
            self._drop(w, "the cluster shrank")

    def _busy(self, worker: _Worker) -> bool:
        return any(run.worker is worker for run in self._running.values())

    def _drop(self, worker: _Worker, why: str) -> None:
        log.info("dropping Ray worker %s: %s", worker.name or "(starting)", why)
        self._lost = True
        self._workers.remove(worker)
        if worker in self._idle:
            self._idle.remove(worker)
        self._ray.kill(worker.actor, no_restart=True)

    def _starting(self) -> dict[Any, _Worker]:
        return {w.started: w for w in self._workers if w.started is not None}

    def _collect_started(self, timeout: float = 0.0) -> None:
        """Move the workers that have started to the idle queue. A worker that failed to build its evaluator
        ends the run (every worker would); one lost with its node is replaced by ``_follow``."""
        starting = self._starting()
        if not starting:
            return
        done, _ = self._ray.wait(list(starting), num_returns=len(starting), timeout=timeout)
        for ref in done:
            worker = starting[ref]
            worker.started = None
            try:
                worker.name, worker.node = self._ray.get(ref)
            except self._ray.exceptions.RayActorError as err:
                self._drop(worker, _first_line(err))
                if getattr(err, "actor_init_failed", False):
                    raise ExecutorError(f"an evaluator worker failed to start: {_last_line(err)}") from None
                continue
            self._idle.append(worker)
            log.info("Ray evaluator worker %s ready", worker.name)

    def _await_start(self) -> None:
        """Wait for the first workers, so that a run whose workers cannot start fails at once."""
        ray = self._ray
        starting = self._starting()
        try:
            ray.get(list(starting), timeout=START_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            resources = ray.cluster_resources()
            self.close()
            raise ExecutorError(f"the evaluator workers could not start within {START_TIMEOUT:.0f} s "
                                f"(cluster resources: {resources})") from None
        except ray.exceptions.RayError:
            pass  # _collect_started names it
        try:
            self._collect_started()
        except ExecutorError:
            self.close()
            raise
        log.info("%d Ray evaluator workers ready (%s)", len(self._idle), ", ".join(w.name for w in self._idle))

    # --- the Executor interface --------------------------------------------------------------------------
    @property
    def slots(self) -> int:
        """The workers, started or starting; at least 1, so that a run whose cluster has lost every node keeps
        one job queued and waits for a node rather than ending."""
        self._follow()
        return max(1, len(self._workers))

    @property
    def in_flight(self) -> int:
        return len(self._running) + len(self._queue)

    def submit(self, job: Job) -> None:
        if self.in_flight >= self.slots:
            raise RuntimeError(f"all {self.slots} Ray workers are busy; wait() before submitting candidate "
                               f"{job.candidate_id}")
        self._queue.append((job, 1))
        self._dispatch()

    def _dispatch(self) -> None:
        while self._queue and self._idle:
            job, attempt = self._queue.popleft()
            worker = self._idle.popleft()
            self._running[worker.actor.evaluate.remote(job)] = _Running(worker, job, attempt, time.monotonic())

    def wait(self, timeout: Optional[float] = None) -> list[Outcome]:
        ray = self._ray
        if not self.in_flight:
            return []
        self._follow()
        watched = list(self._running) + list(self._starting())
        limit = FOLLOW_SECONDS if timeout is None else min(timeout, FOLLOW_SECONDS)
        if watched:
            ray.wait(watched, num_returns=1, timeout=limit)
        else:  # jobs queued, no worker alive or starting: the cluster has to grow first
            time.sleep(limit)
        outcomes = []
        if self._running:
            done, _ = ray.wait(list(self._running), num_returns=len(self._running), timeout=0)
            for ref in done:
                outcome = self._outcome(ref)
                if outcome is not None:
                    outcomes.append(outcome)
        outcomes.extend(self._kill_overdue())
        self._follow(force=self._lost)  # replace lost workers now, not at the next reading
        self._lost = False
        self._collect_started()
        self._dispatch()
        return outcomes

    def _outcome(self, ref: Any) -> Optional[Outcome]:
        """The outcome of a finished evaluation, or None when its worker was lost and it is queued again."""
        ray = self._ray
        run = self._running.pop(ref)
        try:
            record, worker = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as err:
            self._drop(run.worker, _first_line(err))
            if run.attempt <= self._max_retries:
                log.warning("worker lost while evaluating candidate %d (attempt %d of %d); retrying: %s",
                            run.job.candidate_id, run.attempt, self._max_retries + 1, _first_line(err))
                self._queue.appendleft((run.job, run.attempt + 1))
                return None
            lost = EvalRecord.for_reason(WORKER_LOST, f"worker lost {run.attempt} times: {_first_line(err)}")
            record, worker = lost.to_dict(), "lost"
        except ray.exceptions.RayError as err:
            self._idle.append(run.worker)
            record, worker = EvalRecord.for_reason("exception", f"Ray: {_first_line(err)}").to_dict(), "unknown"
        else:
            self._idle.append(run.worker)
        return Outcome(run.job, EvalRecord.from_dict(record), worker, run.attempt)

    def _kill_overdue(self) -> list[Outcome]:
        now = time.monotonic()
        outcomes = []
        for ref, run in list(self._running.items()):
            if now - run.started > self._hard_timeout:
                del self._running[ref]
                self._drop(run.worker, "overdue")
                detail = f"worker killed after {now - run.started:.0f} s (executor.hard_timeout={self._hard_timeout:g})"
                outcomes.append(Outcome(run.job, EvalRecord.for_reason("timeout", detail), "killed", run.attempt))
        return outcomes

    def abandon(self) -> list[Job]:
        """Kill the busy workers and hand their jobs (and the queued ones) back; the run is stopping, so they
        are not replaced."""
        jobs = [run.job for run in self._running.values()] + [job for job, _ in self._queue]
        for run in self._running.values():
            self._ray.kill(run.worker.actor, no_restart=True)
        self._running.clear()
        self._queue.clear()
        return jobs

    def close(self) -> None:
        for worker in self._workers:
            self._ray.kill(worker.actor, no_restart=True)
        self._workers, self._running, self._queue, self._idle = [], {}, deque(), deque()
        if self._started_ray:
            self._ray.shutdown()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _last_line(err: BaseException) -> str:
    """The last line of Ray's report of an exception raised on a worker: the exception itself."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def run_all(executor: Executor, jobs: Iterable[Job], poll: float = 5.0) -> Iterator[Outcome]:
    """Every job on ``executor``, its slots kept busy; outcomes in the order they finish. ``poll`` bounds the
    wait between outcomes, so a caller's progress display stays live."""
    pending = deque(jobs)
    while pending or executor.in_flight:
        while pending and executor.in_flight < executor.slots:
            executor.submit(pending.popleft())
        yield from executor.wait(timeout=poll)


def make_executor(cfg: Mapping[str, Any], factory: EvaluatorFactory = Evaluator) -> Executor:
    """The executor that ``executor.kind`` names."""
    kind = cfg["executor"]["kind"]
    return SerialExecutor(cfg, factory) if kind == "serial" else RayExecutor(cfg, factory)
