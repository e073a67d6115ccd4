"""The Triton kernels against the reference layers, in a process of their own.

``TRITON_INTERPRET=1`` is read when triton is imported, so the checks (triton_interpret_checks.py)
run under a fresh interpreter: on CPU tensors through Triton's interpreter everywhere, and for
real on CUDA when a GPU is present.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

CHECKS = Path(__file__).with_name("triton_interpret_checks.py")
REPO = Path(__file__).resolve().parents[2]


def run_checks(**env):
    pytest.importorskip("triton", reason="triton is not installed")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CHECKS)],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout


def test_triton_kernels_in_the_interpreter():
    run_checks(TRITON_INTERPRET="1", EVONORM_TEST_DEVICE="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_triton_kernels_on_the_gpu():
    run_checks(TRITON_INTERPRET="0", EVONORM_TEST_DEVICE="cuda")
