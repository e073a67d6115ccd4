"""See what a search found: ``python -m search.inspect RUN_DIR [--top K] [--json] [--plots]``.

Prints the run summary and a table of the top candidates (Pareto rank, then mean accuracy; with the ``cost``
objective, the rank counts the cost too and a ``cost`` column shows it, relative to BN-ReLU); ``--json`` prints
the same as JSON; ``--plots`` writes PNG pictures under ``RUN_DIR/plots/`` and a ``RUN_DIR/report.md`` that
links them (and the re-ranking section, when ``search.rerank`` has written ``RUN_DIR/rerank.md``). The journal
is opened read-only, so this works on a run that is still going or was interrupted.
"""
from __future__ import annotations

import argparse
import json
import sys

from .command import report_error
from .config import ConfigError
from .journal import JournalError
from .report import saved_sections, table, write_plots, write_report
from .results import open_run

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.inspect", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a run directory (holding search.sqlite and config.yaml)")
    p.add_argument("--top", type=int, default=10, help="how many candidates to list (default 10)")
    p.add_argument("--json", action="store_true", help="print the summary and the top candidates as JSON")
    p.add_argument("--plots", action="store_true", help="write RUN_DIR/plots/*.png and RUN_DIR/report.md")
    p.add_argument("--compare", nargs="*", default=[], metavar="RUN_DIR",
                   help="other runs (e.g. random search) drawn beside this one in the progress plot")
    p.add_argument("--archs", nargs=2, metavar="ARCH", help="the two architectures of the Pareto plot")
    args = p.parse_args(argv)
    try:
        view = open_run(args.run_dir)
        compare = [open_run(d) for d in args.compare]
    except (JournalError, OSError, ConfigError) as err:  # ConfigError: a plug-in of the run's that is gone
        return report_error(err)
    entries = view.leaderboard(args.top)
    summary = view.summary()
    stages = view.stages_reached()
    if args.json:
        print(json.dumps({"run_dir": str(view.run_dir), "summary": summary.__dict__
                          | {"dedup_hit_rate": summary.dedup_hit_rate,
                             "evaluations_per_hour": summary.evaluations_per_hour},
                          "top": [e.as_dict() | {"stage": stages.get(e.row.id, 1)} for e in entries]}, indent=2))
    else:
        print(f"run {view.run_dir} ({view.config['search']['algorithm']})")
        for line in summary.lines():
            print(f"  {line}")
        print()
        print(table(entries, list(view.config["model"]["archs"]), stages=stages))
    if args.plots:
        plots = write_plots(view, entries, compare, args.archs)
        report = write_report(view, entries, plots, saved_sections(view.run_dir))
        print(f"wrote {report} and {len(plots)} pictures in {view.run_dir / 'plots'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
