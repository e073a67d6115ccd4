"""The proxies' depthwise convolutions: oneDNN (``F.conv2d``) against ``evaluator.depthwise``'s C++ loops, side
by side in one process.

    python bench/depthwise.py [--config configs/quick.yaml] [--archs mobilenetv2,efficientnet]
                              [--set key=value ...] [--repeats 7] [--calls 50]

The shapes are those of the configured networks at the training batch size (one forward pass records each
depthwise convolution's input), in the trainer's memory format, on ``train.threads`` threads. For each shape
both implementations take turns (``--repeats`` rounds of ``--calls`` calls each) at three jobs: the forward
pass, forward and backward (both gradients, as a training step needs them) and the stability check's
second order (the gradient of the squared input and weight gradients). The table gives each one's fastest
round in microseconds and the ratio ours / oneDNN; the last rows sum over the shapes. Writes
``bench/results/depthwise.csv``.
"""
from __future__ import annotations

import time
from collections import Counter

import torch
import torch.nn.functional as F

from evaluator.config import load_config
from evaluator.depthwise import DepthwiseConv2d
from evaluator.models import NormActFactory, build_model
from evaluator.train import memory_format
import harness

JOBS = ("forward", "forward+backward", "second order")


def shapes(cfg: dict, arch: str) -> list[tuple[int, int, int, int, int, int]]:
    """(N, C, H, W, kernel, stride) of each depthwise convolution in ``arch``, in order, without repeats."""
    model = build_model(arch, cfg["model"], NormActFactory("bn_relu"))
    seen: dict[tuple, None] = {}
    convs = [m for m in model.modules() if isinstance(m, DepthwiseConv2d)]

    def record(module, args):
        seen.setdefault((*args[0].shape, module.kernel_size[0], module.stride[0]), None)

    hooks = [m.register_forward_pre_hook(record) for m in convs]
    with torch.no_grad():
        model(torch.zeros(cfg["train"]["batch_size"], 3, 32, 32))
    for h in hooks:
        h.remove()
    return list(seen)


def job(name: str, forward, x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor):
    if name == "forward":
        return lambda: forward(x, weight)
    if name == "forward+backward":
        return lambda: torch.autograd.grad(forward(x, weight), (x, weight), grad)

    def second():
        gx, gw = torch.autograd.grad(forward(x, weight), (x, weight), grad, create_graph=True)
        return torch.autograd.grad(gx.square().sum() + gw.square().sum(), (x, weight))
    return second


def fastest(fn, repeats: int, calls: int) -> list[float]:
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        rounds.append((time.perf_counter() - start) / calls * 1e6)
    return rounds


def main(argv=None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--archs", default="mobilenetv2,efficientnet")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides, foreign_sections=True)
    torch.set_num_threads(cfg["train"]["threads"])
    layout = memory_format(cfg["train"]["channels_last"])
    rows, totals = [], Counter()
    for arch in args.archs.split(","):
        for n, c, h, w, k, s in shapes(cfg, arch):
            torch.manual_seed(0)
            conv = DepthwiseConv2d(c, k, s).to(memory_format=layout)
            x = torch.randn(n, c, h, w).contiguous(memory_format=layout).requires_grad_()
            weight = conv.weight
            grad = torch.randn_like(conv(x))
            impls = {"onednn": lambda t, v: F.conv2d(t, v, None, s, k // 2, 1, c),
                     "ours": lambda t, v: conv(t)}  # v is conv.weight
            for name in JOBS:
                fns = {impl: job(name, f, x, weight, grad) for impl, f in impls.items()}
                for fn in fns.values():
                    fn()
                times = {impl: [] for impl in fns}
                for _ in range(args.repeats):  # interleaved: one round each, in turn
                    for impl, fn in fns.items():
                        times[impl] += fastest(fn, 1, args.calls)
                best = {impl: min(t) for impl, t in times.items()}
                rows.append({"arch": arch, "shape": f"{n}x{c}x{h}x{w}", "kernel": k, "stride": s, "job": name,
                             "onednn_us": round(best["onednn"], 1), "ours_us": round(best["ours"], 1),
                             "ratio": round(best["ours"] / best["onednn"], 3)})
                totals[(arch, name, "onednn")] += best["onednn"]
                totals[(arch, name, "ours")] += best["ours"]
        for name in JOBS:
            o, b = totals[(arch, name, "ours")], totals[(arch, name, "onednn")]
            rows.append({"arch": arch, "shape": "all", "kernel": "", "stride": "", "job": name,
                         "onednn_us": round(b, 1), "ours_us": round(o, 1), "ratio": round(o / b, 3)})
    print("| arch | shape (N,C,H,W) | k | stride | job | oneDNN (us) | ours (us) | ours / oneDNN |")
    print("|---|---|---:|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['arch']} | {r['shape']} | {r['kernel']} | {r['stride']} | {r['job']} | {r['onednn_us']} | "
              f"{r['ours_us']} | {r['ratio']:.2f}x |")
    harness.save_csv(args.out, "depthwise.csv", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
