"""Milliseconds per training step of each proxy network with BN-ReLU, the compiled EvoNorm-S0 and -B0 seeds,
and a typical surviving random candidate, measured side by side in one process.

    python bench/step_time.py [--config configs/quick.yaml] [--archs resnet,mobilenetv2,efficientnet]
                              [--set key=value ...] [--repeats 5] [--steps 10]

A step is what the evaluator runs: batch assembly (augmented when configured), forward, backward and the
SGD update, with the config's network sizes, batch size and torch threads. The layers take turns (one round
of ``--steps`` steps each, ``--repeats`` rounds), so machine load hits them alike; the table reports each
layer's fastest round (the least disturbed by other processes; median and slowest beside it) and its ratio
to BN-ReLU on the same network. Writes ``bench/results/step_time.csv`` and ``step_time.png``.
"""
from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

import torch

from evaluator.config import load_config
from evaluator.data import load_dataset
from evaluator.evaluate import Evaluator, derive_seed
from evaluator.models import NormActFactory, build_model
from evaluator.train import Trainer
from primitives import PAPER_OPS, random_graph
import harness



def typical_survivor(cfg: dict, data, seed: int = 0, pool: int = 9):
    """A typical candidate that the search trains: of the first ``pool`` random 10-node graphs over the paper's
    ops (drawn from ``seed``) that the evaluator keeps through the pre-rejection, the stability check and ten
    training steps, the one with the median number of live nodes."""
    rng = random.Random(seed)
    short = Evaluator({**cfg, "train": {**cfg["train"], "steps": 10}, "quality": {**cfg["quality"], "enabled": False}},
                      data=data)
    survivors = []
    for _ in range(100 * pool):
        graph = random_graph(rng, PAPER_OPS, 10)
        if short.evaluate(graph, seed).status == "ok":
            survivors.append(graph)
            if len(survivors) == pool:
                return sorted(survivors, key=lambda g: len(g.pruned()))[pool // 2]
    raise RuntimeError(f"fewer than {pool} surviving random candidates in {100 * pool} draws")


def measure(cfg: dict, data, layers: dict, repeats: int, steps: int) -> list[dict]:
    rows = []
    for arch in cfg["model"]["archs"]:
        trainers = {}
        for name, layer in layers.items():
            torch.manual_seed(derive_seed(0, arch, "init"))
            m = cfg["model"]
            model = build_model(arch, m, NormActFactory(layer, m["groups"], m["eps"], m["momentum"]))
            train_cfg = {**cfg["train"], "steps": (repeats + 1) * steps + 1}
            trainers[name] = Trainer(model, data, train_cfg, derive_seed(0, arch, "data"),
                                     cfg["train"]["lr_scale"][arch])
            trainers[name].train_to(2)  # warm-up: allocator, first-call dispatch
        times = {name: [] for name in layers}
        for _ in range(repeats):
            for name, trainer in trainers.items():
                start = time.perf_counter()
                trainer.train_to(trainer.step + steps)
                times[name].append((time.perf_counter() - start) / steps * 1e3)
        base = min(times["bn_relu"])
        for name in layers:
            ms = min(times[name])
            rows.append({"arch": arch, "layer": name, "ms_per_step": round(ms, 2),
                         "ratio_to_bn_relu": round(ms / base, 2),
                         "median_ms": round(statistics.median(times[name]), 2), "max_ms": round(max(times[name]), 2)})
            print(f"{arch:13s} {name:22s} {ms:8.1f} ms/step  x{ms / base:.2f}  "
                  f"(median {statistics.median(times[name]):.1f}, max {max(times[name]):.1f})", flush=True)
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = list(dict.fromkeys(r["arch"] for r in rows))
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    width = 0.8 / len(layers)
    fig, ax = plt.subplots(figsize=(2.5 + 2.2 * len(archs), 4))
    for i, layer in enumerate(layers):
        values = [next(r for r in rows if r["arch"] == a and r["layer"] == layer) for a in archs]
        xs = [j + i * width for j in range(len(archs))]
        bars = ax.bar(xs, [v["ms_per_step"] for v in values], width, label=layer)
        for bar, v in zip(bars, values):
            ax.annotate(f"x{v['ratio_to_bn_relu']:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7)
    ax.set_xticks([j + width * (len(layers) - 1) / 2 for j in range(len(archs))], archs)
    ax.set_ylabel("ms per training step")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--archs", default="resnet,mobilenetv2,efficientnet",
                        help="families to measure, at the config's sizes (default: all three)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, [f"model.archs=[{args.archs}]", *args.overrides], foreign_sections=True)
    torch.set_num_threads(cfg["train"]["threads"])
    data = load_dataset(cfg["data"], cfg["seed"])
    survivor = typical_survivor(cfg, data)
    print(f"typical surviving candidate: {survivor.formula()}")
    layers = {"bn_relu": "bn_relu", "evonorm_s0 (compiled)": "evonorm_s0", "evonorm_b0 (compiled)": "evonorm_b0",
              "random survivor": survivor}
    rows = measure(cfg, data, layers, args.repeats, args.steps)
    out = Path(args.out)
    harness.save_csv(out, "step_time.csv", rows)
    title = (f"batch {cfg['train']['batch_size']}, {cfg['train']['threads']} thread(s); "
             f"random survivor: {survivor.formula()}")
    plot(rows, out / "step_time.png", title)
    print(f"wrote {out / 'step_time.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
