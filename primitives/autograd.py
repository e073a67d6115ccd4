"""Lean backward passes for the ops that dominate a compiled candidate's training step on CPU.

Autograd's own backward of ``torch.maximum`` (masks, ``masked_fill``, tie splitting), of division and of a
two-pass variance take several full passes each; these Functions take one to three. Their forward passes are
the very functions of ``primitives.stats``, ``torch.maximum`` and ``torch.div``, so outputs are bit-identical
to the plain path (and to exported layers). Backward passes are written with differentiable torch ops on
saved inputs (or outputs), so double backward (the evaluator's stability check) works through them.
"""
from __future__ import annotations

import torch

from .stats import accumulate, axis_moment, reduce_dims

__all__ = ["divide", "maximum", "moment"]


class _Maximum(torch.autograd.Function):
    """max(a, b); at a tie the gradient goes to ``a``, as ``tf.maximum``'s does (torch splits it)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return torch.maximum(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        with torch.no_grad():  # piecewise constant: no gradient flows through the mask
            # 1 where a >= b or either is NaN; faster on CPU than multiplying by a bool mask
            to_a = (a - b).sign_().add_(1).clamp_(max=1)
        grad_a = grad * to_a
        return grad_a.sum_to_size(a.shape), (grad - grad_a).sum_to_size(b.shape)


def maximum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _Maximum.apply(a, b)


class _Divide(torch.autograd.Function):
    """a / b (IEEE: Inf and NaN propagate); backward g/b and -(g/b)(a/b), the quotient reused from forward."""

    @staticmethod
    def forward(ctx, a, b):
        out = torch.div(a, b)
        ctx.save_for_backward(b, out)
        ctx.a_shape = a.shape
        return out

    @staticmethod
    def backward(ctx, grad):
        b, out = ctx.saved_tensors
        grad_a = grad / b
        grad_b = (grad_a * out).sum_to_size(b.shape)
        return grad_a.sum_to_size(ctx.a_shape), grad_b.neg_()


def divide(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _Divide.apply(a, b)


def _moment_grad(xa: torch.Tensor, grad: torch.Tensor, dims: list[int], kind: str) -> torch.Tensor:
    """d moment / d x times ``grad`` (shaped like the moment), for x already in the accumulation dtype."""
    count = 1
    for d in dims:
        count *= xa.shape[d]
    if kind == "mean":
        return (grad / count).expand_as(xa)
    if kind == "var":
        return (xa - xa.mean(dims, keepdim=True)) * (grad * (2.0 / count))
    return xa * (grad * (2.0 / count))


class _Moment(torch.autograd.Function):
    """``stats.axis_moment`` with an analytic backward: mean -> g/n, var -> 2g(x - mean)/n, msq -> 2gx/n."""

    @staticmethod
    def forward(ctx, x, axes, kind, groups):
        ctx.save_for_backward(x)
        ctx.axes, ctx.kind, ctx.groups = axes, kind, groups
        return axis_moment(x, axes, kind, groups)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        xa = accumulate(x)
        n, c = x.shape[0], x.shape[1]
        if ctx.axes == "group":
            g = ctx.groups
            grouped = xa.reshape(n, g, c // g, -1)
            group_grad = grad.reshape(n, g, c // g, 1).sum(2, keepdim=True)  # each group's value was repeated
            dx = _moment_grad(grouped, group_grad, [2, 3], ctx.kind).reshape(x.shape)
        elif x.dim() == 2 and ctx.axes == "instance":  # each value is its own instance
            dx = _moment_grad(xa.unsqueeze(-1), grad.unsqueeze(-1), [2], ctx.kind).squeeze(-1)
        else:
            dx = _moment_grad(xa, grad, reduce_dims(ctx.axes, x.dim()), ctx.kind)
        return dx.to(x.dtype), None, None, None


def moment(x: torch.Tensor, axes: str, kind: str, groups: int) -> torch.Tensor:
    return _Moment.apply(x, axes, kind, groups)
