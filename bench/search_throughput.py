"""Two code versions' quick searches side by side: how many candidates each evaluates in the same time.

    python bench/search_throughput.py --base cec92ee --head WORKTREE [--seeds 0 1 2] [--set key=value ...]
                                      [--runs /tmp/search_throughput] [--out bench/results] [--name NAME]
                                      [--recount]

A version is what ``commit_bench`` takes (a commit, exported with ``git archive``; ``WORKTREE``; a directory).
For each seed both versions run at the same time, one process each, with their own ``run_search.py`` and
``configs/quick.yaml``, ``seed`` set to the seed, ``executor.num_workers=1`` (one core each on a 2-core
machine) and the ``--set`` overrides; ``PYTHONPATH`` is the version's tree. Running together, both meet the
same machine load. The counts come from the journals (``quick_runs.funnel``): distinct candidates the
evaluator ran (references and duplicates not counted), those of them that trained at least one step (the
others were pre-rejected in milliseconds or failed the stability check), those past the quality check, those
trained to completion, and the training steps per second of evaluation (which, unlike the counts, does not
depend on how many candidates pass). ``--recount`` counts the runs already under ``--runs`` again, running
nothing. Writes ``<name>.csv`` (one row per run) and ``<name>.md`` (the table, with head / base per seed).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from commit_bench import resolve_tree  # noqa: E402
from quick_runs import funnel  # noqa: E402
from search import open_run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUTCOMES = ("references", "prefilter", "stability", "quality", "completed", "other")
FIELDS = ("seed", "role", "version", "evaluated", "trained", "past_quality", "completed", "wall_s") + tuple(
    f"s_{o}" for o in OUTCOMES) + ("steps",)
COUNTS = FIELDS[3:7]


def start(tree: Path, run_dir: Path, seed: int, overrides: list[str]) -> subprocess.Popen:
    """One version's quick search, in the background; its log goes to ``run_dir``.log."""
    cmd = [sys.executable, str(tree / "run_search.py"), "--config", str(tree / "configs" / "quick.yaml"),
           "--out", str(run_dir), "--set", f"seed={seed}", "--set", "executor.num_workers=1"]
    for item in overrides:
        cmd += ["--set", item]
    env = {**os.environ, "PYTHONPATH": str(tree), "RAY_USAGE_STATS_ENABLED": "0"}
    log = open(f"{run_dir}.log", "w")
    return subprocess.Popen(cmd, env=env, cwd=tree, stdout=log, stderr=subprocess.STDOUT)


def _outcome(row) -> str:
    if row.role == "reference":
        return "references"
    if row.status == "ok":
        return "completed"
    reason = (row.reason or "").split("_")[0]
    return reason if reason in OUTCOMES else "other"


def count(run_dir: Path) -> dict:
    """The funnel of one finished run, the candidates that trained at least one step, the evaluators'
    seconds by outcome (``s_quality``: candidates rejected at the quality check, and so on) and the training
    steps of the search's candidates (references not counted)."""
    f = funnel(str(run_dir))
    with open_run(str(run_dir)) as view:
        rows = [r for r in view.candidates() if r.duplicate_of is None and r.finished]
    seconds = {f"s_{o}": round(sum(r.wall_time or 0.0 for r in rows if _outcome(r) == o), 1) for o in OUTCOMES}
    trained = sum(r.role != "reference" and r.steps > 0 for r in rows)
    steps = sum(r.steps for r in rows if r.role != "reference")
    return {"trained": trained, **{k: f[k] for k in ("evaluated", "past_quality", "completed", "wall_s")}, **seconds,
            "steps": steps}


def run(args: argparse.Namespace) -> list[dict]:
    versions = [("base", *resolve_tree(args.base)), ("head", *resolve_tree(args.head))]
    args.runs.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        run_dirs = [args.runs / f"{role}-seed{seed}" for role, _, _ in versions]
        if not args.recount:
            procs = [start(tree, run_dir, seed, args.overrides) for (_, _, tree), run_dir in zip(versions, run_dirs)]
            for proc, (role, _, _), run_dir in zip(procs, versions, run_dirs):
                if proc.wait() != 0:
                    raise RuntimeError(f"the {role} search failed (exit {proc.returncode}); see {run_dir}.log")
        for (role, label, _), run_dir in zip(versions, run_dirs):
            rows.append({"seed": seed, "role": role, "version": label, **count(run_dir)})
    return rows


def table(rows: list[dict]) -> str:
    """Per seed and in total: each version's counts, and head / base for those evaluated and those trained."""
    label = {r["role"]: r["version"] for r in rows}
    out = [f"base: {label.get('base')}", f"head: {label.get('head')}", "",
           "| seed | evaluated: base | head | head / base | trained: base | head | head / base | "
           "past quality: base | head | completed: base | head |", "|---:|" + "---:|" * 10]
    seeds = list(dict.fromkeys(r["seed"] for r in rows))
    by = {(r["seed"], r["role"]): r for r in rows}
    for seed in seeds + [None]:
        pick = [s for s in seeds if seed is None or s == seed]
        n = {(role, k): sum(by[s, role][k] for s in pick) for role in ("base", "head") for k in COUNTS}
        cells = []
        for k in COUNTS:
            cells += [n["base", k], n["head", k]]
            if k in ("evaluated", "trained"):
                cells.append(f"{n['head', k] / n['base', k]:.2f}" if n["base", k] else "-")
        out.append(f"| {'all' if seed is None else seed} | " + " | ".join(map(str, cells)) + " |")
    out += ["", "Evaluation seconds by outcome, all seeds (share of the runs' wall time):", "",
            "| version | " + " | ".join(OUTCOMES) + " |", "|---|" + "---:|" * len(OUTCOMES)]
    for role in ("base", "head"):
        wall = sum(r["wall_s"] for r in rows if r["role"] == role) or 1
        spent = [sum(r[f"s_{o}"] for r in rows if r["role"] == role) for o in OUTCOMES]
        out.append(f"| {role} | " + " | ".join(f"{t:.0f} ({t / wall:.0%})" for t in spent) + " |")
    out += ["", "Training steps of the search's candidates, all seeds: a speed that does not depend on how many of",
            "them pass (the seconds are their evaluations', references not counted):", "",
            "| version | steps | seconds | steps per second |", "|---|---:|---:|---:|"]
    rates = {}
    for role in ("base", "head"):
        steps = sum(r["steps"] for r in rows if r["role"] == role)
        seconds = sum(r[f"s_{o}"] for r in rows if r["role"] == role for o in OUTCOMES if o != "references")
        rates[role] = steps / seconds if seconds else 0.0
        out.append(f"| {role} | {steps} | {seconds:.0f} | {rates[role]:.1f} |")
    out.append(f"| head / base | | | {rates['head'] / rates['base']:.2f} |" if rates["base"] else "| head / base | | | - |")
    return "\n".join(out)


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True)
    p.add_argument("--head", default="WORKTREE")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--runs", type=Path, default=Path("/tmp/search_throughput"), help="where the runs go")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--name", default="search_throughput")
    p.add_argument("--recount", action="store_true", help="count the runs under --runs again; run nothing")
    args = p.parse_args(argv)
    rows = run(args)
    text = table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / f"{args.name}.csv", "w") as f:
        f.write(",".join(FIELDS) + "\n")
        f.writelines(",".join(str(r[k]) for k in FIELDS) + "\n" for r in rows)
    command = " ".join(["python bench/search_throughput.py", *(sys.argv[1:] if argv is None else argv)])
    (args.out / f"{args.name}.md").write_text(f"{command}\n\n{text}\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
