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
``grad_x``. The sigmoid is evaluated once per element in each pass and never stored. Saved for
backward: ``x`` and two (N, G) statistics. On channels_last the sums read a strided outer axis,
where PyTorch's BatchNorm does not. The sigmoid is most of the cost: it is evaluated in every pass but
the statistics. Python dispatch (custom op, autograd, 4 kernel calls) shows on small shapes. The first
call for a new shape, layout or dtype compiles (cached on disk by inductor). ``bench/layers.py``
measures time and memory against BatchNorm2d + ReLU and timm; the README has the numbers.
"""
import torch
from torch import Tensor

from .._stats import spatial_dims, stat_dtype
from . import _compile, s0_op
from ._layout import broadcast


def _gate_arg(xc: Tensor, v, x: Tensor) -> Tensor:
    return xc if v is None else xc * broadcast(v.to(xc.dtype), x)


def stats_math(x: Tensor, weight: Tensor, *, groups: int, eps: float, centered: bool):
    """Pass 1 of forward: (mean, rstd, scale) of :func:`.s0_op.forward_coefficients`."""
    var, mean = torch.var_mean(x.to(stat_dtype(x.dtype)), dim=spatial_dims(x),
                               correction=0)
    return s0_op.forward_coefficients(mean, var, weight, groups, eps, centered)


def output_math(x: Tensor, scale: Tensor, bias: Tensor, v=None):
    """Pass 2 of forward: y = x sigmoid(v x) scale + bias."""
    xc = x.to(scale.dtype)
    y = xc * torch.sigmoid(_gate_arg(xc, v, x)) * broadcast(scale, x)
    return (y + broadcast(bias.to(scale.dtype), x)).to(x.dtype),


def sums_math(grad_y: Tensor, x: Tensor, weight: Tensor, mean: Tensor, rstd: Tensor, v=None):
    """Pass 1 of backward: :func:`.s0_op.backward_coefficients` of the per-(n, c) sums."""
    xc, g = x.to(rstd.dtype), grad_y.to(rstd.dtype)
    dims = spatial_dims(x)
    z = _gate_arg(xc, v, x)
    # Every use of the gate calls sigmoid afresh: on CPU inductor stores any reused value that
    # involves an exp (a full-size write and two reads), while single-use calls inline into the
    # loop, where its common-subexpression pass evaluates them once.
    gx = g * xc
    sum_gh = (gx * torch.sigmoid(z)).sum(dims)
    sum_gv = None
    if v is not None:
        sum_gv = (gx * xc * torch.sigmoid(z) * (1 - torch.sigmoid(z))).sum(dims)
    count = x.numel() // (x.shape[0] * rstd.shape[1])
    sum_g = _compile.in_loop_of(g, z).sum(dims)
    return s0_op.backward_coefficients(sum_gh, sum_gv, sum_g, weight, v, mean, rstd, count)


def grad_x_math(grad_y: Tensor, x: Tensor, a: Tensor, k: Tensor, mu: Tensor, v=None):
    """Pass 2 of backward: grad_x = g a (s + v x s(1-s)) + k (x - mu)."""
    xc, g = x.to(a.dtype), grad_y.to(a.dtype)
    z = _gate_arg(xc, v, x)
    slope = torch.sigmoid(z) * (1 + z * (1 - torch.sigmoid(z)))
    grad_x = g * broadcast(a, x) * slope + broadcast(k, x) * (xc - broadcast(mu, x))
    return grad_x.to(x.dtype),


def _forward(x, weight, bias, v, groups, eps, centered):
    mean, rstd, scale = _compile.run(stats_math, [x, weight], groups=groups, eps=eps,
                                     centered=centered)
    y, = _run(output_math, [x, scale, bias], v)
    return y, mean, rstd


def _backward(grad_y, x, weight, v, mean, rstd, groups, centered):
    grad_w, grad_b, grad_v, a, k, mu = _run(sums_math, [grad_y, x, weight, mean, rstd], v)
    grad_x, = _run(grad_x_math, [grad_y, x, a, k, mu], v)
    return grad_x, grad_w, grad_b, grad_v


def _run(fn, tensors, v):
    """``_compile.run`` with the optional ``v`` last among the tensors, or static when None."""
    if v is None:
        return _compile.run(fn, tensors, v=None)
    return _compile.run(fn, tensors + [v])


evonorm_s0_cpu = s0_op.define("cpu", _forward, _backward)
