r"""EvoNorm-B0 for CPU: the stages of :mod:`evonorm.fused.b0_op` as inductor kernels.

Each direction is two small torch functions compiled by :mod:`evonorm.fused._compile` (eager on
other devices or when inductor is unavailable): a reduction per (sample, channel) over the spatial
axes followed by the (N, C) algebra of :mod:`.b0_op` (the batch variance is Chan's merge of the
instance moments over samples, so one pass over ``x`` yields both), then one elementwise pass.

Performance: forward is one statistics pass over ``x`` (NCHW rows of <= 1024 elements are read
twice, the second time from cache; channels_last uses Welford) plus an elementwise pass; backward
one pass reading ``(x, grad_y)`` for the five sums and one writing ``grad_x``; nothing full-size is
stored in between (inductor's store-vs-recompute thresholds are raised, see ``_compile``) and each
pass divides once per element. Saved for backward: ``x`` and four (N, C)/(C,) statistics. The first
call for a new shape, layout or dtype compiles (cached on disk). ``bench/layers.py`` measures time and
memory against BatchNorm2d + ReLU and timm; the README has the numbers.
"""
import torch
from torch import Tensor

from .._stats import spatial_dims, stat_dtype
from . import _compile, b0_op
from ._layout import broadcast


def _inverse_denominator(xc: Tensor, x: Tensor, v: Tensor, inst_std: Tensor, left: Tensor):
    """(1 / d, take_right) for d = max(left, v x + inst_std), ties to left as the forward's where.

    One division per element, then products: a vector division costs several multiplies.
    """
    right = xc * broadcast(v.to(xc.dtype), x) + broadcast(inst_std, x)
    left = broadcast(left, x)
    take_right = left < right  # the complement of `left >= right`
    return 1 / torch.where(take_right, right, left), take_right


def stats_math(x: Tensor, running_var=None, *, eps: float):
    """Pass 1 of forward: instance moments and :func:`.b0_op.forward_coefficients`."""
    var, mean = torch.var_mean(x.to(stat_dtype(x.dtype)), dim=spatial_dims(x),
                               correction=0)
    return (mean,) + b0_op.forward_coefficients(mean, var, running_var, eps)


def output_math(x: Tensor, weight: Tensor, bias: Tensor, v: Tensor, inst_std: Tensor,
                left: Tensor):
    """Pass 2 of forward: y = x / d * weight + bias."""
    xc = x.to(left.dtype)
    inv_d, _ = _inverse_denominator(xc, x, v, inst_std, left)
    y = xc * inv_d * broadcast(weight.to(xc.dtype), x) + broadcast(bias.to(xc.dtype), x)
    return y.to(x.dtype),


def sums_math(grad_y: Tensor, x: Tensor, weight: Tensor, v: Tensor, inst_std: Tensor,
              left: Tensor, *, training: bool):
    """Pass 1 of backward: the five per-(n, c) sums and :func:`.b0_op.backward_coefficients`."""
    xc, g = x.to(left.dtype), grad_y.to(left.dtype)
    dims = spatial_dims(x)
    inv_d, take_right = _inverse_denominator(xc, x, v, inst_std, left)
    z = xc * inv_d
    q = g * broadcast(weight.to(xc.dtype), x) * z * inv_d
    q_right = torch.where(take_right, q, 0.0)
    sums = (_compile.in_loop_of(g, inv_d).sum(dims), (g * z).sum(dims), q_right.sum(dims),
            (q_right * xc).sum(dims), (q - q_right).sum(dims))
    spatial = x.numel() // (x.shape[0] * x.shape[1])
    return b0_op.backward_coefficients(sums, weight, v, inst_std, left, training, spatial)


def grad_x_math(grad_y: Tensor, x: Tensor, weight: Tensor, v: Tensor, inst_std: Tensor,
                left: Tensor, k_inst: Tensor, inst_mean: Tensor, k_batch: Tensor,
                batch_mean: Tensor):
    """Pass 2 of backward: grad_x = g w / d - rho q v + k_i (x - mu_i) + k_b (x - mu_b)."""
    xc, g = x.to(left.dtype), grad_y.to(left.dtype)
    inv_d, take_right = _inverse_denominator(xc, x, v, inst_std, left)
    gw = g * broadcast(weight.to(xc.dtype), x) * inv_d
    q_right = torch.where(take_right, gw * xc * inv_d, 0.0)
    grad_x = (gw - q_right * broadcast(v.to(xc.dtype), x)
              + broadcast(k_inst, x) * (xc - broadcast(inst_mean, x))
              + broadcast(k_batch, x) * (xc - broadcast(batch_mean, x)))
    return grad_x.to(x.dtype),


def _forward(x, weight, bias, v, running_var, eps):
    if running_var is None:
        stats = _compile.run(stats_math, [x], running_var=None, eps=eps)
    else:
        stats = _compile.run(stats_math, [x, running_var], eps=eps)
    inst_mean, inst_std, batch_mean, batch_var, left = stats
    y, = _compile.run(output_math, [x, weight, bias, v, inst_std, left])
    return y, inst_mean, inst_std, batch_mean, batch_var


def _backward(grad_y, x, weight, v, inst_mean, inst_std, batch_mean, batch_var, training, eps):
    left = torch.sqrt(batch_var + eps)
    grad_w, grad_b, grad_v, k_inst, k_batch = _compile.run(
        sums_math, [grad_y, x, weight, v, inst_std, left], training=training)
    grad_x, = _compile.run(grad_x_math, [grad_y, x, weight, v, inst_std, left, k_inst, inst_mean,
                                         k_batch, batch_mean])
    return grad_x, grad_w, grad_b, grad_v


evonorm_b0_cpu = b0_op.define("cpu", _forward, _backward)
