"""Two code versions side by side: the same full evaluations (EvoNorm-S0 and BN-ReLU on every configured
architecture, by default) with each version's evaluator, on the same data and config, in alternating rounds.

    python bench/commit_bench.py --base cec92ee --head WORKTREE [--config configs/quick.yaml]
                                 [--layers evonorm_s0,bn_relu] [--seeds 0] [--rounds 3] [--set key=value ...]
                                 [--head-set key=value ...]

A version is a commit (anything ``git rev-parse`` takes; its tree is exported with ``git archive``, no
checkout), ``WORKTREE`` (this working tree, uncommitted changes included) or a directory holding a tree.
Each round runs one subprocess per version, ``PYTHONPATH`` set to that version's tree, which loads the data
and then times ``Evaluator.evaluate`` for every layer and seed; the versions take turns going first, so machine
load hits both alike. Both read the config given here (default: this tree's ``configs/quick.yaml``), with the
keys an older evaluator names differently translated for it (``data.val_size`` to ``val_fraction``, a
fractional ``quality.steps`` to a step) and keys it lacks dropped; ``--head-set`` overrides the head's config
alone (``--base X --head X --head-set train.threads=2``: what a change of rounding alone does). The table gives
each version's median and fastest evaluation time per layer, their ratio (head / base), and the fitness per
architecture and seed.
Writes ``bench/results/commit_bench.csv`` (one row per evaluation) and ``commit_bench.txt`` (the table).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
WORKTREE = "WORKTREE"
CACHE = Path(tempfile.gettempdir()) / "commit_bench_trees"


# --- the parent: versions, rounds, the table ---------------------------------------------------------------
def resolve_tree(version: str, repo: Path = REPO, cache: Path | None = None) -> tuple[str, Path]:
    """``(label, tree)`` for a version: this working tree, a directory, or a commit exported once under
    ``cache`` (``git archive``: git's state is left alone)."""
    if version == WORKTREE:
        return WORKTREE, repo
    if Path(version).is_dir():
        return str(version), Path(version).resolve()
    cache = CACHE if cache is None else cache
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", f"{version}^{{commit}}"],
                         check=True, capture_output=True, text=True).stdout.strip()
    tree = cache / sha
    if not (tree / "evaluator").is_dir():
        tmp = Path(tempfile.mkdtemp(dir=cache.mkdir(parents=True, exist_ok=True) or cache))
        archive = subprocess.run(["git", "-C", str(repo), "archive", sha], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        try:
            tmp.rename(tree)
        except OSError:  # another run exported it meanwhile
            pass
    return f"{version} ({sha[:7]})", tree


def run_worker(tree: Path, args: argparse.Namespace, overrides: list[str]) -> list[dict]:
    """One subprocess with ``tree``'s code and these ``--set`` overrides: every layer and seed evaluated once, a
    row per evaluation."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--config", str(Path(args.config).resolve()),
           "--layers", args.layers, "--seeds", *map(str, args.seeds)] + ([] if args.warmup else ["--no-warmup"])
    for item in overrides:
        cmd += ["--set", item]
    env = {**os.environ, "PYTHONPATH": str(tree), "RAY_USAGE_STATS_ENABLED": "0"}
    with tempfile.TemporaryDirectory() as cwd:  # nothing imported from the caller's directory
        proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"the worker for {tree} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    rows = [json.loads(line[len("ROW "):]) for line in proc.stdout.splitlines() if line.startswith("ROW ")]
    for row in rows:
        if Path(row["evaluator"]).resolve().parents[1] != tree.resolve():
            raise RuntimeError(f"the worker for {tree} imported the evaluator from {row['evaluator']}")
    return rows


def run(args: argparse.Namespace) -> list[dict]:
    head_label, head_tree = resolve_tree(args.head)
    if args.head_overrides:
        head_label += " with " + " ".join(args.head_overrides)
    versions = [("base", *resolve_tree(args.base)), ("head", head_label, head_tree)]
    rows = []
    for r in range(args.rounds):
        for role, label, tree in versions if r % 2 == 0 else versions[::-1]:
            print(f"round {r + 1}/{args.rounds}: {role} = {label}", file=sys.stderr, flush=True)
            overrides = args.overrides + (args.head_overrides if role == "head" else [])
            for row in run_worker(tree, args, overrides):
                rows.append({"round": r, "role": role, "version": label, **row})
    return rows


def table(rows: list[dict]) -> str:
    """Times per layer and version (median, fastest), the head/base ratio, and fitness per seed."""
    roles = [role for role in ("base", "head") if any(r["role"] == role for r in rows)]
    label = {r["role"]: r["version"] for r in rows}
    layers = list(dict.fromkeys(r["layer"] for r in rows))

    def times(role, layer=None):
        # one number per (round, seed): the layer's time, or all layers' together
        keys = sorted({(r["round"], r["seed"]) for r in rows if r["role"] == role})
        return [sum(r["wall_time"] for r in rows if r["role"] == role and (r["round"], r["seed"]) == k
                    and (layer is None or r["layer"] == layer)) for k in keys]

    out = [f"base: {label.get('base')}", f"head: {label.get('head')}", "",
           "| layer | base median (s) | base fastest | head median (s) | head fastest | head / base (median) |",
           "|---|---:|---:|---:|---:|---:|"]
    for layer in layers + [None]:
        cells = []
        for role in ("base", "head"):
            t = times(role, layer) if role in roles else []
            cells += [f"{statistics.median(t):.2f}" if t else "-", f"{min(t):.2f}" if t else "-"]
        b, h = (times(role, layer) if role in roles else [] for role in ("base", "head"))
        ratio = f"{statistics.median(h) / statistics.median(b):.2f}" if b and h else "-"
        out.append(f"| {layer or 'all together'} | {' | '.join(cells)} | {ratio} |")
    out += ["", "| layer | seed | arch | base fitness | head fitness |", "|---|---:|---|---:|---:|"]
    for layer in layers:
        for seed in sorted({r["seed"] for r in rows}):
            first = {role: next((r for r in rows if r["role"] == role and r["layer"] == layer and r["seed"] == seed),
                                None) for role in ("base", "head")}
            archs = list(dict.fromkeys(a for r in first.values() if r for a in r["fitness"]))
            for arch in archs or ["-"]:
                cells = [(f"{first[role]['fitness'][arch]:.3f}" if first[role] and arch in first[role]["fitness"]
                          else (first[role]["status"] if first[role] else "-")) for role in ("base", "head")]
                out.append(f"| {layer} | {seed} | {arch} | {cells[0]} | {cells[1]} |")
    return "\n".join(out)


# --- the worker: runs with one version's code on PYTHONPATH ------------------------------------------------
def _parse_value(raw: str):
    import yaml
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def adapt_config(doc: dict, defaults: dict, num_images) -> tuple[dict, list[str]]:
    """The evaluator sections of ``doc`` in the keys a version's ``defaults`` know; ``num_images()`` gives the
    training image count, needed only for an evaluator that holds out a fraction. Returns the document and
    what was changed, for the log."""
    notes = []
    out = {}
    for section, value in doc.items():
        if section not in defaults:
            continue  # the search's sections
        if not isinstance(value, dict) or not isinstance(defaults[section], dict):
            out[section] = value
            continue
        out[section] = dict(value)
    data, quality = out.setdefault("data", {}), out.get("quality", {})
    known_data = defaults.get("data", {})
    if "val_size" in data and "val_size" not in known_data and "val_fraction" in known_data:
        size = data.pop("val_size")
        data["val_fraction"] = size / num_images() if size else 0.0
        notes.append(f"data.val_size={size} -> data.val_fraction={data['val_fraction']:.6g}")
    steps = quality.get("steps")
    if isinstance(steps, float) and 0 < steps < 1 and isinstance(defaults.get("quality", {}).get("steps"), int):
        train_steps = out.get("train", {}).get("steps", defaults["train"]["steps"])
        quality["steps"] = max(1, round(steps * train_steps))
        notes.append(f"quality.steps={steps} -> {quality['steps']}")
    for section, value in out.items():
        if isinstance(value, dict) and isinstance(defaults[section], dict):
            for key in [k for k in value if k not in defaults[section]]:
                notes.append(f"dropped {section}.{key}={value.pop(key)!r} (unknown to this version)")
    return out, notes


def version_config(path: str, overrides: list[str]) -> dict:
    """The config file at ``path`` with ``--set`` overrides, translated for the ``evaluator`` on ``PYTHONPATH``
    (``adapt_config``) and loaded by that version's own ``load_config``; the translations go to stderr."""
    import yaml
    from evaluator import config as config_mod
    from evaluator import data as data_mod

    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    for item in overrides:
        key, _, raw = item.partition("=")
        node = doc
        *parents, last = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = _parse_value(raw)

    def num_images():
        d = doc.get("data", {})
        if d.get("synthetic"):
            return d.get("synthetic_size", config_mod.DEFAULTS["data"].get("synthetic_size"))
        (train_x, _), _ = data_mod.read_cifar10(d.get("root"), d.get("download", False))
        return len(train_x)

    adapted, notes = adapt_config(doc, config_mod.DEFAULTS, num_images)
    for note in notes:
        print(f"config: {note}", file=sys.stderr)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(adapted, f)
    try:
        return config_mod.load_config(f.name)
    finally:
        os.unlink(f.name)


def worker(args: argparse.Namespace) -> None:
    import evaluator
    from evaluator.evaluate import Evaluator

    cfg = version_config(args.config, args.overrides)
    start = time.monotonic()
    ev = Evaluator(cfg)
    load_time = time.monotonic() - start
    if args.warmup:  # first calls (oneDNN's kernel set-up, lazy imports) cost the same in any version
        short = {**cfg, "train": {**cfg["train"], "steps": 2}, "quality": {**cfg["quality"], "enabled": False}}
        Evaluator(short, data=ev.data).evaluate(args.layers.split(",")[0], 0)
    for seed in args.seeds:
        for layer in args.layers.split(","):
            start = time.monotonic()
            record = ev.evaluate(layer, seed)
            wall = time.monotonic() - start
            row = {"layer": layer, "seed": seed, "wall_time": round(wall, 3), "status": str(record.status),
                   "reason": record.reason, "fitness": record.fitness, "steps": record.steps,
                   "load_time": round(load_time, 3), "evaluator": evaluator.__file__}
            print("ROW " + json.dumps(row), flush=True)


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="cec92ee", help="a commit, WORKTREE or a directory (default: cec92ee)")
    p.add_argument("--head", default=WORKTREE, help="a commit, WORKTREE (default) or a directory")
    p.add_argument("--config", default=str(REPO / "configs" / "quick.yaml"))
    p.add_argument("--layers", default="evonorm_s0,bn_relu", help="comma-separated layer names")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="evaluation seeds (default: 0)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--head-set", dest="head_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for the head's config only")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per worker")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for commit_bench.csv and .txt")
    p.add_argument("--name", default="commit_bench", help="file name stem of the results")
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="time the very first evaluation too (default: a 2-step evaluation runs first, untimed)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> str:
    args = parse(argv)
    if args.worker:
        worker(args)
        return ""
    rows = run(args)
    text = table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    import csv
    with open(args.out / f"{args.name}.csv", "w", newline="") as f:
        fields = ["round", "role", "version", "layer", "seed", "wall_time", "status", "reason", "fitness", "steps",
                  "load_time"]
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({**row, "fitness": json.dumps(row["fitness"], sort_keys=True)})
    command = "python bench/commit_bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    (args.out / f"{args.name}.txt").write_text(f"{command}\n\n{text}\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
