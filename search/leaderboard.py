"""Ranking a run's candidates: Pareto rank over the per-architecture accuracies, then mean accuracy.

Pure functions of the journal's rows, shared by ``search.inspect`` (tables, JSON, report) and
``search.export`` (``--rank N``). Duplicates are not ranked twice: each function appears once, with the
number of times the search found it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Optional, Sequence

from .evolution import dominates
from .journal import CandidateRow
from .states import State

__all__ = ["Entry", "leaderboard", "pareto_ranks", "places"]


@dataclass(frozen=True)
class Entry:
    """One ranked candidate: ``rank`` is its place (1 = best), ``pareto_rank`` its non-dominated front (1 =
    the front), ``found`` how many candidates computed the same function (itself and its duplicates)."""

    rank: int
    pareto_rank: int
    row: CandidateRow
    found: int

    def as_dict(self) -> dict:
        r = self.row
        return {
            "rank": self.rank, "pareto_rank": self.pareto_rank, "id": r.id, "role": r.role, "name": r.name,
            "hash": r.structural_hash, "fingerprint": r.fingerprint, "formula": r.formula or r.name,
            "fitness": r.fitness, "mean_fitness": r.mean_fitness, "test_accuracy": r.test_accuracy,
            "status": r.status, "batch_dependent": r.batch_dependent, "parent_id": r.parent_id,
            "found": self.found, "steps": r.steps,
        }


def pareto_ranks(fitness: Sequence[dict[str, float]]) -> list[int]:
    """The non-dominated front (1, 2, ...) of each fitness vector (non-dominated sorting)."""
    ranks = [0] * len(fitness)
    left = set(range(len(fitness)))
    front = 0
    while left:
        front += 1
        current = {i for i in left if not any(dominates(fitness[j], fitness[i]) for j in left if j != i)}
        for i in current:
            ranks[i] = front
        left -= current
    return ranks


def leaderboard(rows: Sequence[CandidateRow], top: Optional[int] = None,
                include_references: bool = True) -> list[Entry]:
    """The candidates that passed every check (references too, marked by their role), best first."""
    found = Counter(r.duplicate_of for r in rows if r.status is State.DUPLICATE and r.duplicate_of is not None)
    passed = [r for r in rows if r.status is State.OK and r.fitness
              and (include_references or not r.is_reference)]
    ranks = pareto_ranks([r.fitness for r in passed])
    order = sorted(range(len(passed)), key=lambda i: (ranks[i], -passed[i].mean_fitness, passed[i].id))
    entries = [Entry(k + 1, ranks[i], passed[i], 1 + found[passed[i].id]) for k, i in enumerate(order)]
    return entries[:top] if top is not None else entries


def places(rows: Sequence[CandidateRow]) -> dict[int, str]:
    """``"N of M"`` for each candidate that passed: its rank among the M that did (how references are read)."""
    board = leaderboard(rows)
    return {e.row.id: f"{e.rank} of {len(board)}" for e in board}
