"""Layouts the fused kernels accept (contiguous or channels_last(_3d)) and shape helpers."""
import torch
from torch import Tensor


def memory_format(x: Tensor) -> torch.memory_format:
    """The format ``x`` is dense in: channels_last(_3d) when it is that and not plainly contiguous.

    Tensors dense in both (C == 1, or all spatial sizes 1) count as contiguous.
    """
    if not x.is_contiguous():
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            return torch.channels_last
        if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
            return torch.channels_last_3d
    return torch.contiguous_format


def dense_like(t: Tensor, x: Tensor) -> Tensor:
    """``t`` laid out like ``x`` (a copy only when it is not already)."""
    return t.contiguous(memory_format=memory_format(x))


def broadcast(t: Tensor, x: Tensor) -> Tensor:
    """A (C,) or (N, C) tensor viewed to broadcast against x (N, C, *spatial)."""
    return t.view(*([1] * (2 - t.dim())), *t.shape, *([1] * (x.dim() - 2)))
