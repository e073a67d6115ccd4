"""Statistics of the reference EvoNorm layers (:mod:`evonorm.layers`), and the shape and dtype rules that
every path of ``evonorm`` shares (the fused kernels import ``spatial_dims``, ``stat_dtype`` and
``groups_to_channels`` from here).

Every helper takes ``x`` of shape (N, C, *spatial) and reduces in ``x``'s own
dtype; the layers upcast to float32 (or keep float64) before calling, so the
helpers never cast. All variances are biased (divide by the element count), as
``tf.nn.moments`` in the authors' code, and ``eps`` goes inside the square root.
The results broadcast against ``x`` (size-1 axes are kept) so they never
materialise a full-size tensor.
"""
from typing import List, Tuple

import torch
from torch import Tensor


def spatial_dims(x: Tensor) -> List[int]:
    """The axes after (N, C)."""
    return list(range(2, x.dim()))


def stat_dtype(dtype: torch.dtype) -> torch.dtype:
    """Statistics and arithmetic never run below float32 (float64 stays float64)."""
    return torch.promote_types(dtype, torch.float32)


def groups_to_channels(stat: Tensor, channels: int) -> Tensor:
    """(N, G) -> (N, C): each group's value repeated over its C/G consecutive channels."""
    n, groups = stat.shape
    return stat.unsqueeze(2).expand(n, groups, channels // groups).reshape(n, channels)


def merge_moments(mean: Tensor, m2: Tensor, counts: Tensor, dim: int) -> Tuple[Tensor, Tensor]:
    """Chan's parallel merge: the mean and biased variance of the union of parts laid along ``dim``, from each
    part's mean, sum of squared deviations ``m2`` and element count (``counts`` broadcasts against them)."""
    total = counts.sum(dim)
    merged = (mean * counts).sum(dim) / total
    return merged, (m2.sum(dim) + (counts * (mean - merged.unsqueeze(dim)).square()).sum(dim)) / total


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
    """Spread a (N, G) statistic over its C/G channels, broadcasting against x: (N, C, 1, ...)."""
    n, c = x.shape[:2]
    return groups_to_channels(stat, c).view([n, c] + [1] * (x.dim() - 2))


def group_std(x: Tensor, groups: int, eps: float) -> Tensor:
    """sqrt(biased variance over (C/G, *spatial) + eps) per (sample, group); shape (N, C, 1, ...).

    ``groups`` must divide C (the layers resolve it with ``resolve_groups``).
    """
    xg = x.reshape(x.shape[0], groups, -1)
    var = torch.var(xg, dim=-1, correction=0)
    return _per_group_to_channels(torch.sqrt(var + eps), x)


def group_rms(x: Tensor, groups: int, eps: float) -> Tensor:
    """sqrt(mean square over (C/G, *spatial) + eps) per (sample, group); shape (N, C, 1, ...)."""
    xg = x.reshape(x.shape[0], groups, -1)
    rms = torch.sqrt(torch.mean(xg * xg, dim=-1) + eps)
    return _per_group_to_channels(rms, x)
