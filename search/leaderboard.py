"""Ranking a run's candidates: Pareto rank over the per-architecture accuracies (and, with the ``cost``
objective, minus the layer's cost relative to BN-ReLU, ``primitives.cost``), then mean accuracy.

Pure functions of the journal's rows, shared by ``search.inspect`` (tables, JSON, report), ``search.export``
(``--rank N``), ``search.rerank`` (``--top K``) and the command line's summary. A rank counts search
candidates only: references are baselines, never ranked among them; each reference gets its place instead,
"N of M", where it would sit among the search candidates that passed. Duplicates are not ranked twice: each
function appears once, with the number of times the search found it. Spearman's rho and Kendall's tau
compare two rankings (a search's against its re-ranking, a proxy's against the ground truth).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from primitives.cost import reference_cost, relative_cost

from .evolution import dominates, objective_vector
from .journal import CandidateRow
from .states import State

__all__ = ["Entry", "leaderboard", "pareto_ranks", "places", "row_cost", "spearman", "kendall"]


@dataclass(frozen=True)
class Entry:
    """One ranked candidate: ``rank`` is its place (1 = best), ``pareto_rank`` its non-dominated front (1 =
    the front), ``found`` how many candidates computed the same function (itself and its duplicates), ``cost``
    its cost relative to BN-ReLU when the ranking has the cost objective (else None)."""

    rank: int
    pareto_rank: int
    row: CandidateRow
    found: int
    cost: Optional[float] = None

    def as_dict(self) -> dict:
        r = self.row
        return {
            "rank": self.rank, "pareto_rank": self.pareto_rank, "id": r.id, "role": r.role, "name": r.name,
            "hash": r.structural_hash, "fingerprint": r.fingerprint, "formula": r.formula or r.name,
            "fitness": r.fitness, "mean_fitness": r.mean_fitness, "test_accuracy": r.test_accuracy,
            "status": r.status, "batch_dependent": r.batch_dependent, "parent_id": r.parent_id,
            "found": self.found, "steps": r.steps, **({} if self.cost is None else {"cost": self.cost}),
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


def _passed(rows: Sequence[CandidateRow]) -> list[CandidateRow]:
    return [r for r in rows if r.status is State.OK and r.fitness]


def row_cost(row: CandidateRow) -> float:
    """The candidate's cost relative to BN-ReLU: its graph's (``primitives.cost``), or a reference layer's."""
    graph = row.graph
    return relative_cost(graph) if graph is not None else reference_cost(row.name or "")


def _ranked(passed: Sequence[CandidateRow], found: Counter, objectives: Sequence[str]) -> list[Entry]:
    costs = [row_cost(r) if "cost" in objectives else None for r in passed]
    ranks = pareto_ranks([objective_vector(r.fitness, c) for r, c in zip(passed, costs)])
    order = sorted(range(len(passed)), key=lambda i: (ranks[i], -passed[i].mean_fitness, passed[i].id))
    return [Entry(k + 1, ranks[i], passed[i], 1 + found[passed[i].id], costs[i]) for k, i in enumerate(order)]


def leaderboard(rows: Sequence[CandidateRow], top: Optional[int] = None,
                objectives: Sequence[str] = ("accuracy",)) -> list[Entry]:
    """The search candidates that passed every check, best first (references are placed by ``places``);
    ``objectives`` are the run's (``search.state.objectives``)."""
    found = Counter(r.duplicate_of for r in rows if r.status is State.DUPLICATE and r.duplicate_of is not None)
    entries = _ranked([r for r in _passed(rows) if not r.is_reference], found, objectives)
    return entries[:top] if top is not None else entries


def places(rows: Sequence[CandidateRow], objectives: Sequence[str] = ("accuracy",)) -> dict[int, str]:
    """``"N of M"`` for each reference that passed: its rank when it alone joins the search candidates that
    passed (M counts them and it)."""
    search = [r for r in _passed(rows) if not r.is_reference]
    out = {}
    for ref in (r for r in _passed(rows) if r.is_reference):
        board = _ranked([*search, ref], Counter(), objectives)
        out[ref.id] = f"{next(e.rank for e in board if e.row.id == ref.id)} of {len(board)}"
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> Optional[float]:
    """Spearman's rank correlation (ties get their average rank); None when either side is constant."""
    if len(x) != len(y):
        raise ValueError(f"spearman needs paired values, got {len(x)} and {len(y)}")
    rx, ry = _average_ranks(x), _average_ranks(y)
    if len(rx) < 2 or np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def _average_ranks(values: Sequence[float]) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    ranks = np.empty(len(v))
    ranks[v.argsort(kind="stable")] = np.arange(1, len(v) + 1)
    for value in np.unique(v):
        tied = v == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def kendall(x: Sequence[float], y: Sequence[float]) -> Optional[float]:
    """Kendall's tau-b (ties counted on either side); None when either side is constant."""
    if len(x) != len(y):
        raise ValueError(f"kendall needs paired values, got {len(x)} and {len(y)}")
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    i, j = np.triu_indices(len(a), k=1)
    dx, dy = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    pairs_x, pairs_y = np.count_nonzero(dx), np.count_nonzero(dy)
    if pairs_x == 0 or pairs_y == 0:
        return None
    return float((dx * dy).sum() / np.sqrt(pairs_x * pairs_y))
