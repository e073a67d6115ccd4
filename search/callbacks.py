"""Callbacks: how code outside the driver watches a search as it runs (a logger, a dashboard, a notifier).

``search.run(cfg, callbacks=[...])`` and ``search.resume(run_dir, callbacks=[...])`` call each callback's
hooks from the driver's loop, after the journal has recorded what they report, so a callback that raises
stops the run (its in-flight work recorded as abandoned) without losing anything. Subclass :class:`Callback`
and override the hooks you need; any object with some of its methods works too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

from .journal import CandidateRow

__all__ = ["Callback", "Callbacks"]

HOOKS = ("on_start", "on_result", "on_new_best", "on_stop")


class Callback(Protocol):
    """The hooks, each optional. Subclassing this class gives hooks that do nothing until overridden."""

    def on_start(self, run_dir: Path, cfg: Mapping[str, Any], rows: Sequence[CandidateRow]) -> None:
        """The driver starts (or resumes): ``rows`` are the candidates journaled so far."""

    def on_result(self, row: CandidateRow) -> None:
        """A result was told: a candidate's or a reference's evaluation, or a duplicate answered."""

    def on_new_best(self, row: CandidateRow) -> None:
        """A search candidate passed with the best mean fitness so far (after its ``on_result``)."""

    def on_stop(self, stop_reason: str) -> None:
        """The driver stops, for a budget, an interruption or an error."""


class Callbacks:
    """Several callbacks called as one, in order; a hook an object lacks is skipped."""

    def __init__(self, callbacks: Sequence[object] = ()):
        unknown = [c for c in callbacks if not any(callable(getattr(c, h, None)) for h in HOOKS)]
        if unknown:
            raise TypeError(f"{unknown[0]!r} has none of the callback hooks {', '.join(HOOKS)}")
        self.callbacks = list(callbacks)

    def __bool__(self) -> bool:
        return bool(self.callbacks)

    def call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if callable(method):
                method(*args)
