"""The funnel of finished searches, one row each: what the issue "the search finds normalizers" asks of a quick run.

    python bench/quick_runs.py RUN_DIR [RUN_DIR ...] [--csv bench/results/quick_runs.csv]

For each run: its wall time, the distinct functions it evaluated (fingerprints, duplicates not counted), how
many trained past the quality check (passed it on every architecture, whatever happened afterwards), how many
trained to completion, the references' mean fitness, and the best search candidate with its layer class
(``primitives.classify``). Reads the journals only.
"""
from __future__ import annotations

import argparse
import sys

from evaluator.config import quality_step
from primitives.classify import layer_class
from search import open_run
from search.report import write_csv

FIELDS = ("run", "wall_s", "evaluated", "distinct_fingerprints", "past_quality", "completed", "children",
          "bn_relu", "evonorm_s0", "best_id", "best_role", "best_fitness", "best_class", "best_formula")
FAILED_AFTER_QUALITY = ("nonfinite", "timeout", "exception")


def funnel(run_dir: str) -> dict:
    with open_run(run_dir) as view:
        rows, cfg, sessions = view.candidates(), view.config, view.sessions()
    quality_steps = quality_step(cfg) * len(cfg["model"]["archs"])
    evaluated = [r for r in rows if r.role != "reference" and r.duplicate_of is None and r.finished]
    ok = [r for r in evaluated if r.status == "ok"]
    past = [r for r in evaluated if r.status == "ok" or (r.reason in FAILED_AFTER_QUALITY and r.steps > quality_steps)]
    refs = {r.name: r.mean_fitness for r in rows if r.role == "reference" and r.status == "ok"}
    best = max(ok, key=lambda r: (r.mean_fitness, -r.id)) if ok else None
    return {
        "run": run_dir, "wall_s": round(sum((s.ended_at or s.started_at) - s.started_at for s in sessions)),
        "evaluated": len(evaluated), "distinct_fingerprints": len({r.fingerprint for r in evaluated if r.fingerprint}),
        "past_quality": len(past), "completed": len(ok), "children": sum(r.role == "child" for r in evaluated),
        "bn_relu": refs.get("bn_relu"), "evonorm_s0": refs.get("evonorm_s0"),
        "best_id": best.id if best else None, "best_role": best.role if best else None,
        "best_fitness": round(best.mean_fitness, 4) if best else None,
        "best_class": layer_class(best.graph) if best else None, "best_formula": best.formula if best else None,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--csv", default=None, help="also write the rows to this CSV file")
    args = parser.parse_args(argv)
    rows = [funnel(r) for r in args.runs]
    print("| " + " | ".join(FIELDS) + " |")
    print("|" + "---|" * len(FIELDS))
    for r in rows:
        print("| " + " | ".join("-" if r[k] is None else f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k])
                                for k in FIELDS) + " |")
    if args.csv:
        write_csv(args.csv, rows, FIELDS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
