"""Depthwise convolutions of the MobileNet-style proxies as hand-written C++ loops on CPU NHWC floats.

oneDNN's depthwise weight gradient is slow on the proxies' small maps: on 2x2 maps of 240 channels it costs
ten times its own input gradient. ``depthwise.cpp`` computes the forward pass and both gradients with the
channel axis vectorised (built once per machine with inductor's C++ toolchain, cached on disk, called
through ``ctypes``). Only rounding changes: the loops add the same products in another order.

Double backward (the stability check differentiates a gradient norm) takes torch's convolution backward,
which autograd can differentiate; so do other devices, dtypes and layouts, and machines where the loops
cannot be built (with a warning).
"""
from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DepthwiseConv2d"]

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("depthwise.cpp")
MAX_KERNEL = 7  # kMaxTaps in depthwise.cpp
_ENTRIES = ("depthwise_forward", "depthwise_backward_input", "depthwise_backward_weight")
_state = {"library": None, "failed": False}


def _library():
    if _state["library"] is None and not _state["failed"]:
        try:
            from torch._inductor.codecache import CppCodeCache
            library = CppCodeCache.load(SOURCE.read_text())
            for name in _ENTRIES:
                entry = getattr(library, name)
                entry.argtypes, entry.restype = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 9 + [ctypes.c_int], None
            _state["library"] = library
        except Exception as error:  # no compiler, unsupported platform: oneDNN serves
            _state["failed"] = True
            log.warning("could not build %s (%s: %s); depthwise convolutions use torch's", SOURCE.name,
                        type(error).__name__, error)
    return _state["library"]


def _nhwc(x: Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)


def _call(name: str, a: Tensor, b: Tensor, out: Tensor, sizes: tuple[int, ...]) -> Tensor:
    getattr(_library(), name)(a.data_ptr(), b.data_ptr(), out.data_ptr(), *sizes, torch.get_num_threads())
    return out


class _DepthwiseFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, stride: int) -> Tensor:
        n, c, h, w = x.shape
        k = weight.shape[-1]
        p = k // 2
        out_h, out_w = (h + 2 * p - k) // stride + 1, (w + 2 * p - k) // stride + 1
        ctx.sizes, ctx.stride, ctx.padding = (n, h, w, c, out_h, out_w, k, stride, p), stride, p
        ctx.save_for_backward(x, weight)
        y = torch.empty((n, c, out_h, out_w), dtype=x.dtype, memory_format=torch.channels_last)
        return _call("depthwise_forward", x, weight, y, ctx.sizes)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled():  # create_graph: an op that autograd differentiates again
            dx, dw, _ = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [ctx.stride] * 2, [ctx.padding] * 2, [1, 1], False, [0, 0], x.shape[1],
                [need_x, need_w, False])
            return dx, dw, None
        grad = grad.contiguous(memory_format=torch.channels_last)
        dx = _call("depthwise_backward_input", grad, weight, torch.empty_like(x), ctx.sizes) if need_x else None
        dw = _call("depthwise_backward_weight", grad, x, torch.empty_like(weight), ctx.sizes) if need_w else None
        return dx, dw, None


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise convolution (one filter per channel, odd square kernel up to 7, padding ``k // 2``, no
    bias) that runs ``depthwise.cpp`` on CPU NHWC float32 inputs.

    Its parameters, initialisation and checkpoints are those of ``nn.Conv2d``. Other inputs (NCHW, other
    dtypes and devices) take the convolution.
    """

    def __init__(self, channels: int, kernel_size: int = 3, stride: int = 1, device=None, dtype=None):
        if kernel_size % 2 == 0 or not 1 <= kernel_size <= MAX_KERNEL:
            raise ValueError(f"DepthwiseConv2d takes an odd kernel size from 1 to {MAX_KERNEL}, got {kernel_size}")
        super().__init__(channels, channels, kernel_size, stride, padding=kernel_size // 2, groups=channels,
                         bias=False, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        if (x.is_cpu and x.dtype == self.weight.dtype == torch.float32 and _nhwc(x) and self.weight.is_contiguous()
                and torch._C._len_torch_dispatch_stack() == 0
                and _library() is not None):
            return _DepthwiseFunction.apply(x, self.weight, self.stride[0])
        return F.conv2d(x, self.weight, None, self.stride, self.padding, 1, self.groups)
