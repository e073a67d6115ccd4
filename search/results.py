"""What a run produced, read from its journal: counts, the best candidate, the references, throughput.

``open_run(run_dir)`` opens a run read-only (it may still be going, or have been interrupted) and is what
``search.inspect`` and the experiment scripts build on; ``summarize`` is the pure function behind its summary.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from evaluator.config import quality_step

from .journal import CandidateRow, Journal, Session
from .plugins import import_plugins, plugins_of
from .states import State
from .leaderboard import Entry, leaderboard, places
from .state import make_algorithm, objectives, replay

__all__ = ["RunSummary", "RunResult", "RunView", "summarize", "best_candidate", "describe_fitness", "wall_time",
           "open_run", "CONFIG_FILE"]

CONFIG_FILE = "config.yaml"


@dataclass(frozen=True)
class RunSummary:
    """Counts over the search's candidates (references apart).

    ``evaluated`` counts candidates sent to the evaluator; ``duplicates`` reused an earlier result instead
    (``dedup_hit_rate`` = duplicates / (duplicates + evaluated)); ``prefiltered`` were rejected before any
    training; ``trained_to_quality`` reached the quality check (``quality.steps`` training steps on the first
    architecture at least); ``completed`` passed every check and trained to the end on every architecture.
    """

    candidates: int
    evaluated: int
    completed: int
    rejected: dict[str, int]
    failed: dict[str, int]
    duplicates: int
    abandoned: int
    running: int
    prefiltered: int
    trained_to_quality: int
    steps: int
    wall_time: float
    references: int

    @property
    def dedup_hit_rate(self) -> float:
        total = self.duplicates + self.evaluated
        return self.duplicates / total if total else 0.0

    @property
    def evaluations_per_hour(self) -> float:
        finished = self.evaluated - self.abandoned - self.running
        return finished / self.wall_time * 3600 if self.wall_time > 0 else 0.0

    def lines(self) -> list[str]:
        """The summary as a few human-readable lines."""
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items())) or "none"
        failed = ", ".join(f"{k} {v}" for k, v in sorted(self.failed.items())) or "none"
        return [
            f"{self.candidates} candidates: {self.evaluated} evaluated, {self.duplicates} duplicates "
            f"(dedup hit rate {self.dedup_hit_rate:.0%}), {self.references} references",
            f"passed: {self.completed}; rejected: {rejected}; failed: {failed}"
            + (f"; abandoned: {self.abandoned}" if self.abandoned else "")
            + (f"; running: {self.running}" if self.running else ""),
            f"trained to the quality check: {self.trained_to_quality}; "
            f"pre-rejected for free: {self.prefiltered}; training steps: {self.steps}",
            f"wall time {self.wall_time:.0f} s, {self.evaluations_per_hour:.0f} evaluations/hour",
        ]


@dataclass(frozen=True)
class RunResult:
    """What ``search.run`` returns: where the run is, why it stopped, and what it found."""

    run_dir: Path
    stop_reason: str  # max_evaluations | max_time | max_steps | exhausted | interrupted
    summary: RunSummary
    best: Optional[CandidateRow]
    references: dict[str, CandidateRow] = field(default_factory=dict)


def wall_time(sessions: Sequence[Session], rows: Sequence[CandidateRow]) -> float:
    """Seconds the driver ran, summed over sessions; a session that never ended (killed, or still going)
    counts until its last recorded event."""
    total = 0.0
    for i, s in enumerate(sessions):
        end = s.ended_at
        if end is None:
            limit = sessions[i + 1].started_at if i + 1 < len(sessions) else float("inf")
            stamps = [t for r in rows for t in (r.proposed_at, r.started_at, r.finished_at)
                      if t is not None and s.started_at <= t < limit]
            end = max(stamps, default=s.started_at)
        total += end - s.started_at
    return total


def summarize(rows: Sequence[CandidateRow], sessions: Sequence[Session], cfg: dict[str, Any]) -> RunSummary:
    search = [r for r in rows if not r.is_reference]
    evaluated = [r for r in search if r.duplicate_of is None]
    status = Counter(r.status for r in search)
    return RunSummary(
        candidates=len(search),
        evaluated=len(evaluated),
        completed=status[State.OK],
        rejected=dict(Counter(r.reason for r in search if r.status is State.REJECTED)),
        failed=dict(Counter(r.reason for r in search if r.status is State.FAILED)),
        duplicates=status[State.DUPLICATE],
        abandoned=status[State.ABANDONED],
        running=sum(1 for r in evaluated if r.status is State.RUNNING),
        prefiltered=sum(1 for r in search if r.status is State.REJECTED and (r.reason or "").startswith("prefilter")),
        trained_to_quality=sum(1 for r in evaluated
                               if r.status.reusable and r.steps >= quality_step(cfg)),
        steps=sum(r.steps for r in search),
        wall_time=wall_time(sessions, rows),
        references=len(rows) - len(search),
    )


def describe_fitness(row: CandidateRow) -> str:
    """``mean 0.412 (mobilenetv2 0.390, resnet 0.434)``, or the status and reason when it did not pass."""
    if not row.passed or not row.fitness:
        return f"{row.status} ({row.reason})"
    per_arch = ", ".join(f"{arch} {acc:.3f}" for arch, acc in sorted(row.fitness.items()))
    return f"mean {row.mean_fitness:.3f} ({per_arch})"


def best_candidate(rows: Sequence[CandidateRow]) -> Optional[CandidateRow]:
    """The search candidate (not a reference) with the highest mean accuracy that passed every check."""
    passed = [r for r in rows if r.status is State.OK and not r.is_reference and r.fitness]
    return max(passed, key=lambda r: (r.mean_fitness, -r.id), default=None)


class RunView:
    """Read-only access to a run directory: its config and its journal; the modules of the config's
    ``search.plugins`` are imported, so that graphs with plug-in ops parse."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.journal = Journal.open(self.run_dir, readonly=True)
        with open(self.run_dir / CONFIG_FILE) as f:
            self.config: dict[str, Any] = yaml.safe_load(f)
        try:  # the run's plug-in ops, without which its graphs do not parse
            import_plugins(plugins_of(self.config), os.fspath(self.run_dir / CONFIG_FILE))
        except BaseException:
            self.journal.close()
            raise

    def candidates(self) -> list[CandidateRow]:
        return self.journal.rows()

    def sessions(self) -> list[Session]:
        return self.journal.sessions()

    def summary(self) -> RunSummary:
        return summarize(self.candidates(), self.sessions(), self.config)

    def population(self) -> tuple:
        """The algorithm's population as the journal leaves it (oldest first; empty for random search)."""
        return replay(make_algorithm(self.config), self.candidates()).population

    def best(self) -> Optional[CandidateRow]:
        return best_candidate(self.candidates())

    def leaderboard(self, top: Optional[int] = None) -> list[Entry]:
        """The passed search candidates, best first, ranked over the run's own objectives."""
        return leaderboard(self.candidates(), top=top, objectives=objectives(self.config))

    def places(self) -> dict[int, str]:
        """Each passed reference's place among the search candidates ("N of M"), over the run's objectives."""
        return places(self.candidates(), objectives(self.config))

    def stages_reached(self) -> dict[int, int]:
        """Candidate id -> the stages it trained, for a run with hurdles (empty without)."""
        return dict(Counter(s.candidate_id for s in self.journal.stages()))

    def references(self) -> dict[str, CandidateRow]:
        return {r.name: r for r in self.candidates() if r.is_reference}

    def close(self) -> None:
        self.journal.close()

    def __enter__(self) -> "RunView":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_run(run_dir: str | os.PathLike) -> RunView:
    """Open a run directory read-only (works while the run is going or after it was interrupted)."""
    return RunView(run_dir)
