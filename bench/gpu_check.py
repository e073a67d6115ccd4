"""The GPU path in one run: the fused kernels against the reference, the layers' speed and memory, and a
short search on fractional GPUs against the same search on the CPU.

    python bench/gpu_check.py [--search-seconds 90] [--set KEY=VALUE ...]

1. EvoNorm-S0/B0 with ``impl="fused"`` (Triton on CUDA) against ``impl="reference"`` in float64, forward and
   every gradient, in float32, bfloat16 and float16, on odd shapes (batch 1, 1x1 spatial, channels that the
   groups do not divide);
2. forward+backward time and peak memory of the fused layers, BN+ReLU, timm's EvoNorm and ``torch.compile``
   of timm's, in NCHW and channels_last;
3. the quick search for ``--search-seconds`` with ``executor.gpus_per_eval: 0.25``, then on the CPU cores,
   as evaluations per hour.

Without CUDA it says so and runs what it can: part 1 checks the CPU kernels, part 2 runs one small shape
(memory is then the bytes autograd saves), part 3 runs a tiny CPU search only. It exits 0 unless a check
fails. Takes under 8 minutes on one GPU; CI runs it on the CPU (``tests/bench/test_gpu_check.py``).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import torch

import evonorm
import harness

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
DTYPES = {"float32": (torch.float32, 2e-5), "bfloat16": (torch.bfloat16, 3e-2), "float16": (torch.float16, 5e-3)}
ODD_SHAPES = [(1, 24, 1, 1), (3, 40, 7, 9), (2, 96, 13, 11), (5, 36, 5, 3)]  # 36 and 40: groups of 32 do not divide
TIMED_SHAPES = ["32,64,56,56", "32,256,14,14", "8,128,28,28"] if CUDA else ["8,64,28,28"]
LAYOUTS = {"nchw": torch.contiguous_format, "cl": torch.channels_last}
# Evaluations that run at once on one GPU, and the tiny search that stands in for the real one without CUDA.
GPU_SHARE = 0.25
TINY_SEARCH = ["data.synthetic=true", "data.synthetic_size=640", "data.val_size=160", "model.groups=4",
               "model.resnet.width=0.5", "model.mobilenetv2.width=0.5", "train.steps=30", "quality.steps=10",
               "quality.min_accuracy=0.0", "search.max_evaluations=8", "search.max_initial=8"]


# --- 1. the kernels against the reference ---------------------------------------------------------------
def _layer(variant: str, channels: int, impl: str, dtype: torch.dtype) -> torch.nn.Module:
    cls = evonorm.EvoNorm2dS0 if variant == "S0" else evonorm.EvoNorm2dB0
    layer = cls(channels, impl=impl, dtype=dtype).to(DEVICE).train()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.copy_(torch.randn(channels, generator=g) * 0.8 + (name != "bias"))
    return layer


def _pass(layer: torch.nn.Module, x: torch.Tensor, grad_y: torch.Tensor) -> list[torch.Tensor]:
    x = x.detach().requires_grad_(True)
    y = layer(x)
    y.backward(grad_y)
    return [y, x.grad, *(p.grad for p in layer.parameters())]


def check_kernels() -> bool:
    print(f"\n1. fused EvoNorm against the float64 reference ({'Triton' if CUDA else 'CPU kernels'})")
    ok = True
    for variant in ("S0", "B0"):
        for name, (dtype, tol) in DTYPES.items():
            for layout, fmt in LAYOUTS.items():
                worst = 0.0
                for shape in ODD_SHAPES:
                    g = torch.Generator().manual_seed(sum(shape))
                    x64 = (torch.randn(shape, generator=g, dtype=torch.float64) * 1.5 + 0.3)
                    gy64 = torch.randn(shape, generator=g, dtype=torch.float64)
                    x = x64.to(dtype).to(DEVICE, memory_format=fmt)
                    gy = gy64.to(dtype).to(DEVICE, memory_format=fmt)
                    got = _pass(_layer(variant, shape[1], "fused", dtype), x, gy)
                    want = _pass(_layer(variant, shape[1], "reference", torch.float64), x.double(), gy.double())
                    for a, b in zip(got, want):  # error relative to the reference's scale
                        worst = max(worst, ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-12)).item())
                verdict = "ok" if worst <= tol else "FAIL"
                ok &= verdict == "ok"
                print(f"  {variant} {name:<9} {layout:<5} worst relative error {worst:.1e} (tolerance {tol:.0e}) "
                      f"{verdict}")
    return ok


# --- 2. speed and memory -----------------------------------------------------------------------------------
def _timm(variant: str, channels: int):
    try:
        from timm import layers
    except ImportError:
        return None
    return getattr(layers, f"EvoNorm2d{variant}")(channels)


def layers_for(channels: int) -> dict[str, torch.nn.Module]:
    made = {"bn_relu": torch.nn.Sequential(torch.nn.BatchNorm2d(channels), torch.nn.ReLU(inplace=True))}
    for variant in ("S0", "B0"):
        made[f"fused_{variant.lower()}"] = evonorm.EvoNorm2dS0(channels) if variant == "S0" else \
            evonorm.EvoNorm2dB0(channels)
        timm_layer = _timm(variant, channels)
        if timm_layer is not None:
            made[f"timm_{variant.lower()}"] = timm_layer
            made[f"compiled_timm_{variant.lower()}"] = torch.compile(_timm(variant, channels))
    return made


def _sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def _step(layer, x, grad) -> tuple[float, int]:
    """Seconds for forward + backward, and the memory it took beyond what was allocated before (CUDA) or the
    bytes autograd saved for backward (CPU)."""
    x.grad = None
    layer.zero_grad(set_to_none=True)
    saved = []
    _sync()
    if CUDA:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.untyped_storage().nbytes()) or t,
                                                   lambda t: t):
        y = layer(x)
    y.backward(grad)
    _sync()
    seconds = time.perf_counter() - start
    return seconds, (torch.cuda.max_memory_allocated() - before) if CUDA else sum(saved)


def time_layers(repeats: int) -> None:
    memory = "peak memory" if CUDA else "saved for backward"
    print(f"\n2. forward+backward against BN+ReLU on {DEVICE} (best of {repeats} interleaved steps; {memory} "
          "in units of the input)")
    for shape_text in TIMED_SHAPES:
        shape = [int(s) for s in shape_text.split(",")]
        for layout, fmt in LAYOUTS.items():
            g = torch.Generator().manual_seed(0)
            x = torch.randn(shape, generator=g).to(DEVICE, memory_format=fmt).requires_grad_(True)
            grad = torch.randn(shape, generator=g).to(DEVICE, memory_format=fmt)
            layers = {k: m.to(DEVICE, memory_format=fmt).train() for k, m in layers_for(shape[1]).items()}
            best = {}
            for name, layer in layers.items():  # warm-up: compilation, autotuning, the allocator
                _step(layer, x, grad), _step(layer, x, grad)
            for _ in range(repeats):
                for name, layer in layers.items():
                    seconds, used = _step(layer, x, grad)
                    best[name] = min(best.get(name, (float("inf"), 0)), (seconds, used))
            base = best["bn_relu"][0]
            size = x.numel() * x.element_size()
            print(f"  {shape_text} {layout}: BN+ReLU {base * 1e3:.3f} ms")
            for name, (seconds, used) in best.items():
                print(f"    {name:<16} {seconds / base:6.2f}x time   {used / size:5.2f}x memory")


# --- 3. a short search ---------------------------------------------------------------------------------------
def search_rate(config: str, overrides: list[str], seconds: float, label: str) -> float:
    """Evaluations per hour of the search ``config`` under ``overrides``, run for ``seconds`` (0: its budget)."""
    import search

    cfg = search.load_config(config, [*overrides, f"search.max_time={seconds}"])
    with tempfile.TemporaryDirectory() as tmp:
        result = search.run(cfg, Path(tmp) / "run")
    rate = result.summary.evaluated / max(result.summary.wall_time, 1e-9) * 3600
    print(f"  {label}: {result.summary.evaluated} evaluated in {result.summary.wall_time:.0f} s, "
          f"{rate:.0f} evaluations per hour")
    return rate


def run_searches(config: str, seconds: float, overrides: list[str]) -> None:
    print("\n3. the search, evaluations per hour")
    if not CUDA:
        print("  no CUDA: a tiny search on the CPU only")
        search_rate(config, [*TINY_SEARCH, "executor.num_workers=2", *overrides], 0, "CPU, tiny")
        return
    gpu = search_rate(config, ["train.device=cuda", f"executor.gpus_per_eval={GPU_SHARE}", *overrides], seconds,
                      f"GPU, {GPU_SHARE:g} GPU per evaluation")
    cpu = search_rate(config, ["train.device=cpu", *overrides], seconds, f"CPU, {os.cpu_count()} cores")
    print(f"  GPU / CPU: {gpu / max(cpu, 1e-9):.2f}x")


def main() -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--search-seconds", type=float, default=90.0, help="length of each search (GPU only)")
    parser.add_argument("--repeats", type=int, default=10 if CUDA else 3)
    args = parser.parse_args()
    torch.set_num_threads(min(4, os.cpu_count() or 1))
    print(f"torch {torch.__version__}; "
          + (f"CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}" if CUDA else
             "no CUDA: the Triton kernels, GPU timings and the GPU search are skipped"))
    ok = check_kernels()
    time_layers(args.repeats)
    run_searches(args.config, args.search_seconds, args.overrides)
    print("\nall kernel checks passed" if ok else "\nSOME KERNEL CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
