"""The search driver: propose, deduplicate, dispatch, record. The one place where the algorithm, the workers
and the journal meet.

The loop is asynchronous and steady-state: whenever a worker is free, the next candidate is proposed (the
references first, then the algorithm's proposals), looked up in the journal by structural hash and then by
functional fingerprint, and either dispatched or answered from the earlier result (a ``duplicate`` row; if
the earlier evaluation is still running, the duplicate waits for it). Every proposal and every result is
journaled as it happens, and results reach the algorithm in the journal's ``told_seq`` order, so
``resume`` rebuilds the state by replay (see ``search.state``) and evaluates again whatever was in flight.

Budgets (``search.max_evaluations``, ``max_time``, ``max_steps``) stop proposals; evaluations in flight finish,
except when time is up, when they are abandoned. Ctrl-C abandons in-flight work, records it, and re-raises.
A journal write that fails stops the run as it stands (in flight stays ``running``, as after a ``kill -9``).
The driver holds the run directory's lock (``search.runlock``) throughout, and backs the journal up every
``search.backup_every`` results and at every stop.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from evaluator.config import dump_config
from evaluator.data import check_val_size, read_cifar10
from evaluator.evaluate import Evaluator, Status
from evaluator.fingerprint import fingerprint
from evaluator.models import norm_options
from primitives import seeds as seed_graphs
from primitives import LayerGraph, graph_to_yaml

from .config import check_resume_overrides, load_config
from .executor import EvaluatorFactory, Executor, Job, Outcome, make_executor
from .hurdles import clears_hurdle, combine_stages
from .journal import BACKUP_FILE, JOURNAL_FILE, CandidateRow, Journal, JournalError, JournalWriteError, restore_backup
from .callbacks import Callbacks
from .runlock import RunLock
from .tensorboard import TensorBoardLogger, require_tensorboard
from .states import Role, State
from .results import CONFIG_FILE, RunResult, best_candidate, describe_fitness, summarize, wall_time
from .state import Algorithm, evaluation_seed, make_algorithm, proposal_rng, replay, tell_row

__all__ = ["run", "resume", "default_run_dir", "prepare_data"]

log = logging.getLogger(__name__)

# Proposals in a row that were all duplicates before the search counts the op space as exhausted.
EXHAUSTED_AFTER = 1000
# Longest wait for a result before the loop looks at the clock again.
POLL_SECONDS = 5.0


def run(config: Mapping[str, Any] | str | os.PathLike, run_dir: str | os.PathLike | None = None, *,
        evaluator_factory: EvaluatorFactory = Evaluator, progress: bool = False,
        callbacks: Sequence[object] = ()) -> RunResult:
    """Run a search from a config (a validated dict from ``search.load_config``, or a path) into ``run_dir``
    (default ``runs/<algorithm>-<time>``), which must not hold a journal yet. ``callbacks`` watch it
    (``search.callbacks``)."""
    cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else dict(config)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    watchers = _callbacks(cfg, callbacks)
    prepare_data(cfg)
    with RunLock(run_dir):
        journal = Journal.create(run_dir, {"seed": cfg["seed"], "algorithm": cfg["search"]["algorithm"]})
        _write_config(run_dir, cfg)
        return _drive(cfg, run_dir, journal, evaluator_factory, progress, watchers)


def default_run_dir(cfg: Mapping[str, Any]) -> Path:
    return Path("runs") / time.strftime(f"{cfg['search']['algorithm']}-%Y%m%d-%H%M%S")


def resume(run_dir: str | os.PathLike, overrides: tuple[str, ...] | list[str] = (), *,
           evaluator_factory: EvaluatorFactory = Evaluator, progress: bool = False,
           from_backup: bool = False, callbacks: Sequence[object] = ()) -> RunResult:
    """Continue an interrupted run; ``overrides`` may change budgets, the data root, the executor and the
    logging. ``from_backup`` first puts the journal's last backup in its place (after damage)."""
    run_dir = Path(run_dir)
    wanted = run_dir / (BACKUP_FILE if from_backup else JOURNAL_FILE)
    if not wanted.is_file():  # before the lock, which would make a directory of a mistyped path
        raise JournalError(f"no {'backup of a journal' if from_backup else 'journal'} at {wanted}; "
                           f"is {os.fspath(run_dir)!r} a run directory?")
    with RunLock(run_dir):
        if from_backup:
            _refuse_intact(run_dir)
            log.warning("the damaged journal is kept as %s", restore_backup(run_dir))
        journal = Journal.open(run_dir)
        try:
            check_resume_overrides(overrides, run_dir)
            cfg = load_config(run_dir / CONFIG_FILE, overrides)
            watchers = _callbacks(cfg, callbacks)
            prepare_data(cfg)
        except BaseException:
            journal.close()
            raise
        _write_config(run_dir, cfg)
        return _drive(cfg, run_dir, journal, evaluator_factory, progress, watchers)


def _callbacks(cfg: Mapping[str, Any], callbacks: Sequence[object]) -> Callbacks:
    """The caller's callbacks, then the built-in ones the config asks for."""
    built_in = []
    if cfg["logging"]["tensorboard"]:
        require_tensorboard()
        built_in.append(TensorBoardLogger())
    return Callbacks([*callbacks, *built_in])


def _refuse_intact(run_dir: Path) -> None:
    """``--from-backup`` is for a journal that cannot be read: on a sound one it would drop what was told
    after the backup."""
    if not (run_dir / JOURNAL_FILE).is_file():
        return
    try:
        Journal.open(run_dir, readonly=True).close()
    except JournalError:
        return
    raise JournalError(f"{run_dir / JOURNAL_FILE} is intact: resume it without --from-backup, which would drop "
                       "the results told since the backup")


def prepare_data(cfg: Mapping[str, Any]) -> None:
    """Find (or download, once, before any worker starts) the dataset, failing early with the evaluator's
    message when it is missing or its validation split leaves nothing to train on."""
    data = cfg["data"]
    num_images = data["synthetic_size"]
    if not data["synthetic"]:
        (train_x, _), _ = read_cifar10(data["root"], data["download"])
        num_images = len(train_x)
    check_val_size(data, num_images)


def _write_config(run_dir: Path, cfg: Mapping[str, Any]) -> None:
    tmp = run_dir / f".{CONFIG_FILE}.tmp"
    tmp.write_text(dump_config(cfg))
    os.replace(tmp, run_dir / CONFIG_FILE)


def _drive(cfg, run_dir: Path, journal: Journal, factory: EvaluatorFactory, progress: bool,
           callbacks: Callbacks) -> RunResult:
    session = journal.start_session(socket.gethostname())
    started = time.monotonic()  # the time budget counts the workers' start-up too
    stop = "interrupted"
    try:
        callbacks.call("on_start", run_dir, cfg, journal.rows())
        executor = make_executor(cfg, factory)
        try:
            with logging_redirect_tqdm() if progress else nullcontext():
                stop = _Driver(cfg, journal, make_algorithm(cfg), executor, started, progress, callbacks).loop()
        finally:
            executor.close()
        rows = journal.rows()
        return RunResult(run_dir, stop, summarize(rows, journal.sessions(), cfg), best_candidate(rows),
                         {r.name: r for r in rows if r.is_reference})
    except BaseException as err:
        stop = "interrupted" if isinstance(err, KeyboardInterrupt) else f"error: {type(err).__name__}"
        if not isinstance(err, JournalWriteError):
            _abandon_running(journal)
        raise
    finally:
        try:
            callbacks.call("on_stop", stop)
        finally:
            _close_session(journal, session, stop)


def _close_session(journal: Journal, session: int, stop: str) -> None:
    """End the session, back the journal up and close it. When the disk refuses, the session stays open and
    the backup is the previous one: a resumed run reads that as a ``kill -9``."""
    try:
        journal.end_session(session, stop)
        journal.backup()
    except JournalWriteError as err:
        if stop != f"error: {JournalWriteError.__name__}":  # else the error on its way up says it
            log.warning("%s", err)
    finally:
        journal.close()


def _abandon_running(journal: Journal) -> None:
    """Record every candidate still marked running as abandoned (a resumed run evaluates it again)."""
    for row in journal.rows():
        if row.status is State.RUNNING:
            journal.mark_abandoned(row.id, "in flight when the run stopped")


class _Driver:
    def __init__(self, cfg: Mapping[str, Any], journal: Journal, algorithm: Algorithm, executor: Executor, started: float,
                 progress: bool, callbacks: Callbacks):
        self.cfg = cfg
        self.callbacks = callbacks
        self.budget = cfg["search"]
        self.references: list[str] = list(cfg["search"]["references"])
        self.journal = journal
        self.algorithm = algorithm
        self.executor = executor
        self.started = started
        self.stop: Optional[str] = None
        self.backlog: deque[Job] = deque()   # journaled but not yet dispatched (resumed work, next stages)
        self.num_stages: int = cfg["search"]["stages"]
        self.waiting: dict[int, list[int]] = {}  # running original -> duplicates waiting for its result
        rows = journal.rows()
        search_rows = [r for r in rows if not r.is_reference]
        self.next_id = rows[-1].id + 1 if rows else 1
        self.num_references = len(rows) - len(search_rows)
        self.num_proposed = len(search_rows)
        self.evaluations = sum(1 for r in search_rows if r.duplicate_of is None)
        self.steps = sum(r.steps for r in search_rows)
        self.last_dispatched = max((r.id for r in rows if r.duplicate_of is None), default=0)
        self.elapsed_before = wall_time(journal.sessions()[:-1], rows)
        self.best = best_candidate(rows)
        self.counts = {k: sum(1 for r in search_rows if r.status is k)
                       for k in (State.REJECTED, State.FAILED, State.DUPLICATE)}
        self.bar = tqdm(total=self.budget["max_evaluations"] or None, desc="search", unit="eval",
                        initial=sum(1 for r in search_rows if r.duplicate_of is None and r.finished),
                        disable=not progress, dynamic_ncols=True)
        replay(algorithm, rows)
        self._revive(rows)

    # --- resuming -------------------------------------------------------------------------------------
    def _revive(self, rows: list[CandidateRow]) -> None:
        """Queue what was in flight when the run stopped: evaluations again, duplicates behind their original."""
        by_id = {r.id: r for r in rows}
        unfinished = [r for r in rows if not r.status.finished]
        for row in unfinished:
            if row.duplicate_of is None:
                self._restart(row)
        for row in unfinished:
            if row.duplicate_of is None:
                continue
            original = by_id[row.duplicate_of]
            if original.status.reusable:
                self._answer_duplicate(row.id, original)
            elif original.status is State.FAILED:
                self._evaluate_instead(row)
            else:
                self.journal.mark_running(row.id)
                self.waiting.setdefault(original.id, []).append(row.id)

    def _evaluate_instead(self, row: CandidateRow) -> None:
        """Evaluate a duplicate itself: its original failed, which says nothing about the function."""
        self.evaluations += 1
        self._restart(row, duplicate_of=None)

    def _restart(self, row: CandidateRow, **changes: Any) -> None:
        """Evaluate ``row`` again, from the stage after the last one that cleared its hurdle."""
        self.journal.mark_running(row.id, **changes)
        stage = 1 + len(self.journal.stages(row.id)) if self.num_stages > 1 else 1
        self.backlog.append(Job.of(row.id, self._eval_seed(row.id, stage), row.graph_yaml, row.name))

    # --- the loop -------------------------------------------------------------------------------------
    def loop(self) -> str:
        with self.bar:
            self._show()
            while True:
                self._fill()
                if not self.executor.in_flight:
                    break
                for outcome in self.executor.wait(timeout=min(POLL_SECONDS, max(0.0, self._time_left()))):
                    self._finish(outcome)
                if self._time_left() <= 0 and self.executor.in_flight:
                    self.stop = "max_time"
                    for job in self.executor.abandon():
                        self.journal.mark_abandoned(job.candidate_id, "in flight when search.max_time ran out")
                    break
        _abandon_running(self.journal)  # duplicates whose original was abandoned
        return self.stop

    def _time_left(self) -> float:
        if not self.budget["max_time"]:
            return float("inf")
        return self.budget["max_time"] - self.elapsed_before - (time.monotonic() - self.started)

    def _exhausted(self) -> Optional[str]:
        """The budget that stops proposals, if any."""
        b = self.budget
        if b["max_evaluations"] and self.evaluations >= b["max_evaluations"]:
            return "max_evaluations"
        if b["max_steps"] and self.steps >= b["max_steps"]:
            return "max_steps"
        if self._time_left() <= 0:
            return "max_time"
        if self.next_id - self.last_dispatched > EXHAUSTED_AFTER:
            log.warning("the last %d proposals were all duplicates; stopping", EXHAUSTED_AFTER)
            return "exhausted"
        return None

    def _fill(self) -> None:
        while self.executor.in_flight < self.executor.slots:
            if self.backlog:
                self._dispatch(self.backlog.popleft())
            elif self.stop is None and self.num_references < len(self.references):
                self._propose_reference()
            elif self.stop is None:
                self.stop = self._exhausted()
                if self.stop is None:
                    self._propose()
            else:
                return

    # --- proposing ------------------------------------------------------------------------------------
    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def _propose_reference(self) -> None:
        name = self.references[self.num_references]
        self.num_references += 1
        graph = seed_graphs.get(name) if name in seed_graphs.names() else None
        candidate_id = self._new_id()
        self._insert(candidate_id, Role.REFERENCE, graph, name=name, **self._identity(graph))
        self._dispatch(self._job(candidate_id, graph, name))

    def _propose(self) -> None:
        candidate_id = self._new_id()
        proposal = self.algorithm.ask(proposal_rng(self.cfg["seed"], candidate_id), self.num_proposed)
        self.num_proposed += 1
        graph = proposal.graph
        shash = graph.structural_hash()
        original = self.journal.find_original("structural_hash", shash)
        fp = original.fingerprint if original is not None else self._fingerprint(graph)
        if original is None and fp is not None:
            original = self.journal.find_original("fingerprint", fp)
        self._insert(candidate_id, proposal.role, graph, name=proposal.name, parent_id=proposal.parent_id,
                     structural_hash=shash, fingerprint=fp, duplicate_of=original.id if original else None)
        if original is None:
            self.evaluations += 1
            self._dispatch(self._job(candidate_id, graph, proposal.name))
        elif original.status is State.RUNNING:
            self.waiting.setdefault(original.id, []).append(candidate_id)
        else:
            self._answer_duplicate(candidate_id, original)

    def _fingerprint(self, graph: LayerGraph) -> Optional[str]:
        """The graph's functional fingerprint, or None (no dedup by function) if it cannot be computed."""
        try:
            return fingerprint(graph, **norm_options(self.cfg["model"]))
        except Exception as err:  # noqa: BLE001 -- a bad graph must reach the evaluator, which records why
            log.debug("no fingerprint for %s: %s", graph.formula(), err)
            return None

    def _identity(self, graph: Optional[LayerGraph]) -> dict[str, Any]:
        """A reference's structural hash and fingerprint (none for a reference that is not a graph)."""
        if graph is None:
            return {}
        return {"structural_hash": graph.structural_hash(), "fingerprint": self._fingerprint(graph)}

    def _insert(self, candidate_id: int, role: Role, graph: Optional[LayerGraph], **columns: Any) -> None:
        self.journal.propose(
            candidate_id, role, graph_yaml=graph_to_yaml(graph) if graph is not None else None,
            formula=graph.formula() if graph is not None else columns.get("name"),
            batch_dependent=graph.uses_batch_stats if graph is not None else None,
            eval_seed=self._eval_seed(candidate_id), **columns)

    def _eval_seed(self, candidate_id: int, stage: int = 1) -> int:
        return evaluation_seed(self.cfg["seed"], candidate_id, self.budget["common_random_numbers"], stage)

    def _job(self, candidate_id: int, graph: Optional[LayerGraph], name: Optional[str]) -> Job:
        return Job.of(candidate_id, self._eval_seed(candidate_id),
                      graph_to_yaml(graph) if graph is not None else None, name)

    def _dispatch(self, job: Job) -> None:
        self.journal.mark_dispatched(job.candidate_id)
        self.last_dispatched = max(self.last_dispatched, job.candidate_id)
        self.executor.submit(job)

    # --- recording results ----------------------------------------------------------------------------
    def _finish(self, outcome: Outcome) -> None:
        cid = outcome.job.candidate_id
        if self.num_stages > 1 and not self.journal.row(cid).is_reference:
            row = self._finish_stage(outcome)
            if row is None:
                return
        else:
            row = self.journal.record_result(cid, outcome.record, outcome.worker, outcome.attempts)
        self._tell(row)
        for waiting in self.waiting.pop(cid, []):
            if row.status.reusable:
                self._answer_duplicate(waiting, row)
            else:
                self._evaluate_instead(self.journal.row(waiting))

    def _finish_stage(self, outcome: Outcome) -> Optional[CandidateRow]:
        """Journal a stage: queue the next one if it cleared the hurdle (None), else record the result over
        the stages (the row)."""
        job, record = outcome.job, outcome.record
        earlier = [s.record for s in self.journal.stages(job.candidate_id)]
        stage = len(earlier) + 1
        so_far = combine_stages([*earlier, record])
        if (stage < self.num_stages and so_far.status is Status.OK
                and clears_hurdle(so_far.fitness, self.algorithm.population, self.budget["hurdle"])):
            self.journal.record_stage(job.candidate_id, stage, job.seed, record, outcome.worker)
            self.backlog.append(Job.of(job.candidate_id, self._eval_seed(job.candidate_id, stage + 1),
                                       job.graph_yaml, job.name))
            return None
        return self.journal.record_result(job.candidate_id, so_far, outcome.worker, outcome.attempts,
                                          last_stage=(stage, job.seed, record))

    def _answer_duplicate(self, candidate_id: int, original: CandidateRow) -> None:
        self._tell(self.journal.mark_duplicate(candidate_id, original))

    def _tell(self, row: CandidateRow) -> None:
        if row.is_reference:
            log.info("reference %s: %s", row.name, describe_fitness(row))
            self.callbacks.call("on_result", row)
            return
        tell_row(self.algorithm, row)
        if self.budget["backup_every"] and row.told_seq % self.budget["backup_every"] == 0:
            self._backup()
        self.steps += row.steps
        if row.status in self.counts:
            self.counts[row.status] += 1
        if row.duplicate_of is None:
            self.bar.update(1)
        self.callbacks.call("on_result", row)
        if row.status is State.OK and (self.best is None or row.mean_fitness > self.best.mean_fitness):
            self.best = row
            parent = f", child of #{row.parent_id}" if row.parent_id else ""
            log.info("new best #%d (%s%s): %s  %s", row.id, row.role, parent, describe_fitness(row), row.formula)
            self.callbacks.call("on_new_best", row)
        self._show()

    def _backup(self) -> None:
        try:
            self.journal.backup()
        except JournalWriteError as err:  # the journal itself is whole; its next write says if the disk is full
            log.warning("%s", err)

    def _show(self) -> None:
        best = f"{self.best.mean_fitness:.3f}" if self.best else "-"
        c = self.counts
        self.bar.set_postfix_str(f"best {best}, rejected {c[State.REJECTED]}, failed {c[State.FAILED]}, "
                                 f"duplicates {c[State.DUPLICATE]}", refresh=False)
