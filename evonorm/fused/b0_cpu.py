r"""EvoNorm-B0 for CPU: the stages of :mod:`evonorm.fused.b0_op` as inductor kernels.

Each direction is two small torch functions compiled by :mod:`evonorm.fused._compile` (eager on
other devices or when inductor is unavailable): a reduction per (sample, channel) over the spatial
axes followed by the (N, C) algebra of :mod:`.b0_op` (the batch variance is Chan's merge of the
instance moments over samples, so one pass over ``x`` yields both), then one elementwise pass.

Performance: forward is one statistics pass over ``x`` (NCHW rows of <= 1024 elements are read
twice, the second time from cache; channels_last uses Welford) plus an elementwise pass; backward
one pass reading ``(x, grad_y)`` for the five sums and one writing ``grad_x``; nothing full-size is
stored in between (inductor's store-vs-recompute thresholds are raised, see ``_compile``) but, on
NCHW, the part of ``grad_x`` that needs ``1 / d``, so that the last pass divides no more (as in
:mod:`.s0_cpu`); every other pass divides once per element. Saved for backward: ``x`` and four (N, C)/(C,) statistics. The first
call for a new shape, layout or dtype compiles (cached on disk). Float32 tensors in either layout take
the C++ loops of :mod:`._native` instead. ``bench/layers.py`` measures time and memory against
BatchNorm2d + ReLU and timm; the README has the numbers.
"""
import torch
from torch import Tensor

from .._stats import stat_dtype
from . import _compile, _native, b0_op
from ._layout import memory_format
from ._rows import channel_sum, moments, per_channel, per_sample, rows, unrows


def _inverse_denominator(xc: Tensor, v: Tensor, inst_std: Tensor, left: Tensor):
    """(1 / d, take_right) for d = max(left, v x + inst_std), ties to left as the forward's where.

    One division per element, then products: a vector division costs several multiplies.
    """
    right = xc * per_channel(v.to(xc.dtype), xc) + per_sample(inst_std, xc)
    left = per_channel(left, xc)
    take_right = left < right  # the complement of `left >= right`
    return 1 / torch.where(take_right, right, left), take_right


def stats_math(x: Tensor, running_var=None, *, eps: float):
    """Pass 1 of forward: instance moments and :func:`.b0_op.forward_coefficients`."""
    mean, var = moments(rows(x).to(stat_dtype(x.dtype)))
    return (mean,) + b0_op.forward_coefficients(mean, var, running_var, eps)


def output_math(x: Tensor, weight: Tensor, bias: Tensor, v: Tensor, inst_std: Tensor,
                left: Tensor):
    """Pass 2 of forward: y = x / d * weight + bias."""
    xc = rows(x).to(left.dtype)
    inv_d, _ = _inverse_denominator(xc, v, inst_std, left)
    y = (xc * inv_d * per_channel(weight.to(xc.dtype), xc)
         + per_channel(bias.to(xc.dtype), xc))
    return unrows(y.to(x.dtype), x),


def sums_math(grad_y: Tensor, x: Tensor, weight: Tensor, v: Tensor, inst_std: Tensor,
              left: Tensor, *, training: bool, partial: bool):
    """Pass 1 of backward: the five per-(n, c) sums and :func:`.b0_op.backward_coefficients`;
    with ``partial``, also the part of grad_x that needs no sum, ``g w / d - rho q v``, so that
    pass 2 divides no more (NCHW only: see :mod:`.s0_cpu`)."""
    xc, g = rows(x).to(left.dtype), rows(grad_y, like=x).to(left.dtype)
    inv_d, take_right = _inverse_denominator(xc, v, inst_std, left)
    ties = [inv_d]
    if partial:  # first in the graph, so that inductor fuses it into the sums' loop
        ties.append(_compile.stored_here(_partial_grad_x(g, xc, weight, v, inv_d, take_right)))
    z = xc * inv_d
    q = g * per_channel(weight.to(xc.dtype), xc) * z * inv_d
    q_right = torch.where(take_right, q, 0.0)
    sums = (channel_sum(_compile.in_loop_of(g, *ties)), channel_sum(g * z),
            channel_sum(q_right), channel_sum(q_right * xc), channel_sum(q - q_right))
    spatial = x.numel() // (x.shape[0] * x.shape[1])
    grads = b0_op.backward_coefficients(sums, weight, v, inst_std, left, training, spatial)
    return grads + (ties[1],) if partial else grads


def grad_x_math(grad_y: Tensor, x: Tensor, weight: Tensor, v: Tensor, inst_std: Tensor,
                left: Tensor, k_inst: Tensor, inst_mean: Tensor, k_batch: Tensor,
                batch_mean: Tensor):
    """Pass 2 of backward: grad_x = g w / d - rho q v + k_i (x - mu_i) + k_b (x - mu_b)."""
    xc, g = rows(x).to(left.dtype), rows(grad_y, like=x).to(left.dtype)
    inv_d, take_right = _inverse_denominator(xc, v, inst_std, left)
    grad_x = (_partial_grad_x(g, xc, weight, v, inv_d, take_right)
              + _centred(xc, k_inst, inst_mean, k_batch, batch_mean))
    return unrows(grad_x.to(x.dtype), x),


def finish_grad_x_math(partial: Tensor, x: Tensor, k_inst: Tensor, inst_mean: Tensor,
                       k_batch: Tensor, batch_mean: Tensor):
    """Pass 2 of backward after a ``partial`` pass 1: grad_x = partial + k_i (x - mu_i) + ..."""
    xc = rows(x).to(k_inst.dtype)
    grad_x = partial + _centred(xc, k_inst, inst_mean, k_batch, batch_mean)
    return unrows(grad_x.to(x.dtype), x),


def _partial_grad_x(g, xc, weight, v, inv_d, take_right):
    """g w / d - rho q v, q = g w x / d^2."""
    gw = g * per_channel(weight.to(xc.dtype), xc) * inv_d
    return gw - torch.where(take_right, gw * xc * inv_d, 0.0) * per_channel(v.to(xc.dtype), xc)


def _centred(xc, k_inst, inst_mean, k_batch, batch_mean):
    return (per_sample(k_inst, xc) * (xc - per_sample(inst_mean, xc))
            + per_channel(k_batch, xc) * (xc - per_channel(batch_mean, xc)))


def _forward(x, weight, bias, v, running_var, eps):
    if _native.serves(x, weight, bias, v, running_var):
        return _native.b0_forward(x, weight, bias, v, running_var, eps)
    if running_var is None:
        stats = _compile.run(stats_math, [x], running_var=None, eps=eps)
    else:
        stats = _compile.run(stats_math, [x, running_var], eps=eps)
    inst_mean, inst_std, batch_mean, batch_var, left = stats
    y, = _compile.run(output_math, [x, weight, bias, v, inst_std, left])
    return y, inst_mean, inst_std, batch_mean, batch_var


def _backward(grad_y, x, weight, v, inst_mean, inst_std, batch_mean, batch_var, training, eps):
    stats = (inst_mean, inst_std, batch_mean, batch_var)
    if _native.serves(x, grad_y, weight, v, *stats):
        return _native.b0_backward(grad_y, x, weight, v, *stats, training, eps)
    left = torch.sqrt(batch_var + eps)
    tensors = [grad_y, x, weight, v, inst_std, left]
    if memory_format(x) == torch.contiguous_format:
        grad_w, grad_b, grad_v, k_inst, k_batch, partial = _compile.run(
            sums_math, tensors, training=training, partial=True)
        grad_x, = _compile.run(finish_grad_x_math,
                               [partial, x, k_inst, inst_mean, k_batch, batch_mean])
    else:
        grad_w, grad_b, grad_v, k_inst, k_batch = _compile.run(
            sums_math, tensors, training=training, partial=False)
        grad_x, = _compile.run(grad_x_math, tensors + [k_inst, inst_mean, k_batch, batch_mean])
    return grad_x, grad_w, grad_b, grad_v


evonorm_b0_cpu = b0_op.define("cpu", _forward, _backward)
