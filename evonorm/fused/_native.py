"""Hand-written memory-order C++ loops for float32 EvoNorm on CPU, channels_last and NCHW.

Inductor vectorises a channels_last per-channel sum along C but walks the spatial axis inside
each C-vector, one strided row per step, which is slower than streaming the rows in memory order
(bench/layers.py), and inductor will not fuse a stored partial gradient into such a sum.
``cpu_loops.cpp`` streams the rows instead, keeping per-channel accumulators in small arrays,
and stores the part of ``grad_x`` that needs the sigmoid (S0) or the division (B0) in its sums
pass, as the NCHW inductor kernels do. On NCHW it walks each (sample, channel) plane with the
spatial axis vectorised; there it beats the inductor kernels too, because the (N, C) algebra
between the passes runs in C++ rather than as a dozen small torch ops, and each direction is one
call.

The source is compiled once per machine with inductor's C++ toolchain and flags (its on-disk
cache keeps the library) and called through ``ctypes``. :func:`serves` says when these loops take a
call: CPU float32 tensors of any size, dense in either layout, while CPU compiling is on, so the
first such call of a process builds (or loads) the library. If it cannot be built the inductor
kernels serve, as before.
"""
import ctypes
import logging
import math
from pathlib import Path
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _compile
from ._layout import memory_format
from ._rows import TILE_BYTES

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_loops.cpp")
_P, _I64, _INT, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
_SIGNATURES = {  # tensors, then (N, P, C), the scalars, and (nchw, tile, threads)
    "s0_forward": [_P] * 7 + [_I64] * 4 + [_F, _INT] + [_INT, _I64, _INT],
    "s0_backward": [_P] * 10 + [_I64] * 4 + [_INT] + [_INT, _I64, _INT],
    "b0_forward": [_P] * 10 + [_I64] * 3 + [_F] + [_INT, _I64, _INT],
    "b0_backward": [_P] * 12 + [_I64] * 3 + [_F, _INT] + [_INT, _I64, _INT],
}
_state = {"library": None, "failed": False}


def _library():
    if _state["library"] is None and not _state["failed"]:
        try:
            from torch._inductor.codecache import CppCodeCache
            library = CppCodeCache.load(SOURCE.read_text(), extra_flags=("-ffp-contract=off",))
            for name, argtypes in _SIGNATURES.items():
                function = getattr(library, name)
                function.argtypes, function.restype = argtypes, None
            _state["library"] = library
        except Exception as error:  # no compiler, unsupported platform: the inductor path serves
            _state["failed"] = True
            logger.warning("could not build %s (%s: %s); float32 EvoNorm on CPU uses the inductor "
                           "kernels", SOURCE.name, type(error).__name__, error)
    return _state["library"]


def serves(x: Tensor, *others: Optional[Tensor]) -> bool:
    """True when these loops compute a pass over ``x`` (float32, dense NCHW or channels_last(_3d),
    not empty) and ``others`` (None, or float32: full-size ones dense in ``x``'s memory order,
    parameters contiguous). Memory order, not strides: a tensor dense in both layouts, such as
    (N, C, 1, 1), may carry either layout's strides for the same addresses."""
    others = [t for t in others if t is not None]
    order = memory_format(x)
    return (x.dtype == torch.float32 and x.dim() > 2 and x.numel() > 0 and x.is_contiguous(memory_format=order)
            and all(t.dtype == torch.float32 and (t.is_contiguous(memory_format=order) if t.shape == x.shape
                                                  else t.is_contiguous()) for t in others)
            and _compile.compiling_enabled([x, *others], min_numel=0)  # built once, for any shape
            and _library() is not None)


def _sizes(x: Tensor) -> Tuple[int, int, int]:
    """(N, P, C): samples, rows (spatial positions) per sample, channels."""
    return x.shape[0], math.prod(x.shape[2:]), x.shape[1]


def _call(name: str, *args):
    """The C function ``name`` on these tensors (None: a null pointer) and scalars, then the
    layout (1: NCHW), the tile (``TILE_BYTES`` of float32: rows of channels in channels_last,
    floats of a plane in NCHW) and torch's thread count."""
    pointers = [a.data_ptr() if isinstance(a, Tensor) else a for a in args]
    nchw = memory_format(args[0]) == torch.contiguous_format
    tile = TILE_BYTES // 4 if nchw else max(1, TILE_BYTES // (4 * args[0].shape[1]))
    getattr(_library(), name)(*pointers, int(nchw), tile, torch.get_num_threads())


def s0_forward(x: Tensor, weight: Tensor, bias: Tensor, v: Optional[Tensor], groups: int,
               eps: float, centered: bool):
    """The forward op of :mod:`.s0_op`: (y, mean (N, G), rstd (N, G))."""
    y = torch.empty_like(x)
    mean, rstd = (x.new_empty((x.shape[0], groups)) for _ in range(2))
    _call("s0_forward", x, weight, bias, _ones_if_none(v, x), y, mean, rstd, *_sizes(x), groups,
          eps, int(centered))
    return y, mean, rstd


def s0_backward(grad_y: Tensor, x: Tensor, weight: Tensor, v: Optional[Tensor], mean: Tensor,
                rstd: Tensor):
    """The backward op of :mod:`.s0_op`: (grad_x, grad_weight, grad_bias, grad_v)."""
    grad_x = torch.empty_like(x)
    grad_w, grad_b = torch.empty_like(weight), torch.empty_like(weight)
    grad_v = weight.new_empty((0,)) if v is None else torch.empty_like(v)
    _call("s0_backward", grad_y, x, weight, _ones_if_none(v, x), mean, rstd, grad_x, grad_w,
          grad_b, None if v is None else grad_v, *_sizes(x), rstd.shape[1], int(v is not None))
    return grad_x, grad_w, grad_b, grad_v


def b0_forward(x: Tensor, weight: Tensor, bias: Tensor, v: Tensor, running_var: Optional[Tensor],
               eps: float):
    """The forward op of :mod:`.b0_op`: (y, inst_mean, inst_std, batch_mean, batch_var)."""
    y = torch.empty_like(x)
    inst_mean, inst_std = (x.new_empty(x.shape[:2]) for _ in range(2))
    batch_mean, batch_var = (x.new_empty(x.shape[1:2]) for _ in range(2))
    _call("b0_forward", x, weight, bias, v, running_var, y, inst_mean, inst_std, batch_mean,
          batch_var, *_sizes(x), eps)
    return y, inst_mean, inst_std, batch_mean, batch_var


def b0_backward(grad_y: Tensor, x: Tensor, weight: Tensor, v: Tensor, inst_mean: Tensor,
                inst_std: Tensor, batch_mean: Tensor, batch_var: Tensor, training: bool,
                eps: float):
    """The backward op of :mod:`.b0_op`: (grad_x, grad_weight, grad_bias, grad_v)."""
    grad_x = torch.empty_like(x)
    grad_w, grad_b, grad_v = torch.empty_like(weight), torch.empty_like(weight), torch.empty_like(v)
    _call("b0_backward", grad_y, x, weight, v, inst_mean, inst_std, batch_mean, batch_var, grad_x,
          grad_w, grad_b, grad_v, *_sizes(x), eps, int(training))
    return grad_x, grad_w, grad_b, grad_v


def _ones_if_none(v: Optional[Tensor], x: Tensor) -> Tensor:
    """``v``, or ones for S1/S2's v = 1 (``x * 1`` is ``x`` exactly)."""
    return x.new_ones(x.shape[1]) if v is None else v
