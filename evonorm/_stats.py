"""Statistics shared by the reference EvoNorm layers in :mod:`evonorm.layers`.

Every helper takes ``x`` of shape (N, C, *spatial) and reduces in ``x``'s own
dtype; the layers upcast to float32 (or keep float64) before calling, so the
helpers never cast. All variances are biased (divide by the element count), as
``tf.nn.moments`` in the authors' code, and ``eps`` goes inside the square root.
The results broadcast against ``x`` (size-1 axes are kept) so they never
materialise a full-size tensor.
"""
from typing import List

import torch
from torch import Tensor


def spatial_dims(x: Tensor) -> List[int]:
    """The axes after (N, C)."""
    return list(range(2, x.dim()))


def batch_var(x: Tensor) -> Tensor:
    """Biased variance per channel over (N, *spatial); shape (C,)."""
    return torch.var(x, dim=[0] + spatial_dims(x), correction=0)


def instance_std(x: Tensor, eps: float) -> Tensor:
    """sqrt(biased variance over *spatial + eps) per (sample, channel); shape (N, C, 1, ...)."""
    var = torch.var(x, dim=spatial_dims(x), correction=0, keepdim=True)
    return torch.sqrt(var + eps)


def instance_rms(x: Tensor, eps: float) -> Tensor:
    """sqrt(mean of squares over *spatial + eps) per (sample, channel); shape (N, C, 1, ...)."""
    return torch.sqrt(torch.mean(x * x, dim=spatial_dims(x), keepdim=True) + eps)


def _per_group_to_channels(stat: Tensor, x: Tensor) -> Tensor:
    """Spread a (N, G, 1) statistic over its C/G channels: (N, C, 1, ...)."""
    n, c = x.shape[:2]
    groups = stat.shape[1]
    return stat.expand(n, groups, c // groups).reshape([n, c] + [1] * (x.dim() - 2))


def group_std(x: Tensor, groups: int, eps: float) -> Tensor:
    """sqrt(biased variance over (C/G, *spatial) + eps) per (sample, group); shape (N, C, 1, ...).

    ``groups`` must divide C (the layers resolve it with ``resolve_groups``).
    """
    xg = x.reshape(x.shape[0], groups, -1)
    var = torch.var(xg, dim=-1, correction=0, keepdim=True)
    return _per_group_to_channels(torch.sqrt(var + eps), x)


def group_rms(x: Tensor, groups: int, eps: float) -> Tensor:
    """sqrt(mean square over (C/G, *spatial) + eps) per (sample, group); shape (N, C, 1, ...)."""
    xg = x.reshape(x.shape[0], groups, -1)
    rms = torch.sqrt(torch.mean(xg * xg, dim=-1, keepdim=True) + eps)
    return _per_group_to_channels(rms, x)
