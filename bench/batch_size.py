"""Test accuracy of the proxy ResNet against batch size with BN-ReLU, GN-ReLU, EvoNorm-B0 and EvoNorm-S0: does
S0 hold its accuracy as the batch shrinks while BN-ReLU falls? (Liu et al. 2020 report +7.8% for S0 over
BN-ReLU on ResNet-50 at small batch.)

    EVONORM_DATA=/path/to/data python bench/batch_size.py [--config configs/quick.yaml] [--epochs 12]
        [--batch-sizes 128,32,8,2] [--layers bn_relu,gn_relu,evonorm_b0,evonorm_s0] [--seeds 1]
        [--workers 0] [--set key=value ...]

Each cell (layer, batch size, seed) trains the config's ResNet proxy (``model.resnet``) for the same number of
epochs over the training images, so every batch size sees the same images; the learning rate scales linearly
with the batch (``train.lr * batch / train.batch_size``, Goyal et al. 2017) and the schedule is the config's,
stretched over the cell's steps. No rejection checks and no time limit: every cell trains to the end. Unlike
the search's 1.4-epoch proxy, these trainings are long enough to overfit 9k images, so augmentation is on.
The number reported is the accuracy on the test images (2k in the shared subset). EvoNorm-B0 and -S0 are the
seed graphs compiled by ``primitives``, exactly as the search trains them.

The cells run on the executor's Ray workers, one CPU each (``--workers``: 0 uses every core), one batch size
at a time, smallest batches first (they take longest; batch 2 costs most of a sweep). Writes
``bench/results/batch_size.csv`` (one row per cell, rewritten as cells finish, so an interrupted sweep keeps
what it measured) and ``batch_size.png`` (test accuracy against batch size, log2 axis, one line per layer;
error bars span the seeds).
"""
from __future__ import annotations

import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from evaluator.config import merge
from evaluator.data import load_dataset
from evaluator.evaluate import EvalRecord
from search.config import load_config
from search.executor import Job
from search.report import write_csv

import harness

LAYERS = ("bn_relu", "gn_relu", "evonorm_b0", "evonorm_s0")
BATCH_SIZES = (128, 32, 8, 2)
# Applied over the base config, before the command line's --set.
EXPERIMENT = ["model.archs=[resnet]", "prefilter.enabled=false", "quality.enabled=false",
              "stability.enabled=false", "train.test=true", "train.time_limit=1.0e9", "data.augment=true"]
FIELDS = ("layer", "batch_size", "seed", "lr", "epochs", "steps", "status", "reason", "test_accuracy",
          "val_accuracy", "wall_time")


def scaled_lr(base_lr: float, base_batch: int, batch: int) -> float:
    """The linear scaling rule: the learning rate per image stays what the base config uses."""
    return base_lr * batch / base_batch


def epoch_steps(epochs: float, num_train: int, batch: int) -> int:
    """Training steps that cover ``epochs`` passes over ``num_train`` images (at least one step)."""
    return max(1, round(epochs * num_train / batch))


@dataclass(frozen=True)
class Cell:
    layer: str
    batch_size: int
    seed: int
    cfg: Mapping[str, Any]


def make_cells(cfg: Mapping[str, Any], layers, batch_sizes, seeds: int, epochs: float, num_train: int) -> list[Cell]:
    """Every (layer, batch size, seed), each with its own training section; smallest batches (longest) first."""
    train = cfg["train"]
    if max(batch_sizes) > num_train:
        raise ValueError(f"batch size {max(batch_sizes)} exceeds the {num_train} training images")
    cells = []
    for batch in sorted(batch_sizes):
        section = {"batch_size": batch, "lr": scaled_lr(train["lr"], train["batch_size"], batch),
                   "steps": epoch_steps(epochs, num_train, batch)}
        cell_cfg = merge(cfg, {"train": section})
        cells += [Cell(layer, batch, seed, cell_cfg) for layer in layers for seed in range(seeds)]
    return cells


def _row_order(row: dict) -> tuple:
    return row["layer"], -row["batch_size"], row["seed"]


def run_cells(cells: list[Cell], workers: int) -> Iterator[tuple[Cell, EvalRecord]]:
    """Train the cells on the executor, one batch size (one training section) at a time; yields each cell
    with its record as it finishes."""
    for batch in dict.fromkeys(c.batch_size for c in cells):
        group = [c for c in cells if c.batch_size == batch]
        jobs = [Job.of(i, c.seed, None, c.layer) for i, c in enumerate(group)]
        for outcome in harness.run_jobs(group[0].cfg, jobs, workers, f"batch {batch}"):
            yield group[outcome.job.candidate_id], outcome.record


def row_for(cell: Cell, record: EvalRecord, epochs: float) -> dict:
    arch = cell.cfg["model"]["archs"][0]
    return {"layer": cell.layer, "batch_size": cell.batch_size, "seed": cell.seed,
            "lr": round(cell.cfg["train"]["lr"], 6), "epochs": epochs, "steps": cell.cfg["train"]["steps"],
            "status": record.status, "reason": record.reason or "",
            "test_accuracy": round((record.test_accuracy or {}).get(arch, float("nan")), 4),
            "val_accuracy": round(record.fitness.get(arch, float("nan")), 4), "wall_time": round(record.wall_time, 1)}


def accuracies(rows: list[dict]) -> dict[tuple[str, int], list[float]]:
    """Test accuracies of the cells that trained to the end, by (layer, batch size)."""
    out: dict[tuple[str, int], list[float]] = {}
    for r in rows:
        if r["status"] == "ok":
            out.setdefault((r["layer"], r["batch_size"]), []).append(r["test_accuracy"])
    return out


def table(rows: list[dict], layers, batch_sizes) -> list[str]:
    """Mean test accuracy per layer (rows) and batch size (columns), with the change from the largest batch
    to the smallest; ``-`` where no seed trained to the end."""
    acc = accuracies(rows)
    mean = {k: statistics.mean(v) for k, v in acc.items()}
    batches = sorted(batch_sizes, reverse=True)
    lines = [f"{'layer':12s}" + "".join(f"{f'batch {b}':>11s}" for b in batches)
             + f"{f'{batches[0]}->{batches[-1]}':>9s}"]
    for layer in layers:
        cells = [mean.get((layer, b)) for b in batches]
        change = (f"{100 * (cells[-1] - cells[0]):+8.1f}" if None not in (cells[0], cells[-1]) else f"{'-':>8s}")
        lines.append(f"{layer:12s}" + "".join(f"{c:11.3f}" if c is not None else f"{'-':>11s}" for c in cells)
                     + f" {change}")
    small = min(batch_sizes)
    if ("evonorm_s0", small) in mean and ("bn_relu", small) in mean:
        lines.append(f"at batch {small}: evonorm_s0 - bn_relu = "
                     f"{100 * (mean['evonorm_s0', small] - mean['bn_relu', small]):+.1f} points")
    return lines


def plot(rows: list[dict], layers, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = accuracies(rows)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for layer in layers:
        batches = sorted(b for (name, b) in acc if name == layer)
        means = [statistics.mean(acc[layer, b]) for b in batches]
        spread = [[m - min(acc[layer, b]) for m, b in zip(means, batches)],
                  [max(acc[layer, b]) - m for m, b in zip(means, batches)]]
        ax.errorbar(batches, means, yerr=spread, marker="o", capsize=3, label=layer)
    batches = sorted({r["batch_size"] for r in rows})
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("batch size")
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _csv_list(text: str, kind=str) -> list:
    return [kind(item.strip()) for item in text.split(",") if item.strip()]


def main(argv=None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--epochs", type=float, default=12.0, help="passes over the training images, every cell")
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    parser.add_argument("--layers", default=",".join(LAYERS))
    parser.add_argument("--seeds", type=int, default=1, help="training seeds per cell (0, 1, ...)")
    parser.add_argument("--workers", type=int, default=0, help="cells at once, one CPU each (0: every core)")
    args = parser.parse_args(argv)
    if args.epochs <= 0 or args.seeds < 1:
        parser.error(f"--epochs must be positive and --seeds at least 1, got {args.epochs} and {args.seeds}")
    cfg = load_config(args.config, [*EXPERIMENT, *args.overrides], check_search=False)
    layers, batch_sizes = _csv_list(args.layers), _csv_list(args.batch_sizes, int)
    data = load_dataset(cfg["data"], cfg["seed"])
    cells = make_cells(cfg, layers, batch_sizes, args.seeds, args.epochs, len(data.train_y))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{len(cells)} cells on {len(data.train_y)} training images, {args.epochs:g} epochs each; "
          f"lr {cfg['train']['lr']:g} at batch {cfg['train']['batch_size']}, scaled linearly")
    rows = []
    for cell, record in run_cells(cells, args.workers or os.cpu_count() or 1):
        rows.append(row_for(cell, record, args.epochs))
        write_csv(out / "batch_size.csv", sorted(rows, key=_row_order), FIELDS)
    print("\n".join(table(rows, layers, batch_sizes)))
    title = (f"ResNet proxy, {args.epochs:g} epochs, lr {cfg['train']['lr']:g} x batch/{cfg['train']['batch_size']}"
             f", {args.seeds} seed(s); test accuracy ({len(data.test_y)} images)")
    plot(rows, layers, out / "batch_size.png", title)
    print(f"wrote {out / 'batch_size.csv'} and {out / 'batch_size.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
