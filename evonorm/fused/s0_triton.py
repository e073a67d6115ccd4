r"""EvoNorm-S0 (and S1/S2) in Triton: the kernels behind ``evonorm::s0_triton``.

Math and backward derivation: :mod:`evonorm.fused.s0_op`. Forward: the moments kernel of
:mod:`._triton_common` (per sample and channel, split along space, merged by Chan's formula) ->
(N, G) statistics in torch -> one elementwise kernel. Backward: one reduction kernel over
``(x, grad_y)`` for the three per-(sample, channel) sums, the (N, C) algebra in torch, one
elementwise kernel for ``grad_x``. The sigmoid is recomputed, never stored. Both dense layouts
(NCHW, channels_last) are read in place; statistics are float32 for fp16/bf16/fp32 inputs.

Performance note: this session had no GPU, so the kernels are verified only under
``TRITON_INTERPRET=1`` (tests/evonorm/test_triton_interpret.py) and have never been timed or tuned;
tile sizes are first guesses (2048 elements, wide along the contiguous axis). Traffic is 2 reads +
1 write in forward and 4 reads + 1 write in backward, against 3 + 2 and 4 + 2 for BatchNorm + ReLU.
"""
import torch
import triton
import triton.language as tl

from . import s0_op
from ._layout import dense_like, memory_format
from ._triton_common import (channel, elementwise_tile, instance_moments, load_f32, load_grad_block, plan,
                             split_tile)


@triton.jit
def _sigmoid(z):
    return 1.0 / (1.0 + tl.exp(-z))


@triton.jit
def _s0_fwd_kernel(
    x_ptr,  # (N, C, P) input; (n, c, p) at n*C*P + c*stride_c + p*stride_p
    y_ptr,  # (N, C, P) output, same dtype and layout as x
    scale_ptr,  # (N, C) float32: weight * rstd of the sample's group
    bias_ptr,  # (C,) float32
    v_ptr,  # (C,) float32, read only when HAS_V
    C, P, stride_c, stride_p,
    HAS_V: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    nc, cs, c_mask, mask, offsets = elementwise_tile(C, P, stride_c, stride_p, BLOCK_C, BLOCK_P)
    x = load_f32(x_ptr, offsets, mask)
    scale = tl.load(scale_ptr + nc, mask=c_mask, other=0.0)
    bias = tl.load(bias_ptr + cs, mask=c_mask, other=0.0)
    arg = x
    if HAS_V:
        arg = x * tl.load(v_ptr + cs, mask=c_mask, other=0.0)[:, None]
    y = x * _sigmoid(arg) * scale[:, None] + bias[:, None]
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _s0_bwd_reduce_kernel(
    grad_y_ptr,  # (N, C, P) upstream gradient, layout of x
    x_ptr,  # (N, C, P) input
    v_ptr,  # (C,) float32, read only when HAS_V
    gh_ptr,  # (SPLIT, N, C) float32 out: sum of grad_y * x * s
    gv_ptr,  # (SPLIT, N, C) float32 out: sum of grad_y * x^2 * s(1-s) (written when HAS_V)
    g_ptr,  # (SPLIT, N, C) float32 out: sum of grad_y
    N, C, P, stride_c, stride_p, split_len,
    HAS_V: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    n, split, cs, c_mask, base, p_start, p_end = split_tile(C, P, split_len, BLOCK_C)
    v = tl.zeros([BLOCK_C], tl.float32) + 1.0
    if HAS_V:
        v = tl.load(v_ptr + cs, mask=c_mask, other=0.0)
    acc_h = tl.zeros([BLOCK_C], tl.float32)
    acc_v = tl.zeros([BLOCK_C], tl.float32)
    acc_g = tl.zeros([BLOCK_C], tl.float32)
    for p0 in range(p_start, p_end, BLOCK_P):
        mask, x, g = load_grad_block(x_ptr, grad_y_ptr, base, cs, c_mask, p0, p_end, stride_c, stride_p, BLOCK_P)
        s = _sigmoid(x * v[:, None])
        gx = g * x
        acc_h += tl.sum(gx * s, axis=1)
        acc_g += tl.sum(g, axis=1)
        if HAS_V:
            acc_v += tl.sum(gx * x * s * (1.0 - s), axis=1)
    out = (split * N + n) * C + cs
    tl.store(gh_ptr + out, acc_h, mask=c_mask)
    tl.store(g_ptr + out, acc_g, mask=c_mask)
    if HAS_V:
        tl.store(gv_ptr + out, acc_v, mask=c_mask)


@triton.jit
def _s0_bwd_dx_kernel(
    grad_y_ptr,  # (N, C, P) upstream gradient, layout of x
    x_ptr,  # (N, C, P) input
    grad_x_ptr,  # (N, C, P) output, dtype and layout of x
    a_ptr,  # (N, C) float32: weight * rstd
    k_ptr,  # (N, C) float32: -A * rstd^3 / M of the sample's group
    mu_ptr,  # (N, C) float32: the group mean (0 when not centered)
    v_ptr,  # (C,) float32, read only when HAS_V
    C, P, stride_c, stride_p,
    HAS_V: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    nc, cs, c_mask, mask, offsets = elementwise_tile(C, P, stride_c, stride_p, BLOCK_C, BLOCK_P)
    x = load_f32(x_ptr, offsets, mask)
    g = load_f32(grad_y_ptr, offsets, mask)
    v = tl.zeros([BLOCK_C], tl.float32) + 1.0
    if HAS_V:
        v = tl.load(v_ptr + cs, mask=c_mask, other=0.0)
    a = tl.load(a_ptr + nc, mask=c_mask, other=0.0)[:, None]
    k = tl.load(k_ptr + nc, mask=c_mask, other=0.0)[:, None]
    mu = tl.load(mu_ptr + nc, mask=c_mask, other=0.0)[:, None]
    s = _sigmoid(x * v[:, None])
    dx = g * a * (s + v[:, None] * x * s * (1.0 - s)) + k * (x - mu)
    tl.store(grad_x_ptr + offsets, dx.to(grad_x_ptr.dtype.element_ty), mask=mask)


def evonorm_s0_fwd(x, weight, bias, v, groups: int, eps: float, centered: bool):
    """Launcher: (y, mean, rstd) as in :mod:`.s0_op`."""
    x = x.contiguous(memory_format=memory_format(x))
    geo = plan(x)
    mean, rstd, scale = s0_op.forward_coefficients(*instance_moments(x, geo), weight, groups, eps,
                                                   centered)
    y = torch.empty_like(x, memory_format=memory_format(x))
    v32 = channel(v) if v is not None else scale
    _s0_fwd_kernel[geo.elementwise_grid](x, y, scale, channel(bias), v32, geo.c, geo.p,
                                         geo.stride_c, geo.stride_p, HAS_V=v is not None,
                                         BLOCK_C=geo.block_c, BLOCK_P=geo.block_p)
    return y, mean, rstd


def evonorm_s0_bwd(grad_y, x, weight, v, mean, rstd, groups: int, centered: bool):
    """Launcher: (grad_x, grad_weight, grad_bias, grad_v) as in :mod:`.s0_op`."""
    x = x.contiguous(memory_format=memory_format(x))
    grad_y = dense_like(grad_y, x)
    geo = plan(x)
    sums = torch.empty((3, geo.splits, geo.n, geo.c), device=x.device, dtype=torch.float32)
    v32 = channel(v) if v is not None else rstd
    _s0_bwd_reduce_kernel[geo.grid](grad_y, x, v32, sums[0], sums[1], sums[2], geo.n, geo.c,
                                    geo.p, geo.stride_c, geo.stride_p, geo.split_len,
                                    HAS_V=v is not None, BLOCK_C=geo.block_c, BLOCK_P=geo.block_p)
    sum_gh, sum_gv, sum_g = sums.sum(1)  # fixed-order merge of the splits: deterministic
    grad_w, grad_b, grad_v, a, k, mu = s0_op.backward_coefficients(
        sum_gh, sum_gv if v is not None else None, sum_g, weight, v, mean, rstd,
        geo.c // groups * geo.p)
    grad_x = torch.empty_like(x, memory_format=memory_format(x))
    _s0_bwd_dx_kernel[geo.elementwise_grid](grad_y, x, grad_x, a, k, mu, v32, geo.c, geo.p,
                                            geo.stride_c, geo.stride_p, HAS_V=v is not None,
                                            BLOCK_C=geo.block_c, BLOCK_P=geo.block_p)
    return grad_x, grad_w, grad_b, grad_v


evonorm_s0_triton = s0_op.define("triton", evonorm_s0_fwd, evonorm_s0_bwd)
