"""How well a proxy fitness ranks layers: a fixed panel, its ground truth, and any proxy scored against it.

    python bench/proxy_fidelity.py truth [--epochs 10] [--seeds 2] [--workers 2]
    python bench/proxy_fidelity.py proxy NAME [--seeds 3] [--set key=value ...]

``truth`` trains every layer of ``bench/panel/panel.yaml`` to convergence on the config's proxy networks:
``--epochs`` passes over every training image, ``--seeds`` seeds (the same for every layer), no rejection
checks, scored on the test batch. Each evaluation is appended to ``ground_truth.csv`` as it finishes, so an
interrupted run resumes where it stopped (run the same command again); seeds come outermost, so a partial
truth has one seed of every layer before it has two of any.

``proxy`` scores the panel with the config's own evaluation (the search's fitness: validation accuracy, with
its rejection checks) after the ``--set`` overrides, and appends it to ``proxies.csv`` under ``NAME``; it
resumes the same way.

``report`` scores every proxy in ``proxies.csv`` against the ground truth and writes ``fidelity.csv`` and
``fidelity.png`` (fidelity against cost), printing the table as Markdown. A layer's score is its mean over
architectures and seeds; an evaluation that did not pass (rejected, failed) scores chance, so such layers
rank last. A proxy of k seeds is the mean of k of its seeds' scores: every k-subset of the seeds measured is
scored and the table gives their mean, with a 90% interval from resampling the panel's layers. Its cost is the mean core-seconds (one thread) per panel evaluation,
times k. The ground truth's own noise sets a ceiling: the row ``truth (seed vs seed)`` ranks the panel with
one truth seed against the other.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import math
import statistics
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import yaml

from evaluator.data import read_cifar10
from evaluator.evaluate import Status
from evaluator.evaluate import derive_seed
from primitives import graph_to_yaml, load_graph, seeds
from search.config import load_config
from search.driver import prepare_data
from search.executor import Job
from search.leaderboard import kendall, spearman

import harness

PANEL = Path(__file__).resolve().parent / "panel" / "panel.yaml"
RESULTS = harness.RESULTS / "proxy_fidelity"
TRUTH_CSV = "ground_truth.csv"
PROXIES_CSV = "proxies.csv"
FIDELITY_CSV = "fidelity.csv"
FIDELITY_PNG = "fidelity.png"
CHANCE = 0.10  # the score of an evaluation that did not pass: ten classes
BOOTSTRAP_DRAWS = 1000  # resamples of the panel's layers for a Spearman's interval
FIELDS = ("proxy", "layer", "seed_index", "seed", "arch", "score", "status", "reason", "steps", "wall_time",
          "train_images", "setting")


@dataclass(frozen=True)
class PanelLayer:
    """A layer of the panel: a reference's name, or a graph (as YAML) with the name it goes by here."""

    name: str
    graph_yaml: Optional[str] = None

    def job(self, index: int, seed: int) -> Job:
        return Job.of(index, seed, self.graph_yaml, self.name)


def load_panel(path: Path = PANEL) -> list[PanelLayer]:
    """The panel's layers in file order: references, seed graphs, then found graphs."""
    doc = yaml.safe_load(path.read_text())
    layers = [PanelLayer(name) for name in doc["references"]]
    layers += [PanelLayer(name, graph_to_yaml(seeds.get(name))) for name in doc["seeds"]]
    for file in doc["found"]:
        graph = load_graph(path.parent / file)
        layers.append(PanelLayer(Path(file).stem, graph_to_yaml(graph)))
    names = [layer.name for layer in layers]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: the panel names a layer twice")
    return layers


def panel_seeds(count: int) -> tuple[int, ...]:
    """The seeds every layer is trained with; the ``i``-th is the same for every layer and every proxy."""
    return tuple(derive_seed(0, "proxy_fidelity", i) for i in range(count))


def truth_overrides(epochs: int, train_images: int, batch_size: int) -> list[str]:
    steps = math.ceil(epochs * train_images / batch_size)
    return ["data.val_size=0", "data.max_train=0", "train.test=true", f"train.steps={steps}",
            f"train.time_limit={max(3600.0, 1.0 * steps)}", "prefilter.enabled=false", "quality.enabled=false",
            "stability.enabled=false"]


def _done(path: Path, proxy: str) -> set[tuple[str, int]]:
    if not path.exists():
        return set()
    with open(path, newline="") as f:
        return {(r["layer"], int(r["seed_index"])) for r in csv.DictReader(f) if r["proxy"] == proxy}


def _train_images(cfg) -> int:
    """How many training images the config's dataset has (read once, before any worker starts)."""
    (train_x, _), _ = read_cifar10(cfg["data"]["root"], cfg["data"]["download"])
    return len(train_x)


def evaluate_panel(proxy: str, cfg, seeds: int, workers: int, csv_path: Path, score: str, setting: str,
                   train_images: int) -> None:
    """Evaluate every panel layer with every seed under ``cfg``, appending one row per architecture to
    ``csv_path``; pairs already there are skipped. ``score`` is ``fitness`` (validation) or ``test``."""
    prepare_data(cfg)
    trained_on = train_images - cfg["data"]["val_size"]  # the validation split is held out of training
    used = min(trained_on, cfg["data"]["max_train"] or trained_on)
    layers = load_panel()
    seed_list = panel_seeds(seeds)
    done = _done(csv_path, proxy)
    jobs = [layer.job(k, seed) for i, seed in enumerate(seed_list) for k, layer in enumerate(layers)
            if (layer.name, i) not in done]
    if not jobs:
        print(f"{proxy}: every layer and seed is in {csv_path} already", file=sys.stderr)
        return
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    new = not csv_path.exists()
    with open(csv_path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(FIELDS)
        for outcome in harness.run_jobs(cfg, jobs, workers, proxy):
            job, rec = outcome.job, outcome.record
            values = rec.fitness if score == "fitness" else (rec.test_accuracy or {})
            for arch in cfg["model"]["archs"]:
                writer.writerow([proxy, layers[job.candidate_id].name, seed_list.index(job.seed), job.seed, arch,
                                 values.get(arch, ""), rec.status, rec.reason or "", rec.steps, rec.wall_time,
                                 used,
                                 setting])
            f.flush()
            os.fsync(f.fileno())


def _truth(args) -> int:
    base = load_config(args.config, check_search=False)
    train_images = _train_images(base)
    overrides = truth_overrides(args.epochs, train_images, base["train"]["batch_size"])
    cfg = load_config(args.config, [*overrides, *args.overrides], check_search=False)
    setting = " ".join([f"epochs={args.epochs}", *args.overrides])
    evaluate_panel("truth", cfg, args.seeds, args.workers, args.out / TRUTH_CSV, "test", setting, train_images)
    return 0


def _proxy(args) -> int:
    cfg = load_config(args.config, args.overrides, check_search=False)
    evaluate_panel(args.name, cfg, args.seeds, args.workers, args.out / PROXIES_CSV, "fitness",
                   " ".join(args.overrides), _train_images(cfg))
    return 0


Scores = dict[str, dict[int, float]]  # layer -> seed index -> mean over architectures (chance if it failed)


def read_scores(path: Path) -> dict[str, tuple[Scores, float]]:
    """Per proxy: each layer's score per seed index, and the mean core-seconds of one evaluation."""
    by_eval: dict[tuple[str, str, int], list[dict]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            by_eval.setdefault((row["proxy"], row["layer"], int(row["seed_index"])), []).append(row)
    out: dict[str, tuple[Scores, list[float]]] = {}
    for (proxy, layer, seed_index), rows in by_eval.items():
        passed = all(r["status"] == Status.OK and r["score"] != "" for r in rows)
        score = statistics.mean(float(r["score"]) for r in rows) if passed else CHANCE
        scores, seconds = out.setdefault(proxy, ({}, []))
        scores.setdefault(layer, {})[seed_index] = score
        seconds.append(float(rows[0]["wall_time"]))
    return {proxy: (scores, statistics.mean(seconds)) for proxy, (scores, seconds) in out.items()}


def _complete_seeds(scores: Scores, layers: Sequence[str]) -> list[int]:
    """The seed indices measured for every one of ``layers``."""
    return sorted(set.intersection(*(set(scores.get(layer, {})) for layer in layers)))


def fidelity(truth: Scores, proxy: Scores, k: int, draws: int = 0) -> Optional[tuple[float, float, tuple]]:
    """Mean Spearman and Kendall of a k-seed proxy against the ground truth (every seed of it) over the
    layers both hold, averaged over every k-subset of the proxy's seeds, and a 90% interval of that
    Spearman from ``draws`` bootstrap resamples of the layers ((nan, nan) without); None if the proxy has
    fewer than k seeds."""
    layers = sorted(set(truth) & set(proxy))
    seeds = _complete_seeds(proxy, layers)
    if len(layers) < 3 or len(seeds) < k:
        return None
    target = np.array([statistics.mean(truth[layer].values()) for layer in layers])
    guesses = [np.array([statistics.mean(proxy[layer][i] for i in subset) for layer in layers])
               for subset in itertools.combinations(seeds, k)]

    def rho(pick) -> float:
        return statistics.mean(spearman(g[pick], target[pick]) or 0.0 for g in guesses)

    everything = np.arange(len(layers))
    tau = statistics.mean(kendall(g, target) or 0.0 for g in guesses)
    rng = np.random.default_rng(0)
    boot = [rho(rng.integers(0, len(layers), len(layers))) for _ in range(draws)]
    interval = tuple(np.quantile(boot, [0.05, 0.95])) if boot else (math.nan, math.nan)
    return rho(everything), tau, interval


def fidelity_rows(truth: Scores, proxies: dict[str, tuple[Scores, float]], truth_seconds: float) -> list[dict]:
    """One row per (proxy, seeds) that can be scored, and the ground truth's seed-vs-seed ceiling."""
    rows = []
    layers = sorted(truth)
    truth_seeds = _complete_seeds(truth, layers)
    if len(truth_seeds) >= 2:
        a, b = truth_seeds[:2]
        x, y = [truth[layer][a] for layer in layers], [truth[layer][b] for layer in layers]
        rows.append({"proxy": "truth (seed vs seed)", "seeds": 1, "layers": len(layers),
                     "spearman": round(spearman(x, y) or 0.0, 3), "spearman_5": "", "spearman_95": "",
                     "kendall": round(kendall(x, y) or 0.0, 3),
                     "core_seconds": round(truth_seconds, 1), "setting": "one truth seed against another"})
    for name, (scores, seconds) in proxies.items():
        if set(truth) - set(scores):  # still being measured: a partial panel is not comparable
            print(f"{name}: {len(set(truth) - set(scores))} of the panel's layers not measured yet; left out",
                  file=sys.stderr)
            continue
        for k in range(1, 1 + len(_complete_seeds(scores, layers))):
            result = fidelity(truth, scores, k, draws=BOOTSTRAP_DRAWS)
            if result is not None:
                rows.append({"proxy": name, "seeds": k, "layers": len(set(truth) & set(scores)),
                             "spearman": round(result[0], 3), "spearman_5": round(result[2][0], 3),
                             "spearman_95": round(result[2][1], 3), "kendall": round(result[1], 3),
                             "core_seconds": round(k * seconds, 1), "setting": ""})
    return rows


def markdown(rows: Sequence[dict]) -> str:
    lines = ["| proxy | seeds | layers | Spearman (90% interval) | Kendall | core-s per layer |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        spread = f" ({r['spearman_5']:+.2f} to {r['spearman_95']:+.2f})" if r["spearman_5"] != "" else ""
        lines.append(f"| {r['proxy']} | {r['seeds']} | {r['layers']} | {r['spearman']:+.2f}{spread} | "
                     f"{r['kendall']:+.2f} | {r['core_seconds']:.0f} |")
    return "\n".join(lines)


def plot_fidelity(rows: Sequence[dict], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name in dict.fromkeys(r["proxy"] for r in rows if not r["proxy"].startswith("truth")):
        mine = [r for r in rows if r["proxy"] == name]
        ax.plot([r["core_seconds"] for r in mine], [r["spearman"] for r in mine], "o-", label=name)
        for r in mine:
            ax.annotate(str(r["seeds"]), (r["core_seconds"], r["spearman"]), xytext=(3, 3),
                        textcoords="offset points", fontsize=7)
    for r in rows:
        if r["proxy"].startswith("truth"):
            ax.axhline(r["spearman"], color="k", ls="--", lw=1, label="truth seed vs seed (ceiling)")
    ax.axhline(0.8, color="C3", ls=":", lw=1, label="target 0.8")
    ax.set_xscale("log")
    ax.set_xlabel("core-seconds per panel layer (log; labels: seeds averaged)")
    ax.set_ylabel("Spearman against the ground truth")
    ax.set_title("Proxy fidelity on the panel", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _report(args) -> int:
    truth_path, proxies_path = args.out / TRUTH_CSV, args.out / PROXIES_CSV
    for path in (truth_path, proxies_path):
        if not path.exists():
            print(f"error: {path} does not exist; run the truth and proxy commands first", file=sys.stderr)
            return 2
    truth_by_proxy = read_scores(truth_path)
    if "truth" not in truth_by_proxy:
        print(f"error: {truth_path} holds no ground truth", file=sys.stderr)
        return 2
    truth, truth_seconds = truth_by_proxy["truth"]
    rows = fidelity_rows(truth, read_scores(proxies_path), truth_seconds)
    harness.save_csv(args.out, FIDELITY_CSV, rows)
    print(f"wrote {plot_fidelity(rows, args.out / FIDELITY_PNG)}")
    print(markdown(rows))
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("truth", "proxy"):
        p = sub.add_parser(name)
        if name == "proxy":
            p.add_argument("name", help="what this proxy setting is called in the CSV and the table")
        p.add_argument("--seeds", type=int, default=2 if name == "truth" else 1)
        p.add_argument("--workers", type=int, default=2, help="Ray workers (0: serial, in this process)")
        harness.add_common(p, out=RESULTS)
        if name == "truth":
            p.add_argument("--epochs", type=int, default=10)
    report = sub.add_parser("report")
    report.add_argument("--out", type=Path, default=RESULTS, help=f"where the CSVs are (default: {RESULTS})")
    args = parser.parse_args(argv)
    return {"truth": _truth, "proxy": _proxy, "report": _report}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
