"""Progressive hurdles (So et al. 2019, the Evolved Transformer): a candidate whose fitness clears the
population's hurdle trains again, so that the search spends its extra training on the candidates that may
join the population.

With ``search.stages: K`` every search candidate trains a first stage, the config's evaluation. After stage
``k < K`` it trains stage ``k + 1`` (the same evaluation with another seed) when its mean accuracy so far
reaches the ``search.hurdle`` quantile of the population's (0.5: the median). Its result is then the mean
over the stages it trained, so the search compares candidates at the highest stage each reached. A stage
that does not pass ends the candidate with that stage's verdict: a layer that diverges on another seed is
not one to keep. References train one stage. The journal records each stage (``Journal.stages``).
"""
from __future__ import annotations

import statistics
from typing import Mapping, Sequence

import numpy as np

from evaluator.evaluate import EvalRecord, Status

__all__ = ["clears_hurdle", "combine_stages"]


def clears_hurdle(fitness: Mapping[str, float], population: Sequence, quantile: float) -> bool:
    """Whether ``fitness`` (per architecture) earns the next stage against ``population`` (members with
    ``.fitness``); with no member yet, every passing candidate does."""
    scores = [statistics.mean(m.fitness.values()) for m in population if m.fitness]
    if not scores:
        return True
    return statistics.mean(fitness.values()) >= float(np.quantile(scores, quantile))


def combine_stages(records: Sequence[EvalRecord]) -> EvalRecord:
    """A candidate's result over the stages it trained, in order: the mean accuracy per architecture if
    every stage passed, else the first verdict that did not pass; steps and wall time are summed."""
    if not records:
        raise ValueError("a candidate has at least one stage")
    steps, wall_time = sum(r.steps for r in records), sum(r.wall_time for r in records)
    failed = next((r for r in records if r.status is not Status.OK), None)
    if failed is not None:
        return EvalRecord(failed.status, failed.reason, failed.detail, steps=steps, wall_time=wall_time,
                          fingerprint=failed.fingerprint)
    if len(records) == 1:
        return records[0]
    fitness = {arch: statistics.mean(r.fitness[arch] for r in records) for arch in records[0].fitness}
    test = None
    if all(r.test_accuracy for r in records):
        test = {arch: statistics.mean(r.test_accuracy[arch] for r in records) for arch in records[0].test_accuracy}
    return EvalRecord(Status.OK, fitness=fitness, test_accuracy=test, steps=steps, wall_time=wall_time,
                      fingerprint=records[0].fingerprint,
                      detail=f"mean of {len(records)} stages")
