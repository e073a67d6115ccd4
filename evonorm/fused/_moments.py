"""Chan's merge of per-(sample, channel) moments into group and batch moments (torch, tiny tensors).

Every backend reduces per (sample, channel) over the spatial axes first; these combine the (N, C)
results, all of the same count, into the statistics a variant needs. With equal counts Chan's
parallel formula (``evonorm._stats.merge_moments``) reduces to: mean = mean of means; var = mean of
(var + (mean_k - mean)^2). Biased throughout.
"""
from typing import Tuple

from torch import Tensor


def merge_groups(mean: Tensor, var: Tensor, groups: int) -> Tuple[Tensor, Tensor]:
    """(N, C) instance moments -> (N, G) moments of each group of C/G consecutive channels."""
    n = mean.shape[0]
    mean = mean.view(n, groups, -1)
    merged = mean.mean(2)
    return merged, (var.view(n, groups, -1) + (mean - merged.unsqueeze(2)).square()).mean(2)


def merge_batch(mean: Tensor, var: Tensor) -> Tuple[Tensor, Tensor]:
    """(N, C) instance moments -> (C,) moments over the whole batch."""
    merged = mean.mean(0)
    return merged, (var + (mean - merged).square()).mean(0)
