"""Re-rank a finished search, as the paper does: ``python -m search.rerank RUN_DIR [--top 10] [--seeds 3]``.

The search scores each candidate once, with one seed and a short schedule, so its ranking is noisy. Re-ranking
retrains the top ``--top`` search candidates (in the order ``search.inspect`` shows: Pareto rank, then mean
accuracy) and the run's references from scratch: ``--seeds`` seeds each, ``--steps`` steps (default
``STEPS_FACTOR`` times the search's ``train.steps``), on every training image (``data.val_size=0``), with the
rejection checks off (the candidates passed them already), scored on the test batch. Everything else comes from
the run's ``config.yaml``; ``--set key=value`` is applied last. Seed ``i`` is the same for every candidate
(derived from the run seed and ``i``), so every layer sees the same data orders and weight-initialisation seeds:
a difference between two layers is not a difference between their seeds.

Writes ``RUN_DIR/rerank.csv`` (one row per candidate, seed and architecture), ``RUN_DIR/rerank.md`` (the table,
with the Spearman rank correlation between search fitness and re-ranked accuracy), ``RUN_DIR/plots/rerank.png``,
and rewrites ``RUN_DIR/report.md`` with that section (``search.inspect --plots`` keeps it). The evaluations run
on the run's executor (Ray actors, or serial in-process); ``--workers 0`` runs them serially here.

Exit status: 0 when re-ranked, 2 for a directory that is not a run, a bad ``--set`` or no passed candidate,
1 when the data or the workers are unusable, 130 when interrupted (nothing is written then).
"""
from __future__ import annotations

import argparse
import csv
import logging
import os
import statistics
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from evaluator.config import check_scoring
from evaluator.evaluate import EvalRecord, Evaluator, Status, derive_seed

from .command import RESOURCE_ERRORS, USAGE_ERRORS, report_error, setup_logging
from .config import load_config
from .driver import prepare_data
from .executor import EvaluatorFactory, Job, Outcome, make_executor, run_all
from .journal import CandidateRow
from .leaderboard import spearman
from .plots import RerankPoint, plot_rerank
from .report import RERANK_FILE, existing_plots, format_table, label, write_report
from .results import CONFIG_FILE, RunView, open_run

__all__ = ["STEPS_FACTOR", "RerankError", "Trial", "Reranked", "Rerank", "rerank_config", "rerank_seeds",
           "rerank", "rerank_table", "main"]

log = logging.getLogger(__name__)

# The default schedule: this many times the search's train.steps.
STEPS_FACTOR = 3
CSV_FILE = "rerank.csv"
PLOT_FILE = "rerank.png"
# Longest wait for a result before the progress bar refreshes.
POLL_SECONDS = 5.0


class RerankError(ValueError):
    """A run that cannot be re-ranked as asked; the message says why."""


@dataclass(frozen=True)
class Trial:
    """One retraining of one candidate with its ``seed_index``-th seed."""

    seed_index: int
    seed: int
    record: EvalRecord
    worker: str


@dataclass(frozen=True)
class Reranked:
    """A retrained candidate: its journal row, its place in the search (None if it did not pass there), its
    trials in seed order, and its new rank among the search candidates (None when no trial completed, and
    for a reference, whose ``place`` among them is "N of M")."""

    row: CandidateRow
    search_rank: Optional[int]
    trials: tuple[Trial, ...]
    rank: Optional[int] = None
    place: Optional[str] = None

    def accuracies(self, arch: str) -> list[float]:
        """Test accuracy on ``arch`` for each completed trial."""
        return [t.record.test_accuracy[arch] for t in self.trials if t.record.status is Status.OK]

    @property
    def seed_means(self) -> list[float]:
        """The mean test accuracy over architectures, for each completed trial."""
        return [statistics.fmean(t.record.test_accuracy.values()) for t in self.trials if t.record.status is Status.OK]

    @property
    def mean(self) -> Optional[float]:
        return statistics.fmean(self.seed_means) if self.seed_means else None


@dataclass(frozen=True)
class Rerank:
    """The outcome: the candidates in their new order, and the settings they were retrained with."""

    run_dir: Path
    archs: tuple[str, ...]
    steps: int
    search_steps: int
    seeds: tuple[int, ...]
    top: int
    candidates: tuple[Reranked, ...]

    @property
    def spearman(self) -> tuple[Optional[float], int]:
        """Spearman's rho between search fitness and re-ranked accuracy, and over how many layers."""
        pairs = [(c.row.mean_fitness, c.mean) for c in self.candidates
                 if c.mean is not None and c.row.passed and c.row.fitness]
        return (spearman(*zip(*pairs)) if pairs else None), len(pairs)


def rerank_config(run_dir: str | os.PathLike, steps: Optional[int] = None, overrides: Sequence[str] = (),
                  workers: Optional[int] = None) -> dict[str, Any]:
    """The run's config with the re-ranking's schedule, data and checks; ``overrides`` applied last.

    ``train.time_limit`` grows with the schedule; ``workers`` 0 runs serially, more sets the Ray workers, None
    keeps the run's executor. Raises ``ConfigError`` naming the key (a bad override is named alone).
    """
    path = Path(run_dir) / CONFIG_FILE
    saved = load_config(path, check_search=False)
    load_config(path, overrides, check_search=False)
    train = saved["train"]
    steps = steps if steps is not None else STEPS_FACTOR * train["steps"]
    settings = ["data.val_size=0", "data.max_train=0", "train.test=true", f"train.steps={steps}",
                f"train.time_limit={train['time_limit'] * max(1.0, steps / train['steps'])}",
                "prefilter.enabled=false", "quality.enabled=false", "stability.enabled=false"]
    if workers is not None:
        settings += ["executor.kind=serial"] if workers == 0 else ["executor.kind=ray",
                                                                  f"executor.num_workers={workers}"]
    cfg = load_config(path, [*settings, *overrides], check_search=False)
    check_scoring(cfg)  # here, not in a Ray worker, where it would read as a worker that cannot start
    return cfg


def rerank_seeds(run_seed: int, count: int) -> tuple[int, ...]:
    """The seeds every candidate is retrained with: the ``i``-th depends on the run seed and ``i`` only."""
    return tuple(derive_seed(run_seed, "rerank", i) for i in range(count))


def _select(view: RunView, top: int) -> list[tuple[CandidateRow, Optional[int]]]:
    """The top search candidates, then the references, each with its rank in the search."""
    entries = view.leaderboard(top)
    if not entries:
        raise RerankError(f"no search candidate in {view.run_dir} passed every check; nothing to re-rank")
    references = sorted(view.references().values(), key=lambda r: r.id)
    return [(e.row, e.rank) for e in entries] + [(row, None) for row in references]


def _evaluate(executor, jobs: Sequence[Job], progress: bool) -> Iterator[Outcome]:
    failed = 0
    with tqdm(total=len(jobs), desc="rerank", unit="eval", disable=not progress, dynamic_ncols=True) as bar:
        for outcome in run_all(executor, jobs, POLL_SECONDS):
            failed += outcome.record.status is not Status.OK
            bar.set_postfix_str(f"not ok {failed}", refresh=False)
            bar.update(1)
            yield outcome


def rerank(run_dir: str | os.PathLike, top: int = 10, seeds: int = 3, steps: Optional[int] = None,
           overrides: Sequence[str] = (), workers: Optional[int] = None, *,
           evaluator_factory: EvaluatorFactory = Evaluator, progress: bool = False) -> Rerank:
    """Retrain the top ``top`` candidates and the references of the run in ``run_dir`` with ``seeds`` seeds,
    then write the CSV, the table, the plot and the report (see the module docstring)."""
    for name, value, least in (("top", top, 1), ("seeds", seeds, 1), ("steps", steps, 1), ("workers", workers, 0)):
        if value is not None and value < least:
            raise RerankError(f"{name} must be at least {least}, got {value}")
    try:
        view = open_run(run_dir)
    except FileNotFoundError as err:  # a journal without its config
        raise RerankError(f"{os.fspath(run_dir)!r} is not a complete run directory: {err}") from None
    with view:
        cfg = rerank_config(run_dir, steps, overrides, workers)
        chosen = _select(view, top)
        seed_list = rerank_seeds(view.config["seed"], seeds)
        prepare_data(cfg)
        jobs = [Job.of(row.id, seed, row.graph_yaml, row.name)
                for seed in seed_list for row, _ in chosen]
        trials: dict[int, list[Trial]] = {row.id: [] for row, _ in chosen}
        executor = make_executor(cfg, evaluator_factory)
        try:
            with logging_redirect_tqdm() if progress else nullcontext():
                for outcome in _evaluate(executor, jobs, progress):
                    job = outcome.job
                    trials[job.candidate_id].append(
                        Trial(seed_list.index(job.seed), job.seed, outcome.record, outcome.worker))
        finally:
            executor.close()
        result = Rerank(Path(run_dir), tuple(cfg["model"]["archs"]), cfg["train"]["steps"],
                        view.config["train"]["steps"], seed_list, top,
                        _rank([Reranked(row, rank, tuple(sorted(trials[row.id], key=lambda t: t.seed_index)))
                               for row, rank in chosen]))
        _write(result, view)
    return result


def _rank(candidates: list[Reranked]) -> tuple[Reranked, ...]:
    """New ranks of the search candidates by mean test accuracy (ties: the search's order), those with no
    completed trial last; each reference placed where it would sit among them (ties go to the candidates)."""
    order = sorted(candidates, key=lambda c: (c.mean is None, -(c.mean or 0.0), c.search_rank or float("inf"),
                                              c.row.is_reference, c.row.id))
    scored = [c.mean for c in order if c.mean is not None and not c.row.is_reference]
    out, rank = [], 0
    for c in order:
        if c.row.is_reference:
            place = (f"{1 + sum(m >= c.mean for m in scored)} of {len(scored) + 1}" if c.mean is not None
                     else None)
            out.append(Reranked(c.row, None, c.trials, None, place))
        else:
            rank += c.mean is not None
            out.append(Reranked(c.row, c.search_rank, c.trials, rank if c.mean is not None else None))
    return tuple(out)


def _spread(values: Sequence[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def rerank_table(result: Rerank, markdown: bool = False) -> str:
    """One row per candidate, in the new order: search rank and fitness, test accuracy mean ± std over seeds."""
    archs = result.archs
    head = ["rank", "search rank", "id", *(f"{a} search" for a in archs), "search mean",
            *(f"{a} test" for a in archs), "test mean", "seeds", "formula"]
    rows = []
    for c in result.candidates:
        fitness = c.row.fitness if c.row.passed and c.row.fitness else {}
        rows.append([str(c.rank or c.place or "-"), str(c.search_rank or "-"), str(c.row.id),
                     *(f"{fitness[a]:.3f}" if a in fitness else "-" for a in archs),
                     f"{c.row.mean_fitness:.3f}" if fitness else "-",
                     *(_spread(c.accuracies(a)) for a in archs), _spread(c.seed_means),
                     f"{len(c.seed_means)}/{len(c.trials)}", label(c.row)])
    return format_table(head, rows, markdown)


def _summary(result: Rerank) -> str:
    rho, n = result.spearman
    searched = sum(1 for c in result.candidates if not c.row.is_reference)
    asked = f" (of the {result.top} asked)" if searched < result.top else ""
    return (f"The top {searched} search candidates{asked} and the {len(result.candidates) - searched} references, "
            f"retrained from scratch for {result.steps} steps (the search: {result.search_steps}) on every "
            f"training image, with {len(result.seeds)} seeds (the same for every layer) and no rejection checks, "
            f"scored on the test batch: mean ± standard deviation over seeds. Search fitness is the validation "
            f"accuracy the search measured (one seed). Spearman rank correlation between search fitness and "
            f"re-ranked accuracy (means over architectures): "
            + (f"{rho:+.2f} over {n} layers." if rho is not None
               else f"undefined ({n} layer{'' if n == 1 else 's'} with both scores, or no spread)."))


def _write(result: Rerank, view: RunView) -> None:
    run_dir = result.run_dir
    _write_csv(result, run_dir / CSV_FILE)
    (run_dir / "plots").mkdir(exist_ok=True)
    rho, _ = result.spearman
    points = [RerankPoint(f"#{c.row.id}" if not c.row.is_reference else c.row.name,
                          c.row.mean_fitness if c.row.passed else None, c.mean,
                          statistics.stdev(c.seed_means) if len(c.seed_means) > 1 else 0.0, c.row.is_reference)
              for c in result.candidates if c.mean is not None]
    title = "Re-ranking" + (f" (Spearman {rho:+.2f})" if rho is not None else "")
    plot_rerank(points, run_dir / "plots" / PLOT_FILE, title)
    text = ["## Re-ranking", "", _summary(result), "", rerank_table(result, markdown=True), "",
            f"Raw results: [{CSV_FILE}]({CSV_FILE}).", "", f"![Re-ranking](plots/{PLOT_FILE})", ""]
    section = "\n".join(text)
    (run_dir / RERANK_FILE).write_text(section)  # kept for search.inspect --plots, which rewrites the report
    entries = view.leaderboard(result.top)
    write_report(view, entries, existing_plots(run_dir, result.top), [section])


def _write_csv(result: Rerank, path: Path) -> None:
    head = ["candidate_id", "role", "name", "search_rank", "rank", "seed_index", "seed", "arch", "search_fitness",
            "test_accuracy", "status", "reason", "detail", "steps", "wall_time", "worker", "formula"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(head)
        for c in result.candidates:
            r = c.row
            for t in c.trials:
                rec = t.record
                for arch in result.archs:
                    writer.writerow([r.id, r.role, r.name or "", c.search_rank or "", c.rank or c.place or "", t.seed_index,
                                     t.seed, arch, (r.fitness or {}).get(arch, "") if r.passed else "",
                                     (rec.test_accuracy or {}).get(arch, ""), rec.status, rec.reason or "",
                                     rec.detail, rec.steps, rec.wall_time, t.worker, r.formula or ""])


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (serial) or more, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.rerank", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a run directory (holding search.sqlite and config.yaml)")
    p.add_argument("--top", type=_positive, default=10, help="how many search candidates to retrain (default 10)")
    p.add_argument("--seeds", type=_positive, default=3, help="seeds per candidate (default 3)")
    p.add_argument("--steps", type=_positive,
                   help=f"training steps (default {STEPS_FACTOR}x the search's train.steps)")
    p.add_argument("--workers", type=_count, help="Ray workers (0: serial, in this process; default: the run's "
                                                  "executor settings)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the run's config, after the re-ranking's own (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    args = p.parse_args(argv)
    setup_logging(args.quiet)
    try:
        result = rerank(args.run_dir, args.top, args.seeds, args.steps, args.overrides, args.workers,
                        progress=not args.quiet)
    except (*USAGE_ERRORS, *RESOURCE_ERRORS, RerankError) as err:
        return report_error(err)
    except KeyboardInterrupt:
        print("\ninterrupted; nothing was written", file=sys.stderr)
        return 130
    print(rerank_table(result))
    print()
    print(_summary(result))
    print(f"wrote {result.run_dir / CSV_FILE}, {result.run_dir / RERANK_FILE}, "
          f"{result.run_dir / 'plots' / PLOT_FILE} and {result.run_dir / 'report.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
