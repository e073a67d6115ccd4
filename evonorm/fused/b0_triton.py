r"""EvoNorm-B0 in Triton: the kernels behind ``evonorm::b0_triton``.

Math and backward derivation: :mod:`evonorm.fused.b0_op`. Forward: the moments kernel of
:mod:`._triton_common` gives instance moments per (sample, channel); Chan's merge over samples
gives the batch variance (training) in torch; one elementwise kernel writes ``y``. Backward: one
reduction kernel over ``(x, grad_y)`` for the five per-(sample, channel) sums, the (N, C) algebra
in torch, one elementwise kernel for ``grad_x``. Both dense layouts are read in place; statistics
are float32 for fp16/bf16/fp32 inputs. The running-variance update stays in the layer (an in-place
op on its buffer, visible to autograd and ``torch.compile``), from the returned batch variance.

Performance note: this session had no GPU, so the kernels are verified only under
``TRITON_INTERPRET=1`` (tests/evonorm/test_triton_interpret.py) and have never been timed or tuned;
tile sizes are first guesses. Traffic is 2 reads + 1 write in forward, 4 reads + 1 write in backward.
"""
import torch
import triton
import triton.language as tl

from . import b0_op
from ._layout import dense_like, memory_format
from ._triton_common import (channel, elementwise_tile, instance_moments, load_f32, load_grad_block, plan,
                             split_tile)


@triton.jit
def _inverse_denominator(x, left, v, inst_std):
    """1 / max(left, v x + inst_std), ties to left; also whether the right branch won."""
    right = x * v + inst_std
    take_right = left < right
    return 1.0 / tl.where(take_right, right, left), take_right


@triton.jit
def _b0_fwd_kernel(
    x_ptr,  # (N, C, P) input; (n, c, p) at n*C*P + c*stride_c + p*stride_p
    y_ptr,  # (N, C, P) output, same dtype and layout as x
    left_ptr,  # (C,) float32: sqrt(batch or running variance + eps)
    inst_std_ptr,  # (N, C) float32: sqrt(instance variance + eps)
    v_ptr, weight_ptr, bias_ptr,  # (C,) float32 each
    C, P, stride_c, stride_p,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    nc, cs, c_mask, mask, offsets = elementwise_tile(C, P, stride_c, stride_p, BLOCK_C, BLOCK_P)
    x = load_f32(x_ptr, offsets, mask)
    left = tl.load(left_ptr + cs, mask=c_mask, other=1.0)[:, None]
    inst_std = tl.load(inst_std_ptr + nc, mask=c_mask, other=1.0)[:, None]
    v = tl.load(v_ptr + cs, mask=c_mask, other=0.0)[:, None]
    inv_d, _ = _inverse_denominator(x, left, v, inst_std)
    weight = tl.load(weight_ptr + cs, mask=c_mask, other=0.0)[:, None]
    bias = tl.load(bias_ptr + cs, mask=c_mask, other=0.0)[:, None]
    y = x * inv_d * weight + bias
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _b0_bwd_reduce_kernel(
    grad_y_ptr,  # (N, C, P) upstream gradient, layout of x
    x_ptr,  # (N, C, P) input
    left_ptr,  # (C,) float32
    inst_std_ptr,  # (N, C) float32
    v_ptr, weight_ptr,  # (C,) float32 each
    sums_ptr,  # (5, SPLIT, N, C) float32 out: sums of g, g*x/d, rho*q, rho*q*x, (1-rho)*q
    N, C, P, stride_c, stride_p, split_len, SPLIT,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    n, split, cs, c_mask, base, p_start, p_end = split_tile(C, P, split_len, BLOCK_C)
    left = tl.load(left_ptr + cs, mask=c_mask, other=1.0)[:, None]
    inst_std = tl.load(inst_std_ptr + n * C + cs, mask=c_mask, other=1.0)[:, None]
    v = tl.load(v_ptr + cs, mask=c_mask, other=0.0)[:, None]
    weight = tl.load(weight_ptr + cs, mask=c_mask, other=0.0)[:, None]
    acc_g = tl.zeros([BLOCK_C], tl.float32)
    acc_z = tl.zeros([BLOCK_C], tl.float32)
    acc_r = tl.zeros([BLOCK_C], tl.float32)
    acc_rx = tl.zeros([BLOCK_C], tl.float32)
    acc_l = tl.zeros([BLOCK_C], tl.float32)
    for p0 in range(p_start, p_end, BLOCK_P):
        mask, x, g = load_grad_block(x_ptr, grad_y_ptr, base, cs, c_mask, p0, p_end, stride_c, stride_p, BLOCK_P)
        inv_d, take_right = _inverse_denominator(x, left, v, inst_std)
        inv_d = tl.where(mask, inv_d, 0.0)  # masked lanes could divide by a zero d (eps = 0)
        z = x * inv_d
        q = g * weight * z * inv_d
        q_right = tl.where(take_right, q, 0.0)
        acc_g += tl.sum(g, axis=1)
        acc_z += tl.sum(g * z, axis=1)
        acc_r += tl.sum(q_right, axis=1)
        acc_rx += tl.sum(q_right * x, axis=1)
        acc_l += tl.sum(q - q_right, axis=1)
    stride = SPLIT * N * C
    out = sums_ptr + (split * N + n) * C + cs
    tl.store(out, acc_g, mask=c_mask)
    tl.store(out + stride, acc_z, mask=c_mask)
    tl.store(out + 2 * stride, acc_r, mask=c_mask)
    tl.store(out + 3 * stride, acc_rx, mask=c_mask)
    tl.store(out + 4 * stride, acc_l, mask=c_mask)


@triton.jit
def _b0_bwd_dx_kernel(
    grad_y_ptr,  # (N, C, P) upstream gradient, layout of x
    x_ptr,  # (N, C, P) input
    grad_x_ptr,  # (N, C, P) output, dtype and layout of x
    left_ptr,  # (C,) float32
    inst_std_ptr,  # (N, C) float32
    v_ptr, weight_ptr,  # (C,) float32 each
    k_inst_ptr, inst_mean_ptr,  # (N, C) float32: instance-std slope and mean
    k_batch_ptr, batch_mean_ptr,  # (C,) float32: batch-std slope (0 in eval) and mean
    C, P, stride_c, stride_p,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    nc, cs, c_mask, mask, offsets = elementwise_tile(C, P, stride_c, stride_p, BLOCK_C, BLOCK_P)
    x = load_f32(x_ptr, offsets, mask)
    g = load_f32(grad_y_ptr, offsets, mask)
    left = tl.load(left_ptr + cs, mask=c_mask, other=1.0)[:, None]
    inst_std = tl.load(inst_std_ptr + nc, mask=c_mask, other=1.0)[:, None]
    v = tl.load(v_ptr + cs, mask=c_mask, other=0.0)[:, None]
    weight = tl.load(weight_ptr + cs, mask=c_mask, other=0.0)[:, None]
    k_inst = tl.load(k_inst_ptr + nc, mask=c_mask, other=0.0)[:, None]
    inst_mean = tl.load(inst_mean_ptr + nc, mask=c_mask, other=0.0)[:, None]
    k_batch = tl.load(k_batch_ptr + cs, mask=c_mask, other=0.0)[:, None]
    batch_mean = tl.load(batch_mean_ptr + cs, mask=c_mask, other=0.0)[:, None]
    inv_d, take_right = _inverse_denominator(x, left, v, inst_std)
    gw = g * weight * inv_d
    q_right = tl.where(take_right, gw * x * inv_d, 0.0)
    # k * (x - mean) per statistic: k * x + shift would cancel when d is tiny
    dx = gw - q_right * v + k_inst * (x - inst_mean) + k_batch * (x - batch_mean)
    tl.store(grad_x_ptr + offsets, dx.to(grad_x_ptr.dtype.element_ty), mask=mask)


def evonorm_b0_fwd(x, weight, bias, v, running_var, eps: float):
    """Launcher: (y, inst_mean, inst_std, batch_mean, batch_var) as in :mod:`.b0_op`."""
    x = x.contiguous(memory_format=memory_format(x))
    geo = plan(x)
    inst_mean, inst_var = instance_moments(x, geo)
    inst_std, batch_mean, batch_var, left = b0_op.forward_coefficients(inst_mean, inst_var,
                                                                       running_var, eps)
    y = torch.empty_like(x, memory_format=memory_format(x))
    _b0_fwd_kernel[geo.elementwise_grid](x, y, left, inst_std, channel(v), channel(weight),
                                         channel(bias), geo.c, geo.p, geo.stride_c, geo.stride_p,
                                         BLOCK_C=geo.block_c, BLOCK_P=geo.block_p)
    return y, inst_mean, inst_std, batch_mean, batch_var


def evonorm_b0_bwd(grad_y, x, weight, v, inst_mean, inst_std, batch_mean, batch_var,
                   training: bool, eps: float):
    """Launcher: (grad_x, grad_weight, grad_bias, grad_v) as in :mod:`.b0_op`."""
    x = x.contiguous(memory_format=memory_format(x))
    grad_y = dense_like(grad_y, x)
    geo = plan(x)
    left = torch.sqrt(batch_var + eps)
    v32, w32 = channel(v), channel(weight)
    sums = torch.empty((5, geo.splits, geo.n, geo.c), device=x.device, dtype=torch.float32)
    _b0_bwd_reduce_kernel[geo.grid](grad_y, x, left, inst_std, v32, w32, sums, geo.n, geo.c,
                                    geo.p, geo.stride_c, geo.stride_p, geo.split_len, geo.splits,
                                    BLOCK_C=geo.block_c, BLOCK_P=geo.block_p)
    grad_w, grad_b, grad_v, k_inst, k_batch = b0_op.backward_coefficients(
        sums.sum(1).unbind(0), weight, v, inst_std, left, training, geo.p)  # fixed-order merge
    grad_x = torch.empty_like(x, memory_format=memory_format(x))
    _b0_bwd_dx_kernel[geo.elementwise_grid](grad_y, x, grad_x, left, inst_std, v32, w32, k_inst,
                                            inst_mean, k_batch, batch_mean, geo.c, geo.p,
                                            geo.stride_c, geo.stride_p,
                                            BLOCK_C=geo.block_c, BLOCK_P=geo.block_p)
    return grad_x, grad_w, grad_b, grad_v


evonorm_b0_triton = b0_op.define("triton", evonorm_b0_fwd, evonorm_b0_bwd)
