"""Fused, memory-lean EvoNorm-S0/S1/S2 and B0: custom ops with analytic backward passes.

Each variant is a pair of ``torch.library`` custom ops (forward + backward) that saves only the
input and float32 (N, G) / (N, C) / (C,) statistics for backward, never the gate, the normalised
tensor or the output. Two backends implement them:

* ``cpu`` (:mod:`.s0_cpu`, :mod:`.b0_cpu`): hand-written C++ loops for float32 CPU tensors
  (:mod:`._native`), else the math written in torch and compiled by inductor on CPU tensors; the
  same code runs eagerly on devices without a faster path (CUDA without Triton, MPS, ...) and
  wherever inductor cannot build.
* ``triton`` (:mod:`.s0_triton`, :mod:`.b0_triton`): Triton kernels for CUDA tensors of float32,
  float16 and bfloat16, loaded when CUDA and Triton are both present.

:func:`evonorm_s0` and :func:`evonorm_b0` pick the backend from the tensor; ``evonorm.layers`` calls
them by default (``impl="fused"``).
"""
import logging
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import b0_cpu, b0_op, s0_cpu, s0_op
from ._compile import set_cpu_compile

__all__ = ["evonorm_s0", "evonorm_b0", "backend_for", "can_serve", "set_cpu_compile"]

logger = logging.getLogger(__name__)

_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_triton_ops = {}
if torch.cuda.is_available():
    try:
        from . import b0_triton, s0_triton
        _triton_ops = {"s0": s0_triton.evonorm_s0_triton, "b0": b0_triton.evonorm_b0_triton}
    except ImportError as error:  # CUDA without Triton: the portable path serves
        logger.warning("Triton unavailable (%s); fused EvoNorm runs its torch math on CUDA", error)


def can_serve(x: Tensor) -> bool:
    """False inside functorch transforms (``vmap``, ``torch.func.grad``...): the ops have no
    batching rule and no second-order formula, so the layers take their reference path there.
    While dynamo traces (it cannot evaluate the check) the ops always serve."""
    if torch.compiler.is_compiling():
        return True
    return not torch._C._functorch.is_functorch_wrapped_tensor(x)


def backend_for(x: Tensor) -> str:
    """``"triton"`` for CUDA float32/float16/bfloat16 tensors when Triton loaded, else ``"cpu"``."""
    if _triton_ops and x.device.type == "cuda" and x.dtype in _TRITON_DTYPES:
        return "triton"
    return "cpu"


def evonorm_s0(x: Tensor, weight: Tensor, bias: Tensor, v: Optional[Tensor], groups: int,
               eps: float, centered: bool = True) -> Tensor:
    """EvoNorm-S0 (``v`` None: S1; ``centered=False``: S2 with v None) on (N, C, *spatial) ``x``."""
    op = _triton_ops["s0"] if backend_for(x) == "triton" else s0_cpu.evonorm_s0_cpu
    return s0_op.apply(op, x, weight, bias, v, groups, eps, centered)


def evonorm_b0(x: Tensor, weight: Tensor, bias: Tensor, v: Tensor, running_var: Optional[Tensor],
               eps: float) -> Tuple[Tensor, Tensor]:
    """EvoNorm-B0 on (N, C, *spatial) ``x``: (y, the batch variance used).

    ``running_var`` None means training (batch statistics); the caller folds the returned biased
    batch variance into its running buffer. Given, it replaces the batch variance (eval).
    """
    op = _triton_ops["b0"] if backend_for(x) == "triton" else b0_cpu.evonorm_b0_cpu
    return b0_op.apply(op, x, weight, bias, v, running_var, eps)
