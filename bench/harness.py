"""What the bench scripts share: where results go, the config they start from, their common flags, how they
run evaluations and how they save a table.

The scripts run as ``python bench/NAME.py`` (so this directory is on ``sys.path``) and import it as
``harness``; ``tests/bench/conftest.py`` puts the directory on the path for the tests.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence

from tqdm import tqdm

from search.executor import Job, Outcome, make_executor, run_all
from search.report import write_csv

RESULTS = Path(__file__).resolve().parent / "results"
CONFIG = RESULTS.parents[1] / "configs" / "quick.yaml"
POLL_SECONDS = 5.0  # longest wait for a result before the progress bar refreshes


def parser(doc: str, *, config: bool = True, graphs: bool = False, out: Path = RESULTS) -> argparse.ArgumentParser:
    """A script's parser, described by its docstring's first paragraph, with ``--out``, (unless ``config``
    is false) ``--config`` and repeatable ``--set KEY=VALUE`` overrides, and (with ``graphs``) the size and
    the RNG seed of the random graphs it draws."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    add_common(p, config=config, out=out)
    if graphs:
        p.add_argument("--nodes", type=int, default=10, help="nodes per random graph")
        p.add_argument("--seed", type=int, default=0, help="RNG seed of the graph draws")
    return p


def add_common(p: argparse.ArgumentParser, *, config: bool = True, out: Path = RESULTS) -> None:
    """The common flags on ``p`` (a parser or a sub-command's)."""
    if config:
        p.add_argument("--config", default=str(CONFIG), help="base config (default: the quick search's)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, default=out, help=f"where results go (default: {out})")


def save_csv(out: Path, name: str, rows: Sequence[Mapping], fields: Optional[Sequence[str]] = None) -> Path:
    """Write ``rows`` to ``out/name`` (atomically) and say so."""
    path = Path(out) / name
    write_csv(path, rows, fields)
    print(f"wrote {path}")
    return path


def run_jobs(cfg: Mapping, jobs: Sequence[Job], workers: int, desc: str) -> Iterator[Outcome]:
    """Every job on the config's executor (``workers`` Ray workers, 0: serially in this process), its
    slots kept busy, with a progress bar; outcomes in the order they finish."""
    settings = dict(cfg, executor={**cfg["executor"], "kind": "serial" if workers == 0 else "ray",
                                   "num_workers": workers})
    executor = make_executor(settings)
    try:
        with tqdm(total=len(jobs), desc=desc, unit="eval", dynamic_ncols=True) as bar:
            for outcome in run_all(executor, jobs, POLL_SECONDS):
                bar.update(1)
                yield outcome
    finally:
        executor.close()
