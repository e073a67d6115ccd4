"""The words of a candidate's life in the journal: its state, its role, and why it ended as it did.

A candidate is ``running`` from its proposal until its result arrives (a duplicate is running while it waits
for the evaluation of the same function already in flight). It then ends as the evaluator's record says
(``ok``, ``rejected``, ``failed``), or as ``duplicate`` (the original's result reused, nothing trained), or
``abandoned`` (in flight when the run stopped; a resumed run evaluates it again). These values are stored in
journals: never rename one.
"""
from __future__ import annotations

from enum import Enum

from evaluator.evaluate import REASONS, Status

__all__ = ["State", "Role", "WORKER_LOST", "ABANDONED", "JOURNAL_REASONS"]


class _Word(str, Enum):
    """A stored word: equal to, hashed as and printed as its value, so ``State.OK == "ok"`` and dicts mix."""

    __hash__ = str.__hash__

    def __str__(self) -> str:
        return self.value


class State(_Word):
    RUNNING = "running"
    OK = Status.OK.value
    REJECTED = Status.REJECTED.value
    FAILED = Status.FAILED.value
    DUPLICATE = "duplicate"
    ABANDONED = "abandoned"

    @property
    def finished(self) -> bool:
        """Whether the candidate has its final result (an abandoned one is evaluated again on resume)."""
        return self in (State.OK, State.REJECTED, State.FAILED, State.DUPLICATE)

    @property
    def reusable(self) -> bool:
        """Whether its evaluation speaks for every candidate computing the same function. A failure (a lost
        worker, a timeout) says nothing about the function, so it is never reused."""
        return self in (State.OK, State.REJECTED)


class Role(_Word):
    """Why a candidate was proposed. A reference is a named baseline evaluated for comparison; it never joins
    the population and never takes a rank among the search's candidates."""

    REFERENCE = "reference"
    SEED = "seed"
    INITIAL = "initial"
    CHILD = "child"
    RANDOM = "random"


# Failure reasons of the search itself, beside the evaluator's: the executor lost the worker (after its
# retries), or the driver stopped with the evaluation in flight.
WORKER_LOST = "worker_lost"
ABANDONED = "abandoned"
JOURNAL_REASONS = (*REASONS, WORKER_LOST, ABANDONED)
