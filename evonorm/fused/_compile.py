"""Inductor compilation of the CPU kernels, cached per call signature, with an eager fallback.

The CPU path writes each pass once, as a plain torch function (the "math"). On CPU tensors
:func:`run` traces it with ``make_fx`` and lowers it with inductor into vectorised OpenMP loops,
keyed on everything the generated C++ specialises on: shapes, strides, dtypes and the static
arguments. Going through ``make_fx`` + ``torch._inductor.compile`` instead of ``torch.compile`` keeps
dynamo out of the hot path: no guards to evaluate per call and no recompile limit to hit when a
network has many layer shapes. Each new layer shape, layout or dtype costs four compiles (about a
second each on this 2-core machine with inductor's on-disk caches warm, several when cold).

Tensors under ``MIN_NUMEL`` elements run the math eagerly (float32 ones take the C++ loops of
:mod:`._native` instead): there a compile per shape would never pay back. The same
math also runs eagerly where compiling cannot serve: other devices, an active dispatch mode
(``torch.library.opcheck``, ``FakeTensorMode``), ``EVONORM_CPU_COMPILE=0`` or
:func:`set_cpu_compile`, and an inductor that fails to build (no C++ compiler), which is logged
once and switches compiling off for the process. Eager is equally exact and memory-lean, only
slower (one pass per op).
"""
import functools
import logging
import os
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ._layout import memory_format

logger = logging.getLogger(__name__)

MIN_NUMEL = 1 << 15  # smaller inputs run eagerly
# Our graphs are a few cheap elementwise ops around reductions over x and grad_y: recomputing an
# intermediate is always cheaper than a full-size store and reload, so raise inductor's
# store-vs-recompute thresholds (the defaults materialise e.g. B0's denominator in backward).
_INDUCTOR_OPTIONS = {
    "realize_reads_threshold": 64, "realize_opusers_threshold": 64,
    "realize_opcount_threshold": 1000, "realize_cpu_opcount_threshold": 1000,
    "realize_acc_reads_threshold": 64, "realize_cpu_acc_reads_threshold": 64,
}
_MAX_KERNELS = 256  # signatures kept; the oldest is dropped beyond this
_kernels: Dict[tuple, Callable] = {}
_state = {"enabled": os.environ.get("EVONORM_CPU_COMPILE", "1") != "0", "failed": False}


def set_cpu_compile(enabled: bool) -> bool:
    """Switch inductor compilation of the CPU kernels on or off; returns the previous setting.

    Off, the fused layers run the same math eagerly: identical results, no compile time, slower.
    """
    previous = _state["enabled"]
    _state["enabled"] = bool(enabled)
    return previous


def compiling_enabled(tensors: Sequence[Tensor], min_numel: Optional[int] = None) -> bool:
    """True when ``run`` would use (or build) a compiled kernel for these tensors, the first of
    which is the full-size one, of at least ``min_numel`` (default ``MIN_NUMEL``) elements."""
    return (_state["enabled"] and not _state["failed"]
            and tensors[0].numel() >= (MIN_NUMEL if min_numel is None else min_numel)
            and all(t.is_cpu for t in tensors)
            and torch._C._len_torch_dispatch_stack() == 0)


def _options(tensors: Sequence[Tensor]) -> dict:
    """Inductor options for these inputs: Welford statistics when any is channels_last.

    Inductor computes a variance over at most 1024 elements in two passes (mean, then squared
    deviations). For NCHW rows that short the second pass reads cached data and wins; for
    channels_last the reduction runs over the outer axis and the second pass goes back to memory,
    so one Welford pass is faster there.
    """
    if all(memory_format(t) == torch.contiguous_format for t in tensors):
        return _INDUCTOR_OPTIONS
    return dict(_INDUCTOR_OPTIONS, **{"cpp.use_two_step_variance_threshold": 0})


def run(fn: Callable, tensors: Sequence[Tensor], **statics) -> Tuple[Tensor, ...]:
    """``fn(*tensors, **statics)``, through a compiled kernel when :func:`compiling_enabled`.

    ``statics`` must be hashable (ints, floats, bools, None); they are baked into the kernel.
    """
    if not compiling_enabled(tensors):
        return fn(*tensors, **statics)
    # The generated C++ runs on as many OpenMP threads as torch had when it was compiled.
    key = (fn, torch.get_num_threads(), *statics.items(),
           *[(t.shape, t.stride(), t.dtype) for t in tensors])
    kernel = _kernels.get(key)
    if kernel is None:
        kernel = _compile(fn, tensors, statics)
        if kernel is None:
            return fn(*tensors, **statics)
        if len(_kernels) >= _MAX_KERNELS:
            _kernels.pop(next(iter(_kernels)))
        _kernels[key] = kernel
    return tuple(kernel(*tensors))


def _compile(fn: Callable, tensors: Sequence[Tensor], statics: dict):
    shapes = [tuple(t.shape) for t in tensors]
    logger.info("compiling %s for shapes %s %s", fn.__qualname__, shapes, statics)
    try:
        import torch._inductor
        from torch.fx.experimental.proxy_tensor import make_fx
        with torch.no_grad():
            inputs = [t.detach() for t in tensors]
            graph = make_fx(functools.partial(fn, **statics))(*inputs)
            return torch._inductor.compile(graph, inputs, options=_options(tensors))
    except Exception as error:  # no compiler, unsupported platform, inductor bug: stay correct
        _state["failed"] = True
        logger.warning("inductor could not compile %s (%s: %s); the fused EvoNorm CPU kernels "
                       "run eagerly from now on", fn.__qualname__, type(error).__name__, error)
        return None


def stored_here(t: Tensor) -> Tensor:
    """``t`` itself (a view), which inductor stores at this point of the graph.

    Inductor orders its loops by when buffers are stored, and fuses an elementwise output into a
    reduction's loop (sharing loads and subexpressions) only when the output comes first; left
    alone, an output is stored last. ``as_strided`` makes inductor store its input on the spot.
    """
    return t.as_strided(t.shape, t.stride())


def in_loop_of(t: Tensor, *deps: Tensor) -> Tensor:
    """``t`` itself, tied to other values so inductor computes it in their loop nest.

    A sum whose operands do not depend on the channel (``grad_y.sum(spatial)``) gets its (N, C)
    loops flattened into one, which for NCHW stops inductor from fusing it with the per-channel
    sums: ``grad_y`` would be read twice. ``where(d == d, t, t)`` is ``t`` exactly, even for NaN.
    """
    for dep in deps:
        t = torch.where(dep == dep, t, t)
    return t
