"""The search's command line (``run_search.py``, ``python -m search``, the ``evonorm-search`` script).

Exit status: 0 when the run stopped at a budget, 2 for a bad config or command line (the message names the
key and the file), a damaged journal or a run that another driver holds, 1 when the data, the workers or the
disk are unusable, 130 when interrupted (with the command that resumes the run).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from .command import RESOURCE_ERRORS, USAGE_ERRORS, report_error, setup_logging
from .config import ConfigError, find_config, load_config
from .results import RunResult, describe_fitness, open_run
from .driver import default_run_dir, resume, run

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=_program(), description="Evolve normalization-activation layers (Liu et al., NeurIPS 2020).")
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument("--config", help="search config: a YAML file, or the name of a shipped one (quick)")
    start.add_argument("--resume", metavar="RUN_DIR", help="continue the interrupted run in RUN_DIR")
    p.add_argument("--from-backup", action="store_true",
                   help="with --resume: resume from the journal's last backup (when the journal is damaged)")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/<algorithm>-<time>)")
    p.add_argument("--address", help="join this Ray cluster (e.g. auto, ray://head:10001) instead of starting one")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set search.max_evaluations=50 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    return p


def _program() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "run_search.py"
    if name == "__main__.py":
        return "python -m search"
    return f"python {name}" if name.endswith(".py") else name


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.quiet)
    overrides = list(args.overrides)
    if args.address:
        overrides += ["executor.kind=ray", f"executor.address={args.address}"]
    signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's stop is recorded like Ctrl-C
    # a shell that starts us in the background hands down SIGINT ignored; Ctrl-C must still stop cleanly
    signal.signal(signal.SIGINT, signal.default_int_handler)
    run_dir = None
    try:
        if args.resume:
            if args.out:
                raise ConfigError("--out cannot be combined with --resume (the run stays in its directory)")
            run_dir = Path(args.resume)
            result = resume(run_dir, overrides, progress=not args.quiet, from_backup=args.from_backup)
        else:
            if args.from_backup:
                raise ConfigError("--from-backup goes with --resume RUN_DIR")
            cfg = load_config(find_config(args.config), overrides)
            run_dir = Path(args.out) if args.out else default_run_dir(cfg)
            result = run(cfg, run_dir, progress=not args.quiet)
    except (*USAGE_ERRORS, *RESOURCE_ERRORS) as err:
        return report_error(err)
    except KeyboardInterrupt:
        if run_dir is not None and (run_dir / "search.sqlite").exists():
            print(f"\ninterrupted; in-flight evaluations were recorded as abandoned. Resume with:\n"
                  f"  {_program()} --resume {run_dir}", file=sys.stderr)
        return 130
    _report(result)
    return 0


def _report(result: RunResult) -> None:
    print(f"run directory: {result.run_dir}  (stopped: {result.stop_reason})")
    for line in result.summary.lines():
        print(f"  {line}")
    ranked = {}
    if result.references:
        with open_run(result.run_dir) as view:
            ranked = view.places()
    for name, row in result.references.items():
        place = f"  rank {ranked[row.id]} passed" if row.id in ranked else ""
        print(f"  reference {name}: {describe_fitness(row)}{place}")
    if result.best is None:
        print("  no candidate passed every check")
    else:
        b = result.best
        print(f"  best #{b.id}: {describe_fitness(b)}  {b.formula}")
