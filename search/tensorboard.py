"""A built-in callback that writes TensorBoard events under ``RUN_DIR/tensorboard/``
(``--set logging.tensorboard=true``; ``tensorboard --logdir RUN_DIR/tensorboard`` shows them).

Scalars are stepped by the result's ``told_seq``, so a resumed run continues the same curves: the best mean
fitness, the pass rate and the rejection and failure counts by reason (all over the whole run), and the
evaluations per hour of this session. Each new best adds its formula as text and its graph as an image.
"""
from __future__ import annotations

import importlib.util
import time
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from .callbacks import Callback
from .config import ConfigError
from .journal import CandidateRow
from .states import State

__all__ = ["TensorBoardLogger", "TENSORBOARD_DIR", "require_tensorboard"]

TENSORBOARD_DIR = "tensorboard"


def require_tensorboard() -> None:
    """Fail before the search starts when the optional ``tensorboard`` package is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("logging.tensorboard needs the tensorboard package: pip install "
                          "'evonorm-search[tensorboard]' (or set logging.tensorboard: false)")


class TensorBoardLogger(Callback):
    def __init__(self, log_dir: Optional[Path] = None):
        self.log_dir = log_dir  # default: RUN_DIR/tensorboard
        self.writer = None
        self.counts: Counter = Counter()
        self.best: Optional[float] = None

    def on_start(self, run_dir: Path, cfg: Mapping[str, Any], rows: Sequence[CandidateRow]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.log_dir or Path(run_dir) / TENSORBOARD_DIR))
        for row in rows:
            if row.finished and not row.is_reference:
                self._count(row)
        self.started, self.evaluated_before = time.monotonic(), self.counts["evaluated"]

    def _count(self, row: CandidateRow) -> None:
        if row.duplicate_of is None:
            self.counts["evaluated"] += 1
            self.counts["passed"] += row.passed
        if row.status in (State.REJECTED, State.FAILED):
            self.counts[f"{row.status.value}/{row.reason}"] += 1
        if row.passed and (self.best is None or row.mean_fitness > self.best):
            self.best = row.mean_fitness

    def on_result(self, row: CandidateRow) -> None:
        if row.is_reference:
            if row.passed:
                self.writer.add_scalar(f"reference/{row.name}", row.mean_fitness, row.told_seq)
            return
        self._count(row)
        step, c = row.told_seq, self.counts
        if self.best is not None:
            self.writer.add_scalar("search/best_fitness", self.best, step)
        if c["evaluated"]:
            self.writer.add_scalar("search/pass_rate", c["passed"] / c["evaluated"], step)
        hours = (time.monotonic() - self.started) / 3600
        if hours > 0:
            self.writer.add_scalar("search/evaluations_per_hour", (c["evaluated"] - self.evaluated_before) / hours,
                                   step)
        for key, count in c.items():
            if "/" in key:
                self.writer.add_scalar(key, count, step)

    def on_new_best(self, row: CandidateRow) -> None:
        from .plots import graph_figure

        self.writer.add_text("best/formula", f"#{row.id} ({row.mean_fitness:.4f}): `{row.formula}`", row.told_seq)
        if row.graph is not None:
            self.writer.add_figure("best/graph", graph_figure(row.graph), row.told_seq)
        self.writer.flush()

    def on_stop(self, stop_reason: str) -> None:
        if self.writer is not None:
            self.writer.add_text("run/stop", stop_reason)
            self.writer.close()
