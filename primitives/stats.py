"""Aggregate statistics over the four axis sets, shared by the graph compiler and the hand-written layers.

For x of shape (N, C, *spatial) the axis sets are

* ``batch``: (N, *spatial), one value per channel, with running statistics like BatchNorm;
* ``layer``: (C, *spatial), one value per sample;
* ``instance``: (*spatial), one value per sample and channel;
* ``group``: (C/G, *spatial), one value per sample and group of C/G channels.

Statistics are ``mean``; ``std = sqrt(var + eps)`` with the biased variance; ``rms = sqrt(mean(x^2) + eps)``.
They reduce in float32 under fp16/bf16 inputs (in the input's dtype otherwise) and come back in the input's
dtype, shaped to broadcast against x (the reduced axes kept as size 1).
"""
from __future__ import annotations

import torch

__all__ = ["resolve_groups", "moment", "finish", "reduce_dims", "accumulation_dtype", "MOMENT_OF", "INITIAL_MOMENT"]

# The moment each statistic is built from; running buffers hold it, before any square root.
MOMENT_OF = {"mean": "mean", "std": "var", "rms": "msq"}
# BatchNorm-like starting values: running variance and mean of squares at 1, running mean at 0.
INITIAL_MOMENT = {"mean": 0.0, "var": 1.0, "msq": 1.0}


def resolve_groups(num_channels: int, groups: int, group_size: int | None = None) -> int:
    """Number of groups actually used.

    As in the official code, ``groups`` falls back to the largest divisor of C that is <= groups
    (C=40, groups=32 -> 20). ``group_size`` (channels per group), when given, must divide C.
    """
    if num_channels < 1:
        raise ValueError(f"num_channels must be positive, got {num_channels}")
    if group_size is not None:
        if group_size < 1 or num_channels % group_size:
            raise ValueError(f"group_size={group_size} does not divide num_channels={num_channels}")
        return num_channels // group_size
    if groups < 1:
        raise ValueError(f"groups must be positive, got {groups}")
    g = min(groups, num_channels)
    while num_channels % g:
        g -= 1
    return g


def reduce_dims(axes: str, ndim: int) -> tuple[int, ...]:
    """Dimensions reduced for an axis set on a tensor of rank ``ndim`` (groups reduce after a reshape)."""
    spatial = tuple(range(2, ndim))
    if axes == "batch":
        return (0,) + spatial
    if axes == "layer":
        return (1,) + spatial
    if axes == "instance":
        return spatial
    raise ValueError(f"no plain reduction for axes {axes!r}")


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision inputs, the input's own dtype otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _reduce(x: torch.Tensor, dims: tuple[int, ...], name: str) -> torch.Tensor:
    if name == "mean":
        return x.mean(dims, keepdim=True)
    if name == "var":
        return torch.var(x, dims, correction=0, keepdim=True)
    return x.square().mean(dims, keepdim=True)


def moment(x: torch.Tensor, axes: str, name: str, groups: int = 1) -> torch.Tensor:
    """The raw moment (``mean``, ``var`` or ``msq``) of x over ``axes``, in the accumulation dtype.

    The result broadcasts against x: (1, C, 1..), (N, 1, 1..), (N, C, 1..) or, for groups, (N, C, 1..)
    with each group's value repeated over its channels.
    """
    xa = x.to(accumulation_dtype(x.dtype))
    if axes != "group":
        dims = reduce_dims(axes, x.dim())
        if not dims:  # instance statistics of a (N, C) tensor: every value is its own instance
            return _reduce(xa.unsqueeze(-1), (-1,), name).squeeze(-1)
        return _reduce(xa, dims, name)
    n, c = x.shape[:2]
    grouped = xa.reshape(n, groups, c // groups, -1)
    m = _reduce(grouped, (2, 3), name)  # (N, G, 1, 1)
    return m.expand(n, groups, c // groups, 1).reshape((n, c) + (1,) * (x.dim() - 2))


def finish(m: torch.Tensor, stat: str, eps: float, dtype: torch.dtype) -> torch.Tensor:
    """Turn a moment into its statistic (eps inside the root) and cast to ``dtype``."""
    if stat != "mean":
        m = torch.sqrt(m + eps)
    return m.to(dtype)
