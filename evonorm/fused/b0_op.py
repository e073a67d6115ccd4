r"""The EvoNorm-B0 operator contract shared by the CPU and Triton backends: schema, fake, autograd.

.. math::
    y = \frac{x}{d} \gamma + \beta, \qquad d = \max\left(\sqrt{\sigma^2_b + \epsilon},\;
        v x + \sqrt{\sigma^2_i + \epsilon}\right)

with the biased variances over (N, *spatial) per channel (:math:`\sigma^2_b`, training) and over
*spatial per (sample, channel) (:math:`\sigma^2_i`); ties go to the batch term, as the gradient of
``tf.maximum`` does. In eval the running variance replaces :math:`\sigma^2_b`. A backend gives its
kernels to :func:`define`, which registers

* ``evonorm::b0_<backend>(x, weight, bias, v, running_var, eps) -> (y, inst_mean, inst_std,
  batch_mean, batch_var)``: ``running_var`` None means training (batch statistics); the outputs
  after ``y`` are float32 statistics, (N, C) then (C,). ``batch_var`` is what the layer folds into
  its running variance (the op itself mutates nothing, so autograd and ``torch.compile`` see a
  functional op; the layer's in-place buffer update is visible to both). The autograd formula saves
  only ``x``, ``weight``, ``v`` and the four statistics.
* ``evonorm::b0_<backend>_backward(grad_y, x, weight, v, inst_mean, inst_std, batch_mean,
  batch_var, training, eps) -> (grad_x, grad_weight, grad_bias, grad_v)``, not differentiable again.

Backward (derivation): let :math:`L = \sqrt{\sigma^2_b + \epsilon}`, :math:`R = v x + S_i` with
:math:`S_i = \sqrt{\sigma^2_i + \epsilon}`, :math:`\rho = [L < R]` (right branch taken),
:math:`q = g \gamma x / d^2` (so :math:`\partial d = -q`). Then

.. math::
    \partial\beta_c = \textstyle\sum g, \quad \partial\gamma_c = \sum g x / d, \quad
    \partial v_c = -\sum \rho\, q\, x,

    \partial x = \frac{g\gamma}{d} - \rho\, q\, v
        + \frac{-\sum_p \rho q}{S_i} \frac{x - \mu_i}{P}
        + [\text{train}] \frac{-\sum_{n,p} (1-\rho) q}{L} \frac{x - \mu_b}{N P}

from :math:`\partial S_i/\partial x = (x - \mu_i) / (P S_i)` and :math:`\partial L/\partial x = (x -
\mu_b) / (N P L)` (P = spatial size, biased variances).

Every backend has the same three stages and shares the middle one (:func:`forward_coefficients`,
:func:`backward_coefficients`, torch on (N, C) and (C,) tensors): a pass over ``x`` (and
``grad_y``) reducing per (sample, channel); the algebra of statistics and gradients; an
elementwise pass.
"""
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from ._layout import dense_like, memory_format
from .._stats import stat_dtype
from ._library import define_pair, entry
from ._moments import merge_batch

FORWARD_SCHEMA = ("(Tensor x, Tensor weight, Tensor bias, Tensor v, Tensor? running_var, "
                  "float eps) -> (Tensor, Tensor, Tensor, Tensor, Tensor)")
BACKWARD_SCHEMA = ("(Tensor grad_y, Tensor x, Tensor weight, Tensor v, Tensor inst_mean, "
                   "Tensor inst_std, Tensor batch_mean, Tensor batch_var, bool training, "
                   "float eps) -> (Tensor, Tensor, Tensor, Tensor)")


def forward_coefficients(inst_mean: Tensor, inst_var: Tensor, running_var: Optional[Tensor],
                         eps: float) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(N, C) instance moments -> (inst_std, batch_mean, batch_var, left = sqrt(batch_var + eps)).

    With ``running_var`` given (eval) it is the batch variance and ``batch_mean`` is unused (0).
    """
    if running_var is None:
        batch_mean, batch_var = merge_batch(inst_mean, inst_var)
    else:
        batch_mean = torch.zeros_like(inst_mean[0])
        batch_var = running_var.to(inst_var.dtype, copy=True)
    return torch.sqrt(inst_var + eps), batch_mean, batch_var, torch.sqrt(batch_var + eps)


def backward_coefficients(sums: Tuple[Tensor, ...], weight: Tensor, v: Tensor, inst_std: Tensor,
                          left: Tensor, training: bool, spatial: int):
    """Per-(sample, channel) sums of ``g``, ``g x/d``, ``rho q``, ``rho q x``, ``(1-rho) q`` ->
    (grad_weight, grad_bias, grad_v, k_inst (N, C), k_batch (C,)), so that

    ``grad_x = g w / d - rho q v + k_inst (x - mu_i) + k_batch (x - mu_b)``; ``k_batch`` is 0 in
    eval. ``k * (x - mean)`` per statistic rather than ``k x + shift``: the latter cancels
    catastrophically when d is tiny (k ~ 1/d^2) and x sits at its mean.
    """
    sum_g, sum_z, sum_r, sum_rx, sum_l = sums
    k_inst = -sum_r / (inst_std * spatial)
    if training:
        k_batch = -sum_l.sum(0) / (left * (sum_l.shape[0] * spatial))
    else:
        k_batch = torch.zeros_like(left)
    return (sum_z.sum(0).to(weight.dtype), sum_g.sum(0).to(weight.dtype),
            (-sum_rx.sum(0)).to(v.dtype), k_inst, k_batch)


def _forward_fake(x, weight, bias, v, running_var, eps):
    dtype = stat_dtype(x.dtype)
    inst = x.new_empty(x.shape[:2], dtype=dtype)
    chan = x.new_empty(x.shape[1:2], dtype=dtype)
    return (torch.empty_like(x, memory_format=memory_format(x)), inst, torch.empty_like(inst),
            chan, torch.empty_like(chan))


def _backward_fake(grad_y, x, weight, v, inst_mean, inst_std, batch_mean, batch_var, training,
                   eps):
    return (torch.empty_like(x, memory_format=memory_format(x)), torch.empty_like(weight),
            torch.empty_like(weight), torch.empty_like(v))


def _setup_context(ctx, inputs, output):
    x, weight, _bias, v, running_var, eps = inputs
    _y, *stats = output
    ctx.mark_non_differentiable(*stats)
    ctx.save_for_backward(x, weight, v, *stats)
    ctx.training, ctx.eps = running_var is None, eps


def _backward_formula(backward_op, ctx, grad_y, *_grad_stats):
    x, weight, v, *stats = ctx.saved_tensors
    grads = backward_op(dense_like(grad_y, x), x, weight, v, *stats, ctx.training, ctx.eps)
    return (*grads, None, None)


def define(backend: str, forward: Callable, backward: Callable):
    """Register ``evonorm::b0_<backend>`` and its backward op around the given kernels."""
    return define_pair(f"evonorm::b0_{backend}", (forward, backward),
                       (FORWARD_SCHEMA, BACKWARD_SCHEMA), (_forward_fake, _backward_fake),
                       _setup_context, _backward_formula)


def apply(op, x: Tensor, weight: Tensor, bias: Tensor, v: Tensor, running_var: Optional[Tensor],
          eps: float):
    """(y, batch_var) of a defined forward op, ``x`` made dense (contiguous or channels_last)."""
    x = x.contiguous(memory_format=memory_format(x))
    y, _mean, _std, _batch_mean, batch_var = entry(op)(x, weight, bias, v, running_var, eps)
    return y, batch_var
