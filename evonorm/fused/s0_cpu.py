r"""EvoNorm-S0 (and S1/S2) for CPU: the stages of :mod:`evonorm.fused.s0_op` as inductor kernels.

Each direction is two small torch functions compiled by :mod:`evonorm.fused._compile` (eager on
other devices or when inductor is unavailable): a reduction per (sample, channel) over the spatial
axes followed by the (N, C) algebra of :mod:`.s0_op`, then one elementwise pass. The reductions
vectorise along the contiguous axis in both layouts (spatial for NCHW, channels for
channels_last). Two kernels rather than one because inductor would otherwise inline the small
group sums into the elementwise loop, recomputing them per element and, for channels_last,
losing vectorisation to the channel -> group index division.

Performance: forward is one statistics pass over ``x`` (NCHW rows of <= 1024 elements are read
twice, mean then variance, the second time from cache; channels_last uses Welford) plus an
elementwise pass; backward one pass reading ``(x, grad_y)`` for the three sums and one writing
``grad_x``. Nothing full-size is saved for backward but ``x`` (plus two (N, G) statistics), so the
sigmoid is evaluated in every pass but the statistics, except that on NCHW the sums' pass also
stores the part of ``grad_x`` that needs it (float32, one extra write and read) and the last pass
evaluates none. Float32 tensors in either layout take the C++ loops of :mod:`._native` instead; other
dtypes keep these kernels (channels_last ones without the store, see :mod:`._rows`).
The first call for a new shape, layout or dtype compiles (cached on disk by inductor).
``bench/layers.py`` measures time and memory against BatchNorm2d + ReLU and timm; the README has the
numbers.
"""
import torch
from torch import Tensor

from .._stats import groups_to_channels, stat_dtype
from . import _compile, _native, s0_op
from ._layout import memory_format
from ._rows import channel_sum, moments, per_channel, per_sample, rows, unrows


def _gate_arg(xc: Tensor, v) -> Tensor:
    return xc if v is None else xc * per_channel(v.to(xc.dtype), xc)


def stats_math(x: Tensor, weight: Tensor, *, groups: int, eps: float, centered: bool):
    """Pass 1 of forward: (mean, rstd, scale) of :func:`.s0_op.forward_coefficients`."""
    mean, var = moments(rows(x).to(stat_dtype(x.dtype)))
    return s0_op.forward_coefficients(mean, var, weight, groups, eps, centered)


def output_math(x: Tensor, scale: Tensor, bias: Tensor, v=None):
    """Pass 2 of forward: y = x sigmoid(v x) scale + bias."""
    xc = rows(x).to(scale.dtype)
    y = xc * torch.sigmoid(_gate_arg(xc, v)) * per_sample(scale, xc)
    return unrows((y + per_channel(bias.to(scale.dtype), xc)).to(x.dtype), x),


def sums_math(grad_y: Tensor, x: Tensor, weight: Tensor, mean: Tensor, rstd: Tensor, v=None, *,
              partial: bool):
    """Pass 1 of backward: :func:`.s0_op.backward_coefficients` of the per-(n, c) sums; with
    ``partial``, also the part of grad_x that needs no sum, ``g a (s + v x s(1-s))``, in the
    statistics' dtype, so that pass 2 evaluates no sigmoid."""
    xc, g = rows(x).to(rstd.dtype), rows(grad_y, like=x).to(rstd.dtype)
    z = _gate_arg(xc, v)
    # Every use of the gate calls sigmoid afresh: on CPU inductor stores any reused value that
    # involves an exp (a full-size write and two reads), while single-use calls inline into the
    # loop, where its common-subexpression pass evaluates them once.
    ties = [z]
    if partial:  # NCHW: fused into the sums' loop, sharing its sigmoid (channels_last: see above)
        a = per_sample(groups_to_channels(rstd, x.shape[1]) * weight.to(rstd.dtype), xc)
        ties = [a, _compile.stored_here(g * a * _slope(z))]
    gx = g * xc
    sum_gh = channel_sum(gx * torch.sigmoid(z))
    sum_gv = None
    if v is not None:
        sum_gv = channel_sum(gx * xc * torch.sigmoid(z) * (1 - torch.sigmoid(z)))
    count = x.numel() // (x.shape[0] * rstd.shape[1])
    sum_g = channel_sum(_compile.in_loop_of(g, *ties))
    grad_w, grad_b, grad_v, a, k, mu = s0_op.backward_coefficients(
        sum_gh, sum_gv, sum_g, weight, v, mean, rstd, count)
    if partial:
        return grad_w, grad_b, grad_v, k, mu, ties[1]
    return grad_w, grad_b, grad_v, a, k, mu


def grad_x_math(grad_y: Tensor, x: Tensor, a: Tensor, k: Tensor, mu: Tensor, v=None):
    """Pass 2 of backward: grad_x = g a (s + v x s(1-s)) + k (x - mu)."""
    xc, g = rows(x).to(a.dtype), rows(grad_y, like=x).to(a.dtype)
    grad_x = g * per_sample(a, xc) * _slope(_gate_arg(xc, v)) + _centred(xc, k, mu)
    return unrows(grad_x.to(x.dtype), x),


def finish_grad_x_math(partial: Tensor, x: Tensor, k: Tensor, mu: Tensor):
    """Pass 2 of backward after a ``partial`` pass 1: grad_x = partial + k (x - mu)."""
    xc = rows(x).to(k.dtype)
    return unrows((partial + _centred(xc, k, mu)).to(x.dtype), x),


def _slope(z: Tensor) -> Tensor:
    """s + z s (1 - s), s = sigmoid(z): the derivative of x sigmoid(v x) in x, at z = v x."""
    return torch.sigmoid(z) * (1 + z * (1 - torch.sigmoid(z)))


def _centred(xc: Tensor, k: Tensor, mu: Tensor) -> Tensor:
    return per_sample(k, xc) * (xc - per_sample(mu, xc))


def _forward(x, weight, bias, v, groups, eps, centered):
    if _native.serves(x, weight, bias, v):
        return _native.s0_forward(x, weight, bias, v, groups, eps, centered)
    mean, rstd, scale = _compile.run(stats_math, [x, weight], groups=groups, eps=eps,
                                     centered=centered)
    y, = _run(output_math, [x, scale, bias], v)
    return y, mean, rstd


def _backward(grad_y, x, weight, v, mean, rstd, groups, centered):
    if _native.serves(x, grad_y, weight, v, mean, rstd):
        return _native.s0_backward(grad_y, x, weight, v, mean, rstd)
    if memory_format(x) == torch.contiguous_format:
        grad_w, grad_b, grad_v, k, mu, partial = _run(
            sums_math, [grad_y, x, weight, mean, rstd], v, partial=True)
        grad_x, = _compile.run(finish_grad_x_math, [partial, x, k, mu])
    else:
        grad_w, grad_b, grad_v, a, k, mu = _run(
            sums_math, [grad_y, x, weight, mean, rstd], v, partial=False)
        grad_x, = _run(grad_x_math, [grad_y, x, a, k, mu], v)
    return grad_x, grad_w, grad_b, grad_v


def _run(fn, tensors, v, **statics):
    """``_compile.run`` with the optional ``v`` last among the tensors, or static when None."""
    if v is None:
        return _compile.run(fn, tensors, v=None, **statics)
    return _compile.run(fn, tensors + [v], **statics)


evonorm_s0_cpu = s0_op.define("cpu", _forward, _backward)
