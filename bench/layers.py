"""Training-step time (forward + backward) and saved-activation memory of normalisation-activation
layers, side by side, as ratios to BatchNorm + ReLU on the same input.

    python bench/layers.py [--threads 1] [--repeats 15] [--shapes 32,64,56,56 ...] [--layouts nchw cl]

Layers: eager ``nn.BatchNorm2d`` + ``nn.ReLU(inplace=True)`` (the baseline), ``nn.GroupNorm`` +
``nn.SiLU(inplace=True)``, timm's EvoNorm2dS0/B0 (when timm is installed), and this project's
EvoNorm2dS0/B0 with ``impl="reference"`` and ``impl="fused"``. Each repeat runs one step of every
layer, so machine load hits them alike, in an order shuffled per repeat (seeded): a step starts with
whatever its predecessor left in cache, and in a fixed order each layer would always follow the same
one (fused S0 the heaviest, reference B0, with the shared input evicted; BN+ReLU the lightest). A
layer's time is its fastest step (the least disturbed one) and the median is kept too. Saved activations are the bytes that autograd packs
(``torch.autograd.graph.saved_tensors_hooks``; one count per storage), in units of the input size.
Fused layers compile on their first call (not timed). glibc's malloc hands large freed blocks back
to the kernel and takes them again on the next step (thousands of page faults, several ms, falling
on whichever layer's allocation order triggers it); ``steady_malloc`` keeps them in the heap, as a
training loop's steady state does, for every layer alike (``--default-malloc`` to skip). Writes ``bench/results/layers.csv`` and
``layers.png`` (``layers_<n>threads.*`` for ``--threads n`` above 1).
"""
from __future__ import annotations

import ctypes
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch
from torch import nn

import evonorm
import harness

SHAPES = ["32,64,56,56", "32,256,14,14", "8,128,28,28"]
LAYOUTS = {"nchw": torch.contiguous_format, "cl": torch.channels_last}


def candidates(channels: int) -> Dict[str, Callable[[], nn.Module]]:
    """Layer factories by name; BN + ReLU first (the baseline)."""
    made = {
        "bn_relu": lambda: nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True)),
        "gn_silu": lambda: nn.Sequential(nn.GroupNorm(32, channels), nn.SiLU(inplace=True)),
    }
    try:
        from timm import layers as timm_layers
        made["timm_s0"] = lambda: timm_layers.EvoNorm2dS0(channels)
        made["timm_b0"] = lambda: timm_layers.EvoNorm2dB0(channels)
    except ImportError:
        pass
    for impl in ("reference", "fused"):
        made[f"{impl}_s0"] = lambda impl=impl: evonorm.EvoNorm2dS0(channels, impl=impl)
        made[f"{impl}_b0"] = lambda impl=impl: evonorm.EvoNorm2dB0(channels, impl=impl)
    return made


def steady_malloc() -> bool:
    """Stop glibc from returning freed tensors' memory to the kernel (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 2**31 - 1))


def saved_bytes(layer: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd keeps for backward after one forward, each storage counted once."""
    seen = {}

    def pack(t):
        seen[(t.untyped_storage().data_ptr(), t.device)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x.detach().clone().requires_grad_(True))
    return sum(seen.values())


def step(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> float:
    """Seconds for forward + backward from fresh gradients."""
    x.grad = None
    layer.zero_grad(set_to_none=True)
    start = time.perf_counter()
    layer(x).backward(grad)
    return time.perf_counter() - start


def measure(shape: List[int], layout: str, repeats: int) -> List[dict]:
    gen = torch.Generator().manual_seed(0)
    fmt = LAYOUTS[layout]
    x = torch.randn(shape, generator=gen).to(memory_format=fmt).requires_grad_(True)
    grad = torch.randn(shape, generator=gen).to(memory_format=fmt)
    layers = {name: make().to(memory_format=fmt).train()
              for name, make in candidates(shape[1]).items()}
    for layer in layers.values():  # warm-up: compilation, allocator, first-call dispatch
        step(layer, x, grad), step(layer, x, grad)
    times = {name: [] for name in layers}
    order = random.Random(0)
    for _ in range(repeats):
        for name in order.sample(list(layers), len(layers)):
            times[name].append(step(layers[name], x, grad))
    base = min(times["bn_relu"])
    size = x.numel() * x.element_size()
    return [{"shape": "x".join(map(str, shape)), "layout": layout, "layer": name,
             "best_ms": round(min(t) * 1e3, 3), "median_ms": round(statistics.median(t) * 1e3, 3),
             "time_vs_bn_relu": round(min(t) / base, 3),
             "saved_vs_input": round(saved_bytes(layers[name], x) / size, 3)}
            for name, t in times.items()]


def plot(rows: List[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cases = list(dict.fromkeys(f"{r['shape']} {r['layout']}" for r in rows))
    names = list(dict.fromkeys(r["layer"] for r in rows))
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.6 * len(cases)), 8))
    width = 0.8 / len(names)
    for key, ax, label, scale in (("time_vs_bn_relu", axes[0], "fwd+bwd time / BN+ReLU", "log"),
                                  ("saved_vs_input", axes[1], "saved activations / input size",
                                   "linear")):
        for i, name in enumerate(names):
            values = [next(r[key] for r in rows if f"{r['shape']} {r['layout']}" == case
                           and r["layer"] == name) for case in cases]
            ax.bar([c + i * width for c in range(len(cases))], values, width, label=name)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks([c + 0.4 - width / 2 for c in range(len(cases))], cases, fontsize=8)
        ax.set_ylabel(label)
        ax.set_yscale(scale)
    axes[0].legend(ncol=4, fontsize=8)
    axes[0].set_title(f"CPU, {torch.get_num_threads()} thread(s), torch {torch.__version__}: "
                      "best of interleaved steps")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = harness.parser(__doc__, config=False)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--shapes", nargs="+", default=SHAPES, help="N,C,H,W each")
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc trimming on (see the module docstring)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steady = not args.default_malloc and steady_malloc()
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), best of {args.repeats} interleaved steps, "
          f"{'steady' if steady else 'default'} malloc")
    rows = []
    for shape in args.shapes:
        for layout in args.layouts:
            result = measure([int(s) for s in shape.split(",")], layout, args.repeats)
            rows += result
            print(f"\n{result[0]['shape']} {layout}: BN+ReLU {result[0]['best_ms']:.2f} ms")
            print(f"  {'layer':<14}{'time/BN':>9}{'median/BN':>11}{'saved/input':>13}")
            base_median = result[0]["median_ms"]
            for r in result:
                print(f"  {r['layer']:<14}{r['time_vs_bn_relu']:>9.2f}"
                      f"{r['median_ms'] / base_median:>11.2f}{r['saved_vs_input']:>13.2f}",
                      flush=True)
    stem = "layers" if args.threads == 1 else f"layers_{args.threads}threads"
    harness.save_csv(args.out, f"{stem}.csv", rows)
    plot(rows, args.out / f"{stem}.png")
    print(f"wrote {args.out / (stem + '.png')}")


if __name__ == "__main__":
    main()
