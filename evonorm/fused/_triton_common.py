"""What the Triton kernels of every variant share: the tiling plan and the moments kernel.

Every kernel sees its input as (N, C, P) with P the flattened spatial axes, dense in one of two
layouts: NC(P) (``stride_c = P``, ``stride_p = 1``) or channels_last (``stride_c = 1``,
``stride_p = C``); sample n starts at ``n * C * P``. A program owns a tile of ``BLOCK_C`` channels
by ``BLOCK_P`` positions of one sample, wide along whichever axis is contiguous so loads coalesce.

Reductions are deterministic two-stage reductions without atomics: each program of a (sample,
channel block, split) grid reduces its own range of P into a (SPLIT, N, C) buffer, and torch
combines the splits in a fixed order. ``SPLIT`` grows until there are about four programs per SM,
so a small batch (few samples, or few groups: N*G small) still fills the GPU. Moments are merged
with Chan's parallel formula (per tile inside a program, per split afterwards), in float32.
"""
from typing import NamedTuple, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .._stats import merge_moments
from ._layout import memory_format

_TILE = 2048  # elements per tile (BLOCK_C * BLOCK_P)
_PROGRAMS_WITHOUT_GPU = 16  # the interpreter has no SMs; still exercise several splits


class Plan(NamedTuple):
    """Launch geometry for an (N, C, P) tensor in one of the two dense layouts."""
    n: int
    c: int
    p: int
    stride_c: int
    stride_p: int
    block_c: int
    block_p: int
    split_len: int  # positions per split: a multiple of block_p
    splits: int

    @property
    def grid(self) -> Tuple[int, int]:
        """(N * channel blocks, splits) for reductions; elementwise kernels use p_blocks."""
        return self.n * triton.cdiv(self.c, self.block_c), self.splits

    @property
    def elementwise_grid(self) -> Tuple[int, int]:
        return self.n * triton.cdiv(self.c, self.block_c), triton.cdiv(self.p, self.block_p)

    def split_counts(self, device) -> Tensor:
        """Positions in each split, float32 (SPLIT,)."""
        starts = torch.arange(self.splits, device=device, dtype=torch.float32) * self.split_len
        return (self.p - starts).clamp(max=self.split_len)


def plan(x: Tensor) -> Plan:
    n, c = x.shape[:2]
    p = x.numel() // max(n * c, 1)
    if memory_format(x) == torch.contiguous_format:
        stride_c, stride_p = p, 1
        block_p = min(triton.next_power_of_2(p), _TILE)
        block_c = min(triton.next_power_of_2(c), max(_TILE // block_p, 1))
    else:
        stride_c, stride_p = 1, c
        block_c = min(triton.next_power_of_2(c), 64)
        block_p = min(triton.next_power_of_2(p), max(_TILE // block_c, 1))
    programs = n * triton.cdiv(c, block_c)
    target = (4 * torch.cuda.get_device_properties(x.device).multi_processor_count
              if x.device.type == "cuda" else _PROGRAMS_WITHOUT_GPU)
    p_blocks = triton.cdiv(p, block_p)
    want = max(1, min(p_blocks, triton.cdiv(target, programs)))
    split_len = triton.cdiv(p_blocks, want) * block_p
    return Plan(n, c, p, stride_c, stride_p, block_c, block_p, split_len, triton.cdiv(p, split_len))

@triton.jit
def elementwise_tile(C, P, stride_c, stride_p, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """This program's tile of an element-wise pass over (N, C, P), grid (N * channel blocks, position
    blocks): the (sample, channel) indices into an (N, C) buffer, the channels and their mask, the tile's
    mask and its element offsets."""
    c_blocks = tl.cdiv(C, BLOCK_C)
    n = tl.program_id(0) // c_blocks
    cs = (tl.program_id(0) % c_blocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    ps = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    c_mask = cs < C
    mask = c_mask[:, None] & (ps < P)[None, :]
    offsets = n.to(tl.int64) * C * P + cs[:, None] * stride_c + ps[None, :] * stride_p
    return n * C + cs, cs, c_mask, mask, offsets

@triton.jit
def split_tile(C, P, split_len, BLOCK_C: tl.constexpr):
    """This program's share of a two-stage reduction over (N, C, P), grid (N * channel blocks, splits):
    the sample, the split, its channels and their mask, the sample's element offset, and the split's
    position range [p_start, p_end)."""
    c_blocks = tl.cdiv(C, BLOCK_C)
    n = tl.program_id(0) // c_blocks
    split = tl.program_id(1)
    cs = (tl.program_id(0) % c_blocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    p_start = split * split_len
    return n, split, cs, cs < C, n.to(tl.int64) * C * P, p_start, tl.minimum(p_start + split_len, P)


@triton.jit
def split_block(base, cs, c_mask, p0, p_end, stride_c, stride_p, BLOCK_P: tl.constexpr):
    """The block of a split's positions that starts at ``p0``: its mask and its element offsets."""
    ps = p0 + tl.arange(0, BLOCK_P)
    return c_mask[:, None] & (ps < p_end)[None, :], base + cs[:, None] * stride_c + ps[None, :] * stride_p


@triton.jit
def load_f32(ptr, offsets, mask):
    """A tile of any float dtype, in float32 (masked lanes read 0)."""
    return tl.load(ptr + offsets, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def load_grad_block(x_ptr, grad_y_ptr, base, cs, c_mask, p0, p_end, stride_c, stride_p, BLOCK_P: tl.constexpr):
    """For a backward reduction: the block's mask, and x and the upstream gradient over it in float32."""
    mask, offsets = split_block(base, cs, c_mask, p0, p_end, stride_c, stride_p, BLOCK_P)
    return mask, load_f32(x_ptr, offsets, mask), load_f32(grad_y_ptr, offsets, mask)


@triton.jit
def _moments_kernel(
    x_ptr,  # (N, C, P) input, any float dtype; element (n, c, p) at n*C*P + c*stride_c + p*stride_p
    mean_ptr,  # (SPLIT, N, C) float32 out: mean over the split's positions
    m2_ptr,  # (SPLIT, N, C) float32 out: sum of squared deviations from that mean
    N, C, P, stride_c, stride_p, split_len,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    n, split, cs, c_mask, base, p_start, p_end = split_tile(C, P, split_len, BLOCK_C)
    mean = tl.zeros([BLOCK_C], tl.float32)
    m2 = tl.zeros([BLOCK_C], tl.float32)
    for p0 in range(p_start, p_end, BLOCK_P):
        mask, offsets = split_block(base, cs, c_mask, p0, p_end, stride_c, stride_p, BLOCK_P)
        x = load_f32(x_ptr, offsets, mask)
        count = (p0 - p_start).to(tl.float32)  # positions merged so far
        k = tl.minimum(p_end - p0, BLOCK_P).to(tl.float32)  # positions in this block
        tile_mean = tl.sum(x, axis=1) / k
        dev = tl.where(mask, x - tile_mean[:, None], 0.0)
        total = count + k
        delta = tile_mean - mean  # Chan: merge (count, mean, m2) with the tile's moments
        mean += delta * (k / total)
        m2 += tl.sum(dev * dev, axis=1) + delta * delta * (count * k / total)
    out = (split * N + n) * C + cs
    tl.store(mean_ptr + out, mean, mask=c_mask)
    tl.store(m2_ptr + out, m2, mask=c_mask)


def instance_moments(x: Tensor, geometry: Plan) -> Tuple[Tensor, Tensor]:
    """Mean and biased variance per (sample, channel) over P, float32 (N, C) each."""
    n, c = geometry.n, geometry.c
    mean = torch.empty((geometry.splits, n, c), device=x.device, dtype=torch.float32)
    m2 = torch.empty_like(mean)
    _moments_kernel[geometry.grid](x, mean, m2, n, c, geometry.p, geometry.stride_c,
                                   geometry.stride_p, geometry.split_len,
                                   BLOCK_C=geometry.block_c, BLOCK_P=geometry.block_p)
    return merge_moments(mean, m2, geometry.split_counts(x.device).view(-1, 1, 1), 0)


def channel(t: Tensor) -> Tensor:
    """A (C,) parameter as contiguous float32 for the kernels."""
    return t.detach().to(torch.float32).contiguous()
