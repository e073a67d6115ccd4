"""Lean backward passes for the ops that dominate a compiled candidate's training step on CPU.

Autograd's own backward of ``torch.maximum`` (masks, ``masked_fill``, tie splitting), of division, of a
two-pass variance and of the double-``where`` sign-preserving log and sqrt take several full passes each;
these Functions take one to three (five or six for log and sqrt, against about ten). Their forward passes are
the very functions of ``primitives.stats``, ``torch.maximum`` and ``torch.div`` (or the same ops in the same
order), so outputs are bit-identical to the plain path (and to exported layers). Backward passes are written
with differentiable torch ops on saved inputs (or outputs), so double backward (the evaluator's stability
check) works through them.

The proxies train channels_last (NHWC): there, group statistics sum over the spatial axes first and then over
each group's channels, because the (N, G, C/G, H*W) reshape of the plain path would copy the whole tensor in
every pass; those values agree with the plain path's to rounding, not bit for bit.
"""
from __future__ import annotations

import torch

from .stats import accumulate, axis_moment, reduce_dims

__all__ = ["divide", "maximum", "moment", "signed_log", "signed_sqrt", "is_channels_last"]


def is_channels_last(x: torch.Tensor) -> bool:
    """A 4-D tensor laid out NHWC (and not also NCHW, as 1x1 maps are)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _group_sum(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Per-(sample, group) sums of a channels_last x, (N, C, 1, 1), each group's value repeated over its
    channels: spatial sums first, which read NHWC memory in order (a (N, G, C/G, H*W) reshape would copy x)."""
    n, c = x.shape[0], x.shape[1]
    s = x.sum((2, 3)).reshape(n, groups, c // groups).sum(2, keepdim=True)
    return s.expand(n, groups, c // groups).reshape(n, c, 1, 1)


def _group_moment_nhwc(x: torch.Tensor, kind: str, groups: int) -> torch.Tensor:
    """``stats.axis_moment(x, "group", ...)`` for a channels_last x (the sums run in another order, so the
    values agree to rounding, not bit for bit)."""
    xa = accumulate(x)
    count = xa.shape[1] // groups * xa.shape[2] * xa.shape[3]
    if kind == "mean":
        return _group_sum(xa, groups) / count
    if kind == "var":
        d = xa - _group_sum(xa, groups) / count
        return _group_sum(d * d, groups) / count
    return _group_sum(xa * xa, groups) / count


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


class _SignedLog(torch.autograd.Function):
    """sign(a) ln|a|, 0 at a == 0 (``ops.signed_log``'s values, in 6 passes rather than 9); gradient 1/|a|,
    0 at 0, autograd's value bit for bit, in 5 passes."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return torch.where(a == 0, 0.0, torch.sign(a) * torch.log(torch.abs(a)))

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        zero = a == 0  # a safe divisor there, so that double backward meets no 0/0 either
        return torch.where(zero, 0.0, grad / torch.where(zero, 1.0, torch.abs(a)))


class _SignedSqrt(torch.autograd.Function):
    """sign(a) sqrt|a|, 0 at a == 0 (``ops.signed_sqrt``'s values, in 6 passes rather than 9); gradient
    1 / (2 sqrt|a|), 0 at 0, the root reused from forward (autograd's value bit for bit, in 6 passes)."""

    @staticmethod
    def forward(ctx, a):
        out = torch.where(a == 0, 0.0, torch.sign(a) * torch.sqrt(torch.abs(a)))
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        zero = out == 0
        return torch.where(zero, 0.0, grad / (2 * torch.where(zero, 1.0, torch.abs(out))))


def signed_log(a: torch.Tensor) -> torch.Tensor:
    return _SignedLog.apply(a)


def signed_sqrt(a: torch.Tensor) -> torch.Tensor:
    return _SignedSqrt.apply(a)


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


def _centered_var(x: torch.Tensor, axes: str, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(stats.axis_moment(x, axes, "var", groups), x - its mean)``: the same ops as ``stats.reduce_moment``
    (so the same bits), keeping the centred values, which the backward pass then reuses."""
    xa = accumulate(x)
    n, c = x.shape[0], x.shape[1]
    if axes == "group" and is_channels_last(x):
        count = c // groups * x.shape[2] * x.shape[3]
        d = xa - _group_sum(xa, groups) / count
        return _group_sum(d * d, groups) / count, d
    if axes == "group":
        grouped = xa.reshape(n, groups, c // groups, -1)
        d = grouped - grouped.mean([2, 3], keepdim=True)
        m = (d * d).mean([2, 3], keepdim=True)
        return m.expand(n, groups, c // groups, 1).reshape([n, c] + [1 for _ in range(x.dim() - 2)]), d
    dims = reduce_dims(axes, x.dim())
    if len(dims) == 0:  # instance statistics of an (N, C) tensor: each value is its own instance
        xa = xa.unsqueeze(-1)
        d = xa - xa.mean([-1], keepdim=True)
        return (d * d).mean([-1], keepdim=True).squeeze(-1), d
    d = xa - xa.mean(dims, keepdim=True)
    return (d * d).mean(dims, keepdim=True), d


class _Moment(torch.autograd.Function):
    """``stats.axis_moment`` with an analytic backward: mean -> g/n, var -> 2g(x - mean)/n, msq -> 2gx/n.

    A variance keeps x - mean from its forward pass, so a first-order backward is one pass; under double
    backward (``create_graph``) it is recomputed from x, differentiably.
    """

    @staticmethod
    def forward(ctx, x, axes, kind, groups):
        if axes == "group" and groups == x.shape[1] and is_channels_last(x):
            axes = "instance"  # one channel per group: the same statistic, without the group sums
        ctx.axes, ctx.kind, ctx.groups = axes, kind, groups
        if kind == "var":
            m, d = _centered_var(x, axes, groups)
            ctx.save_for_backward(x, d)
            return m
        ctx.save_for_backward(x)
        if axes == "group" and is_channels_last(x):
            return _group_moment_nhwc(x, kind, groups)
        return axis_moment(x, axes, kind, groups)

    @staticmethod
    def backward(ctx, grad):
        x = ctx.saved_tensors[0]
        n, c = x.shape[0], x.shape[1]
        if ctx.kind == "var" and not torch.is_grad_enabled():
            return _var_grad_from_centered(ctx.saved_tensors[1], x, grad, ctx.axes, ctx.groups), None, None, None
        xa = accumulate(x)
        if ctx.axes == "group" and is_channels_last(x):
            g, count = ctx.groups, c // ctx.groups * x.shape[2] * x.shape[3]
            group_grad = _channel_group_grad(grad, g)
            if ctx.kind == "mean":
                dx = (group_grad / count).expand_as(xa)
            elif ctx.kind == "var":
                dx = (xa - _group_sum(xa, g) / count) * (group_grad * (2.0 / count))
            else:
                dx = xa * (group_grad * (2.0 / count))
        elif ctx.axes == "group":
            g = ctx.groups
            grouped = xa.reshape(n, g, c // g, -1)
            group_grad = grad.reshape(n, g, c // g, 1).sum(2, keepdim=True)  # each group's value was repeated
            dx = _moment_grad(grouped, group_grad, [2, 3], ctx.kind).reshape(x.shape)
        elif x.dim() == 2 and ctx.axes == "instance":  # each value is its own instance
            dx = _moment_grad(xa.unsqueeze(-1), grad.unsqueeze(-1), [2], ctx.kind).squeeze(-1)
        else:
            dx = _moment_grad(xa, grad, reduce_dims(ctx.axes, x.dim()), ctx.kind)
        return dx.to(x.dtype), None, None, None


def _channel_group_grad(grad: torch.Tensor, groups: int) -> torch.Tensor:
    """The gradient of a group moment (N, C, 1, 1), summed over each group's channels and repeated on them."""
    n, c = grad.shape[0], grad.shape[1]
    cg = c // groups
    return grad.reshape(n, groups, cg).sum(2, keepdim=True).expand(n, groups, cg).reshape(n, c, 1, 1)


def _var_grad_from_centered(d: torch.Tensor, x: torch.Tensor, grad: torch.Tensor, axes: str,
                            groups: int) -> torch.Tensor:
    """2 g (x - mean) / n from the saved centred values ``d`` (shaped as ``_centered_var`` left them)."""
    n, c = x.shape[0], x.shape[1]
    if axes == "group" and is_channels_last(x):
        count = c // groups * x.shape[2] * x.shape[3]
        return (d * (_channel_group_grad(grad, groups) * (2.0 / count))).to(x.dtype)
    if axes == "group":
        count = d.shape[2] * d.shape[3]
        group_grad = grad.reshape(n, groups, c // groups, 1).sum(2, keepdim=True)
        return (d * (group_grad * (2.0 / count))).reshape(x.shape).to(x.dtype)
    if d.dim() != x.dim():  # (N, C) instance: d is (N, C, 1)
        return (d * (grad.unsqueeze(-1) * 2.0)).squeeze(-1).to(x.dtype)
    count = 1
    for dim in reduce_dims(axes, x.dim()):
        count *= x.shape[dim]
    return (d * (grad * (2.0 / count))).to(x.dtype)


def moment(x: torch.Tensor, axes: str, kind: str, groups: int) -> torch.Tensor:
    return _Moment.apply(x, axes, kind, groups)
