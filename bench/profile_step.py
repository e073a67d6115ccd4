"""Where a proxy training step's time goes: convolutions, candidate layers, other ops, Python overhead, the
optimizer, data, and validation, per layer and architecture, for one config (default: the quick search's).

    python bench/profile_step.py [--config configs/quick.yaml] [--layers evonorm_s0,bn_relu,graph.yaml]
                                 [--steps 40] [--profiled 20] [--set key=value ...] [--name profile_step]

A layer is a name (a reference or a seed) or a graph file (``.yaml``, as ``save_graph`` writes them and
``search.export`` reads them), so the random candidates a search journal holds can be profiled too.

For each layer and architecture it builds the network and trainer as the evaluator does and then:

* times ``--steps`` steps with plain timers, split into data (the batch), forward+backward, and the optimizer
  (zero_grad, step, schedule), and times one validation pass (the evaluator runs two per architecture: the
  quality check and the final score);
* runs ``--profiled`` more steps under ``torch.profiler`` and splits forward+backward into convolutions (their
  forward ops and ``ConvolutionBackward``), the normalization-activation layers (every op inside a norm slot's
  forward, and the backward nodes those ops created, matched by autograd sequence number), other ops (pooling,
  the classifier, the loss, residual adds) and Python overhead (the time between top-level ops). Those
  fractions scale the timed forward+backward, since the profiler slows what it watches.

It imports ``evaluator`` from ``PYTHONPATH``, so ``PYTHONPATH=/path/to/old/tree python bench/profile_step.py``
profiles another version (with the config translated as ``commit_bench`` does). Writes
``bench/results/<name>.csv`` and ``<name>.txt``.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
from commit_bench import version_config  # noqa: E402

import evaluator  # noqa: E402
from evaluator import train as train_mod  # noqa: E402
from evaluator.evaluate import Evaluator, derive_seed  # noqa: E402
from evaluator.models import build_model, resolve_layer  # noqa: E402
from evaluator.train import Trainer  # noqa: E402
from primitives import load_graph  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONV = ("aten::conv2d", "aten::convolution", "aten::_convolution", "aten::mkldnn_convolution")
COLUMNS = ("conv", "norm", "other_ops", "python", "optimizer", "data")


class _Tagged:
    """Wraps a norm-act factory so that every slot's forward runs inside ``record_function('norm_slot')``."""

    def __init__(self, factory):
        self.factory = factory

    def __call__(self, *args, **kwargs):
        module = self.factory(*args, **kwargs)
        scopes = []

        def enter(mod, inputs):
            scope = record_function("norm_slot")
            scope.__enter__()
            scopes.append(scope)

        def leave(mod, inputs, output):
            scopes.pop().__exit__(None, None, None)

        module.register_forward_pre_hook(enter)
        module.register_forward_hook(leave)
        return module


def _batch(trainer: Trainer):
    get = getattr(trainer, "batch", trainer.data.train_batch)  # older trainers have no batch()
    return get(trainer.order.next(), trainer.generator)


def _step(trainer: Trainer, x, y, split: dict | None = None):
    t0 = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(trainer.model(x), y)
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    t1 = time.perf_counter()
    trainer.optimizer.step()
    trainer.schedule.step()
    trainer.step += 1
    if split is not None:
        split["fwd_bwd"] += t1 - t0
        split["optimizer"] += time.perf_counter() - t1


def timed_steps(trainer: Trainer, steps: int) -> dict:
    split = {"data": 0.0, "fwd_bwd": 0.0, "optimizer": 0.0}
    for _ in range(steps):
        t0 = time.perf_counter()
        x, y = _batch(trainer)
        split["data"] += time.perf_counter() - t0
        _step(trainer, x, y, split)
    return {k: v / steps for k, v in split.items()}


def profiled_fractions(trainer: Trainer, steps: int) -> dict:
    """Fractions of forward+backward time in conv, layer, other ops and Python overhead."""
    batches = [_batch(trainer) for _ in range(steps)]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for x, y in batches:
            with record_function("fwd_bwd"):
                loss = torch.nn.functional.cross_entropy(trainer.model(x), y)
                trainer.optimizer.zero_grad(set_to_none=True)
                loss.backward()
            trainer.optimizer.step()
            trainer.schedule.step()
            trainer.step += 1
    events = prof.events()
    layer_seq = set()
    for e in events:  # forward ops inside a norm slot: the sequence numbers of the autograd nodes they made
        if e.name == "norm_slot":
            stack = list(e.cpu_children)
            while stack:
                c = stack.pop()
                if c.sequence_nr >= 0:
                    layer_seq.add(c.sequence_nr)
                stack.extend(c.cpu_children)
    total = {k: 0.0 for k in ("conv", "norm", "other_ops", "python")}
    for region in (e for e in events if e.name == "fwd_bwd"):
        busy = 0.0
        for c in region.cpu_children:
            t = c.cpu_time_total
            busy += t
            name = c.name
            if name == "norm_slot":
                total["norm"] += t
            elif name in CONV or name.endswith("ConvolutionBackward0"):
                total["conv"] += t
            elif name.startswith("autograd::engine::evaluate_function") and c.sequence_nr in layer_seq:
                total["norm"] += t
            elif name.startswith("autograd::engine::evaluate_function") and _seq_of(c) in layer_seq:
                total["norm"] += t
            else:
                total["other_ops"] += t
        total["python"] += max(0.0, region.cpu_time_total - busy)
    whole = sum(total.values()) or 1.0
    return {k: v / whole for k, v in total.items()}


def _seq_of(event) -> int:
    """The sequence number of the autograd node an engine event runs (kept on its first child)."""
    for c in event.cpu_children:
        if c.sequence_nr >= 0:
            return c.sequence_nr
    return -1


def resolve(layer: str):
    """A layer name as the evaluator resolves it, or the graph in a ``.yaml`` file."""
    return load_graph(layer) if layer.endswith((".yaml", ".yml")) else resolve_layer(layer)


def _numerics(cfg: dict):
    """The evaluator's float settings (subnormals flushed), as in an evaluation; an older one has none."""
    flush = getattr(train_mod, "flush_denormal", None)
    return flush(cfg["train"]["flush_denormal"]) if flush else contextlib.nullcontext()


def profile_one(ev: Evaluator, cfg: dict, layer: str, arch: str, steps: int, profiled: int, seed: int) -> dict:
    torch.manual_seed(derive_seed(seed, arch, "init"))
    model = build_model(arch, cfg["model"], _Tagged(ev._factory(resolve(layer))))
    trainer = Trainer(model, ev.data, cfg["train"], derive_seed(seed, arch, "data"), cfg["train"]["lr_scale"][arch])
    with _numerics(cfg):
        timed_steps(trainer, 5)  # warm-up: first calls set up kernels
        split = timed_steps(trainer, steps)
        t0 = time.perf_counter()
        trainer.accuracy()
        validation = time.perf_counter() - t0
        fractions = profiled_fractions(trainer, profiled)
    row = {"layer": layer, "arch": arch}
    for k in ("conv", "norm", "other_ops", "python"):
        row[k] = 1e3 * split["fwd_bwd"] * fractions[k]
    row["optimizer"] = 1e3 * split["optimizer"]
    row["data"] = 1e3 * split["data"]
    row["step"] = sum(row[k] for k in COLUMNS)
    row["validation_s"] = validation
    # what a full evaluation spends on training and validation (the quality check reads validation too)
    row["eval_train_s"] = row["step"] * cfg["train"]["steps"] / 1e3
    row["eval_val_s"] = validation * (2 if cfg["quality"]["enabled"] else 1)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


def summary(rows: list[dict], source: str) -> str:
    out = [f"evaluator: {source}", "",
           "ms per training step (forward+backward split by torch.profiler, scaled to the timed total); "
           "validation: s per pass",
           "",
           "| layer | arch | conv | norm slots | other ops | python | optimizer | data | step | validation | "
           "train+val per eval (s) |",
           "|---|---|" + "---:|" * 9]
    for r in rows:
        out.append(f"| {r['layer']} | {r['arch']} | " + " | ".join(f"{r[k]:.1f}" for k in COLUMNS + ("step",))
                   + f" | {r['validation_s']:.2f} | {r['eval_train_s'] + r['eval_val_s']:.1f} |")
    return "\n".join(out)


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO / "configs" / "quick.yaml"))
    p.add_argument("--layers", default="evonorm_s0,bn_relu")
    p.add_argument("--archs", default=None, help="comma-separated (default: the config's)")
    p.add_argument("--steps", type=int, default=40, help="timed steps per network")
    p.add_argument("--profiled", type=int, default=20, help="profiled steps per network")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--name", default="profile_step")
    args = p.parse_args(argv)
    cfg = version_config(args.config, args.overrides)
    ev = Evaluator(cfg)
    archs = args.archs.split(",") if args.archs else cfg["model"]["archs"]
    rows = [profile_one(ev, cfg, layer, arch, args.steps, args.profiled, args.seed)
            for layer in args.layers.split(",") for arch in archs]
    source = str(Path(evaluator.__file__).resolve().parents[1])
    text = summary(rows, source)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / f"{args.name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (args.out / f"{args.name}.txt").write_text(text + "\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
