"""Views of (N, C, *spatial) tensors in which the CPU kernels' per-(sample, channel) sums read
memory in order.

* contiguous ``x`` becomes (N, C, P), P the spatial size: each sum runs along a contiguous row.
* channels_last(_3d) ``x`` becomes (N, R, K, C) with R * K = P: channels are the contiguous axis, so
  inductor vectorises along C and walks the spatial axis, one C-long row per step. Walked over all
  of P at once, every step of a C-vector is a cache miss into a tile of P * C elements (and, C
  times 4 bytes being a power of two, the rows compete for a few cache sets). Sums over K-row tiles
  of about ``TILE_BYTES`` (:func:`chunk`), then over the R partial sums, read each row from memory
  once. Walking the strided axis still costs against the NCHW sums, whose rows the prefetcher
  streams, so float32 (in both layouts) goes to the memory-order C++ loops of :mod:`._native` where
  they build; these views serve the other dtypes and the fallback.

The math functions take such views (:func:`rows`), reduce with :func:`channel_sum` and
:func:`moments`, broadcast (N, C) and (C,) values with :func:`per_sample` and :func:`per_channel`,
and give results back in ``x``'s shape and layout with :func:`unrows`.
"""
import math
from typing import Tuple

import torch
from torch import Tensor

from ._layout import memory_format

# One tensor's rows per partial sum. Measured on sums of (x, grad_y) over C = 64-256: 16 KiB tiles
# (K = 14 rows at C = 256) run 1.3x slower than 32-64 KiB ones, which fit L2 if not L1.
TILE_BYTES = 32 * 1024
MIN_ROWS = 8  # fewer rows per partial sum writes too many partials: sum all P at once instead


def chunk(spatial: int, channels: int) -> int:
    """K, the rows per partial sum of a channels_last tensor: the largest divisor of ``spatial``
    whose K rows of float32 fit ``TILE_BYTES``; ``spatial`` itself when all fit or none is big enough."""
    limit = TILE_BYTES // (4 * max(channels, 1))
    if spatial <= limit:
        return max(spatial, 1)
    for k in range(limit, MIN_ROWS - 1, -1):
        if spatial % k == 0:
            return k
    return max(spatial, 1)


def rows(t: Tensor, like: Tensor = None) -> Tensor:
    """``t`` (N, C, *spatial) as (N, C, P), or as (N, R, K, C) when ``like`` (default ``t``) is
    channels_last. A view when ``t`` has ``like``'s layout, else a copy (always correct)."""
    like = t if like is None else like
    n, c = t.shape[:2]
    spatial = math.prod(t.shape[2:])
    if memory_format(like) == torch.contiguous_format:
        return t.reshape(n, c, spatial)
    k = chunk(spatial, c)
    return t.movedim(1, -1).reshape(n, spatial // k, k, c)


def channels_last(r: Tensor) -> bool:
    return r.dim() == 4


def channel_sum(r: Tensor) -> Tensor:
    """(N, C) sums of a :func:`rows` view over its spatial positions."""
    return r.sum(2).sum(1) if channels_last(r) else r.sum(2)


def moments(r: Tensor) -> Tuple[Tensor, Tensor]:
    """(N, C) mean and biased variance of a :func:`rows` view over its spatial positions.

    channels_last: the K-row chunks' moments merged as in :mod:`._moments` (equal counts), so no
    sum of squares cancels. (A one-pass shifted sum of squares runs 1.4x faster but loses about
    four bits on rows whose first sample sits far from the mean.)
    """
    var, mean = torch.var_mean(r, dim=2, correction=0)
    if not channels_last(r):
        return mean, var
    merged = mean.mean(1)
    return merged, (var + (mean - merged.unsqueeze(1)).square()).mean(1)


def per_sample(s: Tensor, r: Tensor) -> Tensor:
    """An (N, C) tensor viewed to broadcast against the :func:`rows` view ``r``."""
    return s[:, None, None, :] if channels_last(r) else s[:, :, None]


def per_channel(s: Tensor, r: Tensor) -> Tensor:
    """A (C,) tensor viewed to broadcast against the :func:`rows` view ``r``."""
    return s.view(1, 1, 1, -1) if channels_last(r) else s.view(1, -1, 1)


def unrows(r: Tensor, x: Tensor) -> Tensor:
    """A :func:`rows` view's values in ``x``'s shape (and layout, when ``r`` is a view's result)."""
    if not channels_last(r):
        return r.reshape(x.shape)
    return r.reshape(x.movedim(1, -1).shape).movedim(-1, 1)
