"""bench/gpu_check.py runs where CI runs, without a GPU: it says so, checks the CPU kernels, times one shape
and runs a tiny search, and exits 0; so the script that a GPU machine runs does not rot."""
import os
import subprocess
import sys

import torch

from tests.conftest import REPO


def test_gpu_check_runs_without_cuda():
    done = subprocess.run([sys.executable, "bench/gpu_check.py"], cwd=REPO, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = done.stdout
    if not torch.cuda.is_available():
        assert "no CUDA: the Triton kernels, GPU timings and the GPU search are skipped" in out
    assert out.count(" ok\n") == 12 and "FAIL" not in out  # S0 and B0, three dtypes, two layouts
    for layer in ("bn_relu", "fused_s0", "fused_b0", "timm_s0", "compiled_timm_b0"):
        assert f"    {layer} " in out
    assert "evaluations per hour" in out and "all kernel checks passed" in out
