"""Aggregate statistics over the four axis sets, shared by the graph compiler and the exported layers.

For x of shape (N, C, *spatial) the axis sets are

* ``batch``: (N, *spatial), one value per channel, with running moments like BatchNorm;
* ``layer``: (C, *spatial), one value per sample;
* ``instance``: (*spatial), one value per sample and channel;
* ``group``: (C/G, *spatial), one value per sample and group of C/G channels.

Statistics are ``mean``; ``std = sqrt(var + eps)`` with the biased variance; ``rms = sqrt(mean(x^2) + eps)``.
They are built from a raw moment (``mean``, ``var`` or ``msq``), which is what running buffers hold, reduce
in float32 under fp16/bf16 inputs, and come back in the input's dtype shaped to broadcast against x.

The functions below are TorchScript-compatible on purpose: ``primitives.codegen`` copies their source into
exported layers, so an exported layer computes exactly what the compiled graph computes.
"""
from __future__ import annotations

from typing import List

import torch

__all__ = ["resolve_groups", "accumulate", "reduce_dims", "reduce_moment", "axis_moment", "update_running",
           "running_moment", "finish", "MOMENT_OF", "INITIAL_MOMENT", "SCRIPTABLE"]

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


def accumulate(x: torch.Tensor) -> torch.Tensor:
    """x in the dtype statistics accumulate in: float32 for fp16/bf16, its own dtype otherwise."""
    if x.dtype == torch.float16 or x.dtype == torch.bfloat16:
        return x.float()
    return x


def reduce_dims(axes: str, ndim: int) -> List[int]:
    """The dimensions a batch, layer or instance statistic reduces (groups reduce after a reshape)."""
    spatial = [d for d in range(2, ndim)]
    if axes == "batch":
        return [0] + spatial
    if axes == "layer":
        return [1] + spatial
    return spatial


def reduce_moment(x: torch.Tensor, dims: List[int], kind: str) -> torch.Tensor:
    """The moment ``kind`` over ``dims``, dims kept: mean; var, biased, in two passes (as accurate as
    Welford, and several times faster than ``torch.var`` on CPU); msq, the mean of squares."""
    if kind == "mean":
        return x.mean(dims, keepdim=True)
    if kind == "var":
        d = x - x.mean(dims, keepdim=True)
        return (d * d).mean(dims, keepdim=True)
    return (x * x).mean(dims, keepdim=True)


def axis_moment(x: torch.Tensor, axes: str, kind: str, groups: int) -> torch.Tensor:
    """The moment of x over an axis set, in the accumulation dtype, broadcastable against x.

    Shapes: batch (1, C, 1..), layer (N, 1, 1..), instance and group (N, C, 1..); a group's value is
    repeated over its channels. ``groups`` must divide C (see ``resolve_groups``).
    """
    xa = accumulate(x)
    n, c = x.shape[0], x.shape[1]
    if axes == "group":
        m = reduce_moment(xa.reshape(n, groups, c // groups, -1), [2, 3], kind)
        return m.expand(n, groups, c // groups, 1).reshape([n, c] + [1 for _ in range(x.dim() - 2)])
    dims = reduce_dims(axes, x.dim())
    if len(dims) == 0:  # instance statistics of an (N, C) tensor: each value is its own instance
        return reduce_moment(xa.unsqueeze(-1), [-1], kind).squeeze(-1)
    return reduce_moment(xa, dims, kind)


def update_running(m: torch.Tensor, running: torch.Tensor, momentum: float) -> torch.Tensor:
    """Fold a batch moment into its running average, like BatchNorm, and pass the moment on.

    ``running = (1 - momentum) * running + momentum * m``: the official decay is 1 - momentum, and the
    variance folded in is the biased one.
    """
    with torch.no_grad():
        running.lerp_(m.detach().reshape(-1).to(running.dtype), momentum)
    return m


def running_moment(running: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A running moment shaped and typed like a batch moment of x (eval mode)."""
    return running.to(accumulate(x).dtype).reshape([1, -1] + [1 for _ in range(x.dim() - 2)])


def finish(m: torch.Tensor, stat: str, eps: float, like: torch.Tensor) -> torch.Tensor:
    """Turn a moment into its statistic (eps inside the root), in ``like``'s dtype."""
    if stat != "mean":
        m = torch.sqrt(m + eps)
    return m.to(like.dtype)


# What an exported layer needs, in order (codegen copies their source).
SCRIPTABLE = (accumulate, reduce_dims, reduce_moment, axis_moment, update_running, running_moment, finish)
