r"""The EvoNorm-S operator contract shared by the CPU and Triton backends: schema, fake, autograd.

.. math::
    y = \frac{x \,\mathrm{sigmoid}(v x)}{\sqrt{\sigma^2_g + \epsilon}} \gamma + \beta

per (sample, group) g of C/G channels and all spatial positions (biased statistic, ``eps`` inside the
root). ``v`` None means v = 1 (S1, S2); ``centered=False`` replaces the variance by the mean square
(S2). A backend gives its forward and backward kernels to :func:`define`, which registers

* ``evonorm::s0_<backend>(x, weight, bias, v, groups, eps, centered) -> (y, mean, rstd)``: ``mean``
  and ``rstd`` are the (N, G) statistics in float32 (float64 for float64 input), ``mean`` zero when
  not centered; the autograd formula saves only ``x``, ``weight``, ``v`` and these two.
* ``evonorm::s0_<backend>_backward(grad_y, x, weight, v, mean, rstd, groups, centered)
  -> (grad_x, grad_weight, grad_bias, grad_v)``, ``grad_v`` of shape (0,) when ``v`` is None. It is
  not differentiable again: double backward needs the layers' ``impl="reference"``.

Backward (derivation, with :math:`s = \mathrm{sigmoid}(vx)`, :math:`h = xs`, :math:`r = (\sigma^2_g +
\epsilon)^{-1/2}`, :math:`M` = elements per group, sums over a group's elements unless marked):

.. math::
    \partial\beta_c = \textstyle\sum_{n,p} g, \quad
    \partial\gamma_c = \sum_{n,p} g\,h\,r, \quad
    \partial v_c = \gamma_c \sum_{n,p} g\,r\,x^2 s(1-s),

    A_{ng} = \textstyle\sum_{c \in g,\,p} g\,\gamma_c\,h, \qquad
    \partial x = g\,\gamma r\,(s + v x s(1-s)) - A\,r^3\,(x - \mu_g) / M,

using :math:`\partial r / \partial x = -r^3 (x - \mu_g) / M` (biased variance; :math:`\mu_g = 0` when
not centered).

Every backend has the same three stages, and shares the middle one (:func:`forward_coefficients`,
:func:`backward_coefficients`, torch on (N, C) tensors): a pass over ``x`` (and ``grad_y``) reducing
per (sample, channel); the algebra that turns those sums into statistics, parameter gradients and
per-(sample, channel) coefficients; an elementwise pass ``y = x s a + b`` or ``grad_x = g a (s + v x
s(1-s)) + k (x - mu)`` with (N, C) ``a``, ``k``, ``mu``, so it indexes nothing by group.
"""
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from ._layout import dense_like, memory_format
from .._stats import groups_to_channels, stat_dtype
from ._library import define_pair, entry
from ._moments import merge_groups

FORWARD_SCHEMA = ("(Tensor x, Tensor weight, Tensor bias, Tensor? v, int groups, float eps, "
                  "bool centered) -> (Tensor, Tensor, Tensor)")
BACKWARD_SCHEMA = ("(Tensor grad_y, Tensor x, Tensor weight, Tensor? v, Tensor mean, Tensor rstd, "
                   "int groups, bool centered) -> (Tensor, Tensor, Tensor, Tensor)")


def forward_coefficients(inst_mean: Tensor, inst_var: Tensor, weight: Tensor, groups: int,
                         eps: float, centered: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """(N, C) instance moments -> (mean (N, G), rstd (N, G), scale (N, C) = weight * rstd)."""
    n, c = inst_mean.shape
    if centered:
        mean, var = merge_groups(inst_mean, inst_var, groups)
    else:  # mean square = variance + mean^2, averaged over the group's channels
        var = (inst_var + inst_mean.square()).view(n, groups, -1).mean(2)
        mean = torch.zeros_like(var)
    rstd = torch.rsqrt(var + eps)
    return mean, rstd, groups_to_channels(rstd, c) * weight.to(rstd.dtype)


def backward_coefficients(sum_gh: Tensor, sum_gv: Optional[Tensor], sum_g: Tensor, weight: Tensor,
                          v: Optional[Tensor], mean: Tensor, rstd: Tensor, count: int):
    """Per-(sample, channel) sums of ``g h``, ``g x^2 s(1-s)`` (None without v) and ``g`` ->
    (grad_weight, grad_bias, grad_v, a, k, mu), the last three (N, C) for the elementwise pass.

    ``count`` is M, the elements per group.
    """
    n, c = sum_gh.shape
    groups = rstd.shape[1]
    w = weight.to(rstd.dtype)
    r = groups_to_channels(rstd, c)
    grad_w = (sum_gh * r).sum(0).to(weight.dtype)
    grad_b = sum_g.sum(0).to(weight.dtype)
    if v is None:
        grad_v = weight.new_empty((0,))
    else:
        grad_v = ((sum_gv * r).sum(0) * w).to(v.dtype)
    coef = -(sum_gh * w).view(n, groups, -1).sum(2) * rstd.pow(3) / count
    return grad_w, grad_b, grad_v, r * w, groups_to_channels(coef, c), groups_to_channels(mean, c)


def _forward_fake(x, weight, bias, v, groups, eps, centered):
    stats = x.new_empty((x.shape[0], groups), dtype=stat_dtype(x.dtype))
    return torch.empty_like(x, memory_format=memory_format(x)), stats, torch.empty_like(stats)


def _backward_fake(grad_y, x, weight, v, mean, rstd, groups, centered):
    grad_v = torch.empty_like(v) if v is not None else weight.new_empty((0,))
    return (torch.empty_like(x, memory_format=memory_format(x)), torch.empty_like(weight),
            torch.empty_like(weight), grad_v)


def _setup_context(ctx, inputs, output):
    x, weight, _bias, v, groups, _eps, centered = inputs
    _y, mean, rstd = output
    ctx.mark_non_differentiable(mean, rstd)
    ctx.save_for_backward(x, weight, v, mean, rstd)
    ctx.groups, ctx.centered = groups, centered


def _backward_formula(backward_op, ctx, grad_y, _grad_mean, _grad_rstd):
    x, weight, v, mean, rstd = ctx.saved_tensors
    grad_x, grad_w, grad_b, grad_v = backward_op(dense_like(grad_y, x), x, weight, v, mean, rstd,
                                                 ctx.groups, ctx.centered)
    return grad_x, grad_w, grad_b, (grad_v if v is not None else None), None, None, None


def define(backend: str, forward: Callable, backward: Callable):
    """Register ``evonorm::s0_<backend>`` and its backward op around the given kernels.

    ``forward``/``backward`` take the schema's arguments and return its outputs, with ``y`` and
    ``grad_x`` laid out like ``x`` (``grad_y`` arrives already in that layout).
    """
    return define_pair(f"evonorm::s0_{backend}", (forward, backward),
                       (FORWARD_SCHEMA, BACKWARD_SCHEMA), (_forward_fake, _backward_fake),
                       _setup_context, _backward_formula)


def apply(op, x: Tensor, weight: Tensor, bias: Tensor, v, groups: int, eps: float,
          centered: bool) -> Tensor:
    """Run a defined forward op on ``x`` made dense (contiguous or channels_last) first."""
    x = x.contiguous(memory_format=memory_format(x))
    return entry(op)(x, weight, bias, v, groups, eps, centered)[0]
