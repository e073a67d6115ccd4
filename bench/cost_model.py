"""The cost model (``primitives.cost``) against measured forward-and-backward times, relative to BN-ReLU.

    python bench/cost_model.py [--random 30] [--seed 0] [--nodes 10] [--shape 8,64,16,16] [--repeats 41]
                               [--iters 5] [--threads 1] [--seeds evonorm_b0,...]

Each layer (GN-ReLU, the EvoNorm seed graphs and ``--random`` distinct random graphs of the structural
prior over the paper's ops, compiled by ``primitives``) takes turns with ``nn.BatchNorm2d`` + ReLU: in each
of ``--repeats`` rounds, ``--iters`` training-mode forward and backward passes of BN-ReLU, then as many of the
layer, on one input of ``--shape`` (gradients of the input and every parameter). Its measured cost is the
median over rounds of the ratio of the two times, so machine load hits both alike. Prints Spearman's rho
between the model's cost and the measured one (``search.leaderboard.spearman``), and BN-ReLU's count in the
compiled layers' passes (the median of passes / measured ratio over the graphs, which ``BN_RELU_PASSES``
should match). Writes ``bench/results/cost_model.csv`` and ``cost_model.png``; about 25 s on one core.
"""
from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from primitives import PAPER_OPS, compile_graph, random_graph, resolve_groups, seeds
from primitives.cost import BN_RELU_PASSES, REFERENCE_PASSES, passes, reference_cost, relative_cost
from search.leaderboard import spearman
import harness

FIELDS = ["layer", "kind", "formula", "live_nodes", "passes", "model_cost", "measured_cost", "ms", "bn_relu_ms"]


def layers(num_random: int, seed: int, nodes: int, seed_names: list[str]) -> list[dict]:
    """The layers to time: GN-ReLU, the named seed graphs, then distinct random graphs."""
    out = [{"layer": "gn_relu", "kind": "reference", "graph": None}]
    out += [{"layer": name, "kind": "seed", "graph": seeds.get(name)} for name in seed_names]
    rng, taken = random.Random(seed), {d["graph"].structural_hash() for d in out if d["graph"] is not None}
    while len(out) < 1 + len(seed_names) + num_random:
        graph = random_graph(rng, PAPER_OPS, nodes, "structural")
        if graph.structural_hash() not in taken:
            taken.add(graph.structural_hash())
            out.append({"layer": f"random_{len(out) - 1 - len(seed_names)}", "kind": "random", "graph": graph})
    return out


def module(layer: dict, channels: int, groups: int) -> nn.Module:
    if layer["layer"] == "bn_relu":
        return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
    if layer["layer"] == "gn_relu":
        return nn.Sequential(nn.GroupNorm(resolve_groups(channels, groups), channels), nn.ReLU(inplace=True))
    return compile_graph(layer["graph"], channels, groups=groups)


def seconds(m: nn.Module, x: torch.Tensor, grad: torch.Tensor, iters: int) -> float:
    """Seconds per training-mode forward and backward pass (input and parameter gradients)."""
    inputs = [x, *m.parameters()]
    start = time.perf_counter()
    for _ in range(iters):
        torch.autograd.grad(m(x), inputs, grad)
    return (time.perf_counter() - start) / iters


def measure(todo: list[dict], shape: tuple[int, ...], groups: int, repeats: int, iters: int) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).requires_grad_()
    grad = torch.randn(shape, generator=gen)
    bn = module({"layer": "bn_relu"}, shape[1], groups)
    rows = []
    for layer in todo:
        m = module(layer, shape[1], groups)
        seconds(bn, x, grad, 2), seconds(m, x, grad, 2)  # warm-up: allocator, first-call dispatch
        ratios, ms, base = [], [], []
        for _ in range(repeats):
            t_bn, t = seconds(bn, x, grad, iters), seconds(m, x, grad, iters)
            ratios.append(t / t_bn)
            ms.append(t * 1e3)
            base.append(t_bn * 1e3)
        graph = layer["graph"]
        count = passes(graph) if graph is not None else REFERENCE_PASSES[layer["layer"]]
        rows.append({"layer": layer["layer"], "kind": layer["kind"], "formula": graph.formula() if graph else "",
                     "live_nodes": len(graph.pruned()) if graph else "", "passes": count,
                     "model_cost": round(relative_cost(graph) if graph else reference_cost(layer["layer"]), 3),
                     "measured_cost": round(statistics.median(ratios), 3), "ms": round(statistics.median(ms), 3),
                     "bn_relu_ms": round(statistics.median(base), 3)})
        print(f"{layer['layer']:12s} model {rows[-1]['model_cost']:5.2f}  measured {rows[-1]['measured_cost']:5.2f}"
              f"  {rows[-1]['formula']}", flush=True)
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for kind, marker in (("random", "o"), ("seed", "s"), ("reference", "^")):
        pts = [r for r in rows if r["kind"] == kind]
        ax.scatter([r["model_cost"] for r in pts], [r["measured_cost"] for r in pts], marker=marker, label=kind)
        for r in pts if kind != "random" else ():
            ax.annotate(r["layer"].removeprefix("evonorm_"), (r["model_cost"], r["measured_cost"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    top = max(max(r["model_cost"], r["measured_cost"]) for r in rows) * 1.05
    ax.plot([0, top], [0, top], color="grey", lw=0.8, ls="--", label="measured = model")
    ax.set_xlabel("model cost (primitives.cost, BN-ReLU = 1)")
    ax.set_ylabel("measured forward+backward time / BN-ReLU's")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = harness.parser(__doc__, config=False, graphs=True)
    parser.add_argument("--random", type=int, default=30, help="random graphs to time")
    parser.add_argument("--seeds", default=",".join(seeds.names()), help="seed graphs to time (comma-separated)")
    parser.add_argument("--shape", default="8,64,16,16", help="input shape N,C,H,W")
    parser.add_argument("--groups", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=41, help="rounds; each layer's cost is their median")
    parser.add_argument("--iters", type=int, default=5, help="passes per round and layer")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    if len(shape) != 4 or min(shape) < 1:
        parser.error(f"--shape must be four positive sizes N,C,H,W, got {args.shape!r}")
    if args.random < 0 or args.repeats < 1 or args.iters < 1:
        parser.error("--random must be >= 0, --repeats and --iters >= 1")
    names = [n for n in args.seeds.split(",") if n]
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormals would time the FPU's slow path, not the layer
    try:
        rows = measure(layers(args.random, args.seed, args.nodes, names), shape, args.groups, args.repeats,
                       args.iters)
    finally:  # as they were, for a caller in the same process (the tests)
        torch.set_num_threads(threads)
        torch.set_flush_denormal(False)
    rho = spearman([r["model_cost"] for r in rows], [r["measured_cost"] for r in rows])
    graphs = [r for r in rows if r["kind"] != "reference"]
    unit = statistics.median(r["passes"] / r["measured_cost"] for r in graphs) if graphs else float("nan")
    rho_text = "n/a" if rho is None else f"{rho:.2f}"
    print(f"Spearman(model, measured) over {len(rows)} layers: {rho_text}; BN-ReLU measured as {unit:.1f} passes "
          f"of the compiled layers' (BN_RELU_PASSES = {BN_RELU_PASSES})")
    out = Path(args.out)
    harness.save_csv(out, "cost_model.csv", rows, FIELDS)
    title = (f"{len(rows)} layers, {'x'.join(map(str, shape))}, {args.threads} thread(s): Spearman {rho_text}; "
             f"BN-ReLU = {unit:.1f} passes (model: {BN_RELU_PASSES})")
    plot(rows, out / "cost_model.png", title)
    print(f"wrote {out / 'cost_model.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
