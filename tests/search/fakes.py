"""Test doubles for the search: a deterministic fake evaluator and a tiny real-evaluator config.

The fake's result is a pure function of the layer's functional fingerprint, so equivalent graphs get equal
results (as the real evaluator's would) and a run's journal is a pure function of its seed. Its hooks
(``sleep``, ``crash_marker``, ``interrupt_at``) simulate slow training, a worker killed mid-evaluation and a
Ctrl-C, and ``trace`` counts the evaluations that start; they are constructor arguments, so
``functools.partial(FakeEvaluator, ...)`` carries them to Ray actors.
"""
from __future__ import annotations

import hashlib
import os
import time

from evaluator.evaluate import EvalRecord
from evaluator.fingerprint import fingerprint
from evaluator.models import norm_options
from search.config import load_config

# A real evaluation on tiny synthetic data: about a second for a candidate that trains on both networks; the
# quality threshold is off because nothing learns much in 10 steps on 640 synthetic images.
TINY_REAL = [
    "data.synthetic=true", "data.synthetic_size=640", "data.val_size=160",
    "model.archs=[resnet, mobilenetv2]", "model.groups=4",
    "model.resnet.width=0.5", "model.resnet.depth=0.33", "model.resnet.stem_stride=2",
    "model.mobilenetv2.width=0.5", "model.mobilenetv2.depth=0.2", "model.mobilenetv2.stem_stride=2",
    "train.steps=30", "train.batch_size=32", "train.eval_batch_size=256",
    "quality.steps=10", "quality.min_accuracy=0.0", "stability.batch_size=8", "stability.ascent_steps=1",
]

# Search settings small enough for a fake run of a few seconds.
SMALL_SEARCH = [
    "search.population_size=6", "search.tournament_size=3", "search.num_nodes=6", "search.max_nodes=12",
    "search.prior=structural", "search.mutation=structural", "search.max_initial=12",
    "search.seeds=[evonorm_s0]", "search.references=[bn_relu, evonorm_s0]", "executor.kind=serial",
]


def small_config(*overrides: str) -> dict:
    """A config for fake-evaluator runs (the evaluator sections matter only to the fingerprint)."""
    return load_config(None, ["data.synthetic=true", "model.groups=4", *SMALL_SEARCH, *overrides])


def tiny_real_config(*overrides: str) -> dict:
    return load_config(None, [*TINY_REAL, *SMALL_SEARCH, *overrides])


class FakeEvaluator:
    """Fitness and verdict derived from the fingerprint: about a third rejected, some for free."""

    def __init__(self, cfg, sleep: float = 0.0, crash_marker: str | None = None, interrupt_at: int | None = None,
                 noise: float = 0.0, data=None, trace: str | None = None):
        self.cfg = cfg
        self.trace = trace  # a file that gets a line (the fingerprint) whenever an evaluation starts
        self.data = data  # what the Ray executor sent through the object store (unused: results need no data)
        self.noise = noise  # the spread of a seed-dependent term, so that another seed scores otherwise
        self.sleep = sleep
        self.crash_marker = crash_marker
        self.interrupt_at = interrupt_at
        self.calls: list[str] = []

    def evaluate(self, layer, seed: int) -> EvalRecord:
        m = self.cfg["model"]
        fp = fingerprint(layer, **norm_options(m))
        self.calls.append(fp)
        if self.trace is not None:
            with open(self.trace, "a") as f:
                f.write(fp + "\n")
        if self.crash_marker is not None:
            try:  # the first evaluation of the whole run kills its worker, once
                os.close(os.open(self.crash_marker, os.O_CREAT | os.O_EXCL))
                os._exit(1)
            except FileExistsError:
                pass
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        time.sleep(self.sleep)
        h = int(hashlib.sha256(fp.encode()).hexdigest(), 16)
        archs = m["archs"]
        if h % 6 == 0:
            return EvalRecord.for_reason("prefilter_constant", "fake", fingerprint=fp)
        if h % 6 == 1:
            return EvalRecord.for_reason("quality", "fake", fingerprint=fp, steps=10)
        jitter = self.noise * ((seed * 2654435761 % 1000) / 1000 - 0.5)
        fitness = {a: ((h >> (8 * i)) % 997) / 997 + jitter for i, a in enumerate(archs)}
        return EvalRecord("ok", fitness=fitness, steps=30 * len(archs), fingerprint=fp)


# Columns that legitimately differ between two runs of the same search: timings and where it ran.
TIMING_COLUMNS = {"proposed_at", "started_at", "finished_at", "wall_time", "worker"}


def journal_table(run_dir) -> list[dict]:
    """The candidates table without timings and workers: what must match between equivalent runs."""
    from dataclasses import asdict

    from search.journal import Journal

    with Journal.open(run_dir, readonly=True) as journal:
        return [{k: v for k, v in asdict(r).items() if k not in TIMING_COLUMNS} for r in journal.rows()]
