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
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from evaluator.data import read_cifar10
from evaluator.evaluate import derive_seed
from primitives import graph_to_yaml, load_graph, seeds
from search.config import load_config
from search.driver import prepare_data
from search.executor import Job

import harness

PANEL = Path(__file__).resolve().parent / "panel" / "panel.yaml"
RESULTS = harness.RESULTS / "proxy_fidelity"
TRUTH_CSV = "ground_truth.csv"
PROXIES_CSV = "proxies.csv"
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
    args = parser.parse_args(argv)
    return {"truth": _truth, "proxy": _proxy}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
