"""The search as a pure function of (config, journal): the configured algorithm, the random draws of each
candidate, and the replay that rebuilds the algorithm's state from the journal.

Every random draw of candidate ``k`` comes from a generator seeded with (run seed, ``k``), never from a stream
shared across candidates, and the algorithm's state changes only through results told in the journal's
``told_seq`` order. So replaying a journal into a fresh algorithm gives the state the run had, and a serial
run resumed at any point proposes exactly what the uninterrupted run would have.
"""
from __future__ import annotations

import hashlib
import random
from typing import Any, Iterator, Mapping, Optional, Protocol, Sequence

from primitives import LayerGraph

from .config import resolve_ops
from .evolution import Evolution, Member, Proposal
from .journal import CandidateRow
from .random_search import RandomSearch
from .seed_graphs import seed_pairs

__all__ = ["Algorithm", "make_algorithm", "objectives", "replay", "told_in_order", "tell_row", "proposal_rng",
           "evaluation_seed"]


class Algorithm(Protocol):
    """What the driver asks of a search algorithm. It must be a pure function of what it was told and of the
    generators it is given: then replaying the journal rebuilds it (see the module docstring)."""

    @property
    def population(self) -> tuple[Member, ...]:
        """The members it keeps now (none for an algorithm that keeps none)."""

    def ask(self, rng: random.Random, num_proposed: int) -> Proposal:
        """The next candidate, drawing only from ``rng``; ``num_proposed`` counts its earlier proposals."""

    def tell(self, candidate_id: int, graph: LayerGraph, fitness: Optional[Mapping[str, float]],
             fingerprint: Optional[str] = None) -> None:
        """A finished evaluation; ``fitness`` is None unless the candidate passed."""


def objectives(cfg: Mapping[str, Any]) -> tuple[str, ...]:
    """The run's ``search.objectives``; accuracy alone for a run whose config predates the key."""
    return tuple(cfg["search"].get("objectives", ("accuracy",)))


def make_algorithm(cfg: Mapping[str, Any]) -> Algorithm:
    """The configured algorithm, fresh; random search ignores ``search.objectives`` (results never steer it)."""
    s = cfg["search"]
    ops = resolve_ops(s["ops"])
    seeds = seed_pairs(s["seeds"])  # names and graph documents: load_config has read the files and runs
    if s["algorithm"] == "random":
        return RandomSearch(ops, s["num_nodes"], seeds, s["prior"])
    return Evolution(ops, s["population_size"], s["tournament_size"], s["num_nodes"], seeds, s["mutation_nodes"],
                     prior=s["prior"], mutation=s["mutation"], max_initial=s["max_initial"],
                     max_nodes=s["max_nodes"], objectives=objectives(cfg))


def replay(algorithm: Algorithm, rows: Sequence[CandidateRow]) -> Algorithm:
    """Tell ``algorithm`` every finished search candidate in the order the run told them; returns it."""
    for row in told_in_order(rows):
        tell_row(algorithm, row)
    return algorithm


def told_in_order(rows: Sequence[CandidateRow]) -> Iterator[CandidateRow]:
    """The finished search candidates (references never steer a search) in the order the run told them."""
    yield from sorted((r for r in rows if r.told_seq is not None and not r.is_reference), key=lambda r: r.told_seq)


def tell_row(algorithm: Algorithm, row: CandidateRow) -> None:
    """Tell ``algorithm`` one journaled result: its fitness if it passed, and its function's fingerprint."""
    algorithm.tell(row.id, row.graph, row.fitness if row.passed else None, row.fingerprint)


def _digest(*parts: Any) -> bytes:
    return hashlib.sha256("/".join(map(str, parts)).encode()).digest()


def proposal_rng(run_seed: int, candidate_id: int) -> random.Random:
    """The generator of every draw made to propose candidate ``candidate_id``."""
    return random.Random(_digest(run_seed, "propose", candidate_id))


def evaluation_seed(run_seed: int, candidate_id: int, common: bool = False, stage: int = 1) -> int:
    """The seed the evaluator trains candidate ``candidate_id`` with (31 bits) in its ``stage``-th stage (see
    ``search.hurdles``). With ``common`` (common random numbers) every candidate of the run gets the same one
    per stage: the same initialisation and data order."""
    extra = () if stage == 1 else (f"stage {stage}",)
    return int.from_bytes(_digest(run_seed, "evaluate", "common" if common else candidate_id, *extra)[:4],
                          "big") >> 1
