"""Depthwise convolutions of the MobileNet-style proxies as hand-written C++ loops on CPU NHWC floats.

oneDNN's depthwise weight gradient and double backward are slow on the proxies' small maps (the README's
evaluator section has the numbers). ``depthwise.cpp`` computes the forward pass and both gradients with the
channel axis (at stride 1, the whole image row) vectorised. It is built once per machine with inductor's C++
toolchain, cached on disk, and called through ``ctypes``. Only rounding changes: the loops add the same
products in another order.

The gradients are differentiable again (the stability check differentiates a gradient norm) through the same
loops. Other devices, dtypes and layouts take torch's convolution, and so does every input where the loops
cannot be built (with a warning).
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DepthwiseConv2d", "load"]

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("depthwise.cpp")
MAX_KERNEL = 7  # kMaxTaps in depthwise.cpp
_ENTRIES = ("depthwise_forward", "depthwise_backward_input", "depthwise_backward_weight")
_state = {"library": None, "failed": False}


def load() -> bool:
    """Build (once per machine) or load the loops now; False where they cannot be built."""
    return _library() is not None


def _library():
    if _state["library"] is None and not _state["failed"]:
        try:
            from torch._inductor.codecache import CppCodeCache
            with _quiet("torch.utils.cpp_extension"):  # which the build imports: on a CPU-only torch it warns
                library = CppCodeCache.load(SOURCE.read_text())  # that there is no CUDA runtime
            for name in _ENTRIES:
                entry = getattr(library, name)
                entry.argtypes, entry.restype = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 9 + [ctypes.c_int], None
            _state["library"] = library
        except Exception as error:  # no compiler, unsupported platform: oneDNN serves
            _state["failed"] = True
            log.warning("could not build %s (%s: %s); depthwise convolutions use torch's", SOURCE.name,
                        type(error).__name__, error)
    return _state["library"]


@contextlib.contextmanager
def _quiet(logger: str):
    """Only errors from ``logger`` while the block runs."""
    target = logging.getLogger(logger)
    level = target.level
    target.setLevel(logging.ERROR)
    try:
        yield
    finally:
        target.setLevel(level)


def _nhwc(x: Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)


def _call(name: str, a: Tensor, b: Tensor, out: Tensor, sizes: tuple[int, ...]) -> Tensor:
    getattr(_library(), name)(a.data_ptr(), b.data_ptr(), out.data_ptr(), *sizes, torch.get_num_threads())
    return out


# The convolution y = _conv(x, w) and its two gradients, gx = _conv_input(gy, w) and gw = _conv_weight(gy, x),
# are each linear in both arguments, and each one's derivatives are the other two again (the adjoint of a
# convolution is its transpose), so gradients of any order run in the C++ loops. ``sizes`` is
# (N, H, W, C, out_h, out_w, K, stride, padding). The wrappers lay the arguments out as the loops read them,
# outside the Functions, so that autograd sees those copies too.
def _conv(x: Tensor, weight: Tensor, sizes: tuple[int, ...]) -> Tensor:
    return _Conv.apply(_nhwc_copy(x), weight.contiguous(), sizes)


def _conv_input(grad: Tensor, weight: Tensor, sizes: tuple[int, ...]) -> Tensor:
    return _ConvInput.apply(_nhwc_copy(grad), weight.contiguous(), sizes)


def _conv_weight(grad: Tensor, x: Tensor, sizes: tuple[int, ...]) -> Tensor:
    return _ConvWeight.apply(_nhwc_copy(grad), _nhwc_copy(x), sizes)


def _nhwc_copy(t: Tensor) -> Tensor:
    return t.contiguous(memory_format=torch.channels_last)


def _empty(n: int, c: int, h: int, w: int, like: Tensor) -> Tensor:
    return torch.empty((n, c, h, w), dtype=like.dtype, memory_format=torch.channels_last)


class _Conv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, sizes: tuple[int, ...]) -> Tensor:
        ctx.sizes = sizes
        ctx.save_for_backward(x, weight)
        n, _, _, c, out_h, out_w = sizes[:6]
        return _call("depthwise_forward", x, weight, _empty(n, c, out_h, out_w, x), sizes)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        return (_conv_input(grad, weight, ctx.sizes) if ctx.needs_input_grad[0] else None,
                _conv_weight(grad, x, ctx.sizes) if ctx.needs_input_grad[1] else None, None)


class _ConvInput(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad: Tensor, weight: Tensor, sizes: tuple[int, ...]) -> Tensor:
        ctx.sizes = sizes
        ctx.save_for_backward(grad, weight)
        n, h, w, c = sizes[:4]
        return _call("depthwise_backward_input", grad, weight, _empty(n, c, h, w, grad), sizes)

    @staticmethod
    def backward(ctx, upstream: Tensor):
        grad, weight = ctx.saved_tensors
        return (_conv(upstream, weight, ctx.sizes) if ctx.needs_input_grad[0] else None,
                _conv_weight(grad, upstream, ctx.sizes) if ctx.needs_input_grad[1] else None, None)


class _ConvWeight(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad: Tensor, x: Tensor, sizes: tuple[int, ...]) -> Tensor:
        ctx.sizes = sizes
        ctx.save_for_backward(grad, x)
        c, k = sizes[3], sizes[6]
        return _call("depthwise_backward_weight", grad, x, grad.new_empty((c, 1, k, k)), sizes)

    @staticmethod
    def backward(ctx, upstream: Tensor):
        grad, x = ctx.saved_tensors
        return (_conv(x, upstream, ctx.sizes) if ctx.needs_input_grad[0] else None,
                _conv_input(grad, upstream, ctx.sizes) if ctx.needs_input_grad[1] else None, None)


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
            n, c, h, w = x.shape
            (k, _), (stride, _), (p, _) = self.kernel_size, self.stride, self.padding
            out_h, out_w = (h + 2 * p - k) // stride + 1, (w + 2 * p - k) // stride + 1
            return _conv(x, self.weight, (n, h, w, c, out_h, out_w, k, stride, p))
        return F.conv2d(x, self.weight, None, self.stride, self.padding, 1, self.groups)
