"""Where evaluations run: Ray actors (a local instance or a cluster) or in-process, behind one small interface.

An executor has ``slots`` (how many evaluations it runs at once), ``submit(job)`` (only while ``in_flight <
slots``), ``wait(timeout)`` (the outcomes that finished, possibly none), ``abandon()`` (stop in-flight work
and hand its jobs back) and ``close()``. Workers receive plain jobs (a graph as YAML, or a reference layer's
name, and a seed) and return plain records; only the driver writes the journal.

Each Ray actor imports the config's ``search.plugins`` (``search/plugins.py``) and then builds one evaluator
when it starts, so the dataset is loaded once per worker, not per evaluation. A worker that dies (killed, out
of memory, node lost) is replaced and its evaluation re-run up to
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

from evaluator.evaluate import EvalRecord, Evaluator
from primitives import graph_from_yaml

from .plugins import import_plugins, plugin_paths, plugins_of
from .states import WORKER_LOST

__all__ = ["Job", "Outcome", "Executor", "EvaluatorFactory", "ExecutorError", "SerialExecutor", "RayExecutor", "make_executor",
           "run_all", "run_job", "local_ray_options", "SINGLE_MACHINE_ENV"]

log = logging.getLogger(__name__)

# Builds the evaluator a worker holds: called once per worker with the run's config.
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
    may lack."""

    def __init__(self, factory: EvaluatorFactory, cfg: Mapping[str, Any], paths: tuple[str, ...] = ()):
        import_plugins(plugins_of(cfg), "search.plugins (on a Ray worker)", paths)
        self._evaluator = factory(cfg)
        self._worker = worker_id()

    def ready(self) -> str:
        return self._worker

    def evaluate(self, job: Job) -> tuple[dict[str, Any], str]:
        return run_job(self._evaluator, job), self._worker


@dataclass
class _Running:
    slot: int
    job: Job
    attempt: int
    started: float


# Ray's switch for an instance confined to one machine (its macOS and Windows mode): every server of the node
# listens on 127.0.0.1, never on the machine's other interface. Ray reads it when it is imported.
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def local_ray_options(object_store_mb: int) -> dict[str, Any]:
    """``ray.init`` options of a local instance: no dashboard, a small object store. Set ``SINGLE_MACHINE_ENV``
    to 0 before importing Ray, so that the instance binds to loopback; Ray's token authentication (on by
    default) refuses other users of the machine."""
    return {"include_dashboard": False, "object_store_memory": object_store_mb << 20}


class RayExecutor:
    """Evaluations on Ray actors, each reserving ``cpus_per_eval`` CPUs and ``gpus_per_eval`` GPUs.

    Without ``executor.address`` it starts a local Ray instance (and shuts it down on ``close``); with one it
    joins that cluster, whose nodes must have this package installed. An instance already initialised in the
    process (tests, notebooks) is used as is.
    """

    def __init__(self, cfg: Mapping[str, Any], factory: EvaluatorFactory = Evaluator):
        if not cfg["executor"]["address"]:
            os.environ.setdefault(SINGLE_MACHINE_ENV, "0")
        import ray  # imported here: the serial executor and the readers of a journal do not need Ray

        import_plugins(plugins_of(cfg), "search.plugins")  # done already when the config came from load_config
        paths = plugin_paths(plugins_of(cfg))
        self._ray = ray
        ex = cfg["executor"]
        self._started_ray = False
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            if ex["address"]:
                ray.init(address=ex["address"], logging_level=logging.WARNING)
            else:
                ray.init(**local_ray_options(ex["object_store_mb"]), logging_level=logging.WARNING)
            self._started_ray = True
        self._max_retries = ex["max_retries"]
        self._hard_timeout = ex["hard_timeout"] or 2 * cfg["train"]["time_limit"] + 60
        self._actor_class = ray.remote(num_cpus=ex["cpus_per_eval"], num_gpus=ex["gpus_per_eval"],
                                       max_restarts=0)(_EvaluatorActor)
        self._new_actor = lambda: self._actor_class.remote(factory, cfg, paths)
        fitting = self._fitting_workers(ex["cpus_per_eval"], ex["gpus_per_eval"])
        self.slots = min(ex["num_workers"] or fitting, fitting)  # a worker beyond them would never start
        if ex["num_workers"] > fitting:
            log.warning("executor.num_workers=%d, but the cluster's resources fit %d at a time; starting %d",
                        ex["num_workers"], fitting, fitting)
        self._actors = [self._new_actor() for _ in range(self.slots)]
        try:
            workers = ray.get([a.ready.remote() for a in self._actors], timeout=START_TIMEOUT)
        except ray.exceptions.RayError as err:  # GetTimeoutError included
            resources = ray.cluster_resources()
            self.close()
            raise ExecutorError(f"the evaluator workers could not start within {START_TIMEOUT:.0f} s "
                                f"(cluster resources: {resources}): {_first_line(err)}") from None
        self._idle = list(range(self.slots))
        self._running: dict[Any, _Running] = {}
        log.info("%d Ray evaluator workers ready (%s)", self.slots, ", ".join(workers))

    def _fitting_workers(self, cpus: float, gpus: float) -> int:
        """As many workers as the cluster's CPUs (and GPUs, when evaluations ask for them) allow."""
        total = self._ray.cluster_resources()
        count = int(total.get("CPU", 1) // cpus)
        if gpus > 0:
            count = min(count, int(total.get("GPU", 0) // gpus))
            if count == 0:
                raise ExecutorError(f"executor.gpus_per_eval={gpus}, but the Ray cluster has "
                                    f"{total.get('GPU', 0)} GPUs")
        return max(1, count)

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def submit(self, job: Job, attempt: int = 1) -> None:
        if not self._idle:
            raise RuntimeError(f"all {self.slots} Ray workers are busy; wait() before submitting candidate "
                               f"{job.candidate_id}")
        slot = self._idle.pop()
        ref = self._actors[slot].evaluate.remote(job)
        self._running[ref] = _Running(slot, job, attempt, time.monotonic())

    def _replace(self, slot: int) -> None:
        self._ray.kill(self._actors[slot], no_restart=True)
        self._actors[slot] = self._new_actor()
        self._idle.append(slot)

    def wait(self, timeout: Optional[float] = None) -> list[Outcome]:
        ray = self._ray
        if not self._running:
            return []
        ready, _ = ray.wait(list(self._running), num_returns=1, timeout=timeout)
        if ready:  # collect everything else that has finished too
            ready, _ = ray.wait(list(self._running), num_returns=len(self._running), timeout=0)
        outcomes = []
        for ref in ready:
            run = self._running.pop(ref)
            try:
                record, worker = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as err:
                self._replace(run.slot)
                if run.attempt <= self._max_retries:
                    log.warning("worker lost while evaluating candidate %d (attempt %d of %d); retrying: %s",
                                run.job.candidate_id, run.attempt, self._max_retries + 1, _first_line(err))
                    self.submit(run.job, run.attempt + 1)
                    continue
                lost = EvalRecord.for_reason(WORKER_LOST, f"worker lost {run.attempt} times: {_first_line(err)}")
                record, worker = lost.to_dict(), "lost"
            except ray.exceptions.RayError as err:
                self._idle.append(run.slot)
                record, worker = EvalRecord.for_reason("exception", f"Ray: {_first_line(err)}").to_dict(), "unknown"
            else:
                self._idle.append(run.slot)
            outcomes.append(Outcome(run.job, EvalRecord.from_dict(record), worker, run.attempt))
        outcomes.extend(self._kill_overdue())
        return outcomes

    def _kill_overdue(self) -> list[Outcome]:
        now = time.monotonic()
        outcomes = []
        for ref, run in list(self._running.items()):
            if now - run.started > self._hard_timeout:
                del self._running[ref]
                self._replace(run.slot)
                detail = f"worker killed after {now - run.started:.0f} s (executor.hard_timeout={self._hard_timeout:g})"
                outcomes.append(Outcome(run.job, EvalRecord.for_reason("timeout", detail), "killed", run.attempt))
        return outcomes

    def abandon(self) -> list[Job]:
        """Kill the busy workers and hand their jobs back; the run is stopping, so they are not replaced."""
        jobs = [run.job for run in self._running.values()]
        for run in self._running.values():
            self._ray.kill(self._actors[run.slot], no_restart=True)
        self._running.clear()
        return jobs

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor, no_restart=True)
        self._actors, self._running, self._idle = [], {}, []
        if self._started_ray:
            self._ray.shutdown()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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
