r"""Reference EvoNorm layers, exact to the authors' TensorFlow code.

Liu, Brock, Simonyan, Le. "Evolving Normalization-Activation Layers", NeurIPS
2020, https://arxiv.org/abs/2004.02967. B0 and S0 follow ``evonorm`` in
tensorflow/tpu ``models/official/resnet/resnet_model.py``: biased variances
everywhere (running variance included), ``eps`` inside every square root, the
group count falling back to the largest divisor of C. B1, B2, S1 and S2 use the
formulas of timm's ``timm/layers/evo_norm.py`` with the same conventions.
Parameter and buffer names follow timm, so its state dicts load.

These are the readable ground truth the compiled graphs and fused kernels are
tested against. Performance: plain eager PyTorch, several elementwise passes
and a float32 copy of the input; slower and hungrier than ``nn.BatchNorm2d``
followed by ReLU.

By default (``impl="fused"``) B0, S0, S1 and S2 run the custom ops of
:mod:`evonorm.fused` instead: one autograd node with an analytic backward that
saves only the input and per-group/per-channel statistics (inductor-compiled on
CPU, Triton on CUDA). ``impl="reference"`` keeps the code below. The layers use
the reference anyway where the fused ops cannot serve: ``apply_act=False``
(a plain affine), B1/B2 (no fused kernels), functorch transforms (``vmap``,
``torch.func.grad``), and subclasses that override the math hooks
(``_normalize_act``, ``_gate``, ``_group_stat``, ``_instance_term``,
``_batch_var``; e.g. the synchronised batch variance of ``evonorm.distributed``), and exporters
(``torch.onnx.export``, ``torch.export``, ``torch.jit.script`` and ``trace``), so a model built with the
default layers exports as it is. The fused backward is not differentiable again: build with
``impl="reference"`` for double backward.
"""
from typing import List, Optional

import torch
from torch import Tensor, nn

from primitives.stats import resolve_groups

from . import _stats, fused

__all__ = [
    "resolve_groups",
    "EvoNorm1dB0", "EvoNorm1dB1", "EvoNorm1dB2", "EvoNorm1dS0", "EvoNorm1dS1", "EvoNorm1dS2",
    "EvoNorm2dB0", "EvoNorm2dB1", "EvoNorm2dB2", "EvoNorm2dS0", "EvoNorm2dS1", "EvoNorm2dS2",
    "EvoNorm3dB0", "EvoNorm3dB1", "EvoNorm3dB2", "EvoNorm3dS0", "EvoNorm3dS1", "EvoNorm3dS2",
]


IMPLS = ("fused", "reference")
# the methods holding a variant's math: a subclass overriding any of them keeps the reference path
_MATH_HOOKS = ("_normalize_act", "_gate", "_group_stat", "_instance_term", "_batch_var")


def _fused_variant(cls: type) -> type:
    """Class decorator: ``evonorm.fused`` computes this variant (``_fused_forward``)."""
    cls._fused_math = cls
    return cls


class _EvoNormBase(nn.Module):
    """State and checks shared by every variant: affine ``weight``/``bias``,
    the optional ``v``, the input check, the float32 compute path and the
    choice between the fused kernels and the reference code.

    Subclasses set ``_has_v`` and implement ``_normalize_act`` (and, when
    decorated with ``_fused_variant``, ``_fused_forward``); the public classes
    are made by ``_specialise``, which fixes ``_spatial_dims``.
    """

    _spatial_dims: int = -1  # set by _specialise: 1, 2 or 3
    _has_v: bool = False  # B0 and S0 learn a per-channel v
    _fused_math: Optional[type] = None  # set by _fused_variant
    _name: str = "_EvoNormBase"  # set by _specialise; TorchScript has no type(self).__name__
    __constants__ = ["_spatial_dims", "_name", "apply_act"]  # apply_act: prunes dead branches

    def __init__(self, num_features: int, apply_act: bool, eps: float,
                 device=None, dtype=None, impl: str = "fused") -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        if self._spatial_dims < 1:
            raise TypeError(f"{type(self).__name__} is abstract; use its 1d/2d/3d forms")
        if num_features < 1:
            raise ValueError(f"num_features must be a positive integer, got {num_features}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        self.impl = impl
        self.num_features = num_features
        self.apply_act = apply_act
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(num_features, **factory_kwargs))
        self.bias = nn.Parameter(torch.empty(num_features, **factory_kwargs))
        if apply_act and self._has_v:
            self.v = nn.Parameter(torch.empty(num_features, **factory_kwargs))
        else:
            self.register_parameter("v", None)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        if self.v is not None:
            nn.init.ones_(self.v)

    def _check_input_dim(self, x: Tensor) -> None:
        expected = 2 + self._spatial_dims
        if x.dim() != expected:
            raise ValueError(
                f"{self._name} expected {expected}D input (N, C, {self._spatial_dims} "
                f"spatial dims), got {x.dim()}D input of shape {list(x.shape)}")
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{self._name} expected {self.num_features} channels (dim 1), "
                f"got {x.shape[1]} in input of shape {list(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{self._name} expected a floating point input, got {x.dtype}")

    def _channel_shape(self) -> List[int]:
        return [1, self.num_features] + [1] * self._spatial_dims

    def _param(self, p: Tensor, dtype: torch.dtype) -> Tensor:
        return p.to(dtype).view(self._channel_shape())

    def _normalize_act(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _fused_forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _uses_fused(self, x: Tensor) -> bool:
        math = self._fused_math
        return (self.impl == "fused" and self.apply_act and math is not None
                and all(getattr(type(self), hook, None) is getattr(math, hook, None)
                        for hook in _MATH_HOOKS)
                and fused.can_serve(x))

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        if not torch.jit.is_scripting():  # TorchScript compiles the reference path only
            if not _exporting() and self._uses_fused(x):
                return self._fused_forward(x)
        # fp16 sums over N*H*W elements lose digits and bf16 keeps 8 bits, so
        # everything runs in float32 (float64 stays float64) and is cast back.
        compute_dtype = _stats.stat_dtype(x.dtype)
        y = x.to(compute_dtype)
        if self.apply_act:
            y = self._normalize_act(y)
        y = y * self._param(self.weight, compute_dtype) + self._param(self.bias, compute_dtype)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, apply_act={self.apply_act}, eps={self.eps}, impl={self.impl}"


def _exporting() -> bool:
    """Whether an exporter is recording the model (ONNX, ``torch.export``, TorchScript tracing): the fused
    custom ops have no ONNX or TorchScript form, so exports record the reference path, which computes the
    same function. ``torch.compile`` keeps the fused ops."""
    return torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting() or torch.jit.is_tracing()


class _EvoNormBatch(_EvoNormBase):
    """Batch variants: d = max(sqrt(batch_var + eps), instance term); y = x / d."""

    def __init__(self, num_features: int, apply_act: bool = True, momentum: float = 0.1,
                 eps: float = 1e-5, device=None, dtype=None, impl: str = "fused") -> None:
        super().__init__(num_features, apply_act, eps, device=device, dtype=dtype, impl=impl)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.momentum = momentum
        if apply_act:
            # statistics never live in less than float32 (official: tf.float32 variable)
            buf_dtype = _stats.stat_dtype(dtype or torch.get_default_dtype())
            self.register_buffer("running_var", torch.empty(num_features, device=device,
                                                            dtype=buf_dtype))
        else:
            self.register_buffer("running_var", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.running_var is not None:
            nn.init.ones_(self.running_var)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.reset_running_stats()

    def _instance_term(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _batch_var(self, x: Tensor) -> Tensor:
        """The biased per-channel variance of the training batch, over (N, *spatial)."""
        return _stats.batch_var(x)

    def _update_running_var(self, var: Tensor, count: int) -> None:
        """Fold ``var``, the batch variance of ``count`` values per channel, into ``running_var``."""
        with torch.no_grad():  # official: mv -= (mv - var) * (1 - decay)
            rv = self.running_var
            rv.sub_((rv - var.to(rv.dtype)) * self.momentum)

    def _normalize_act(self, x: Tensor) -> Tensor:
        if self.training:
            var = self._batch_var(x)
            self._update_running_var(var, x.numel() // x.shape[1])
        else:
            var = self.running_var.to(x.dtype)
        left = torch.sqrt(var + self.eps).view(self._channel_shape())
        right = self._instance_term(x)
        # ties go to `left`, as the gradient of tf.maximum(left, right) does
        return x / torch.where(left >= right, left, right)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, apply_act={self.apply_act}, "
                f"momentum={self.momentum}, eps={self.eps}, impl={self.impl}")


class _EvoNormGroup(_EvoNormBase):
    """Sample variants: y = x * sigmoid(...) / group statistic; no running state."""

    _centered: bool = True  # group variance; False: group mean square (S2)

    def __init__(self, num_features: int, groups: int = 32, group_size: Optional[int] = None,
                 apply_act: bool = True, eps: float = 1e-5, device=None, dtype=None,
                 impl: str = "fused") -> None:
        super().__init__(num_features, apply_act, eps, device=device, dtype=dtype, impl=impl)
        self.groups = resolve_groups(num_features, groups, group_size)
        self.group_size = group_size
        self.reset_parameters()

    def _gate(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x)

    def _group_stat(self, x: Tensor) -> Tensor:
        return _stats.group_std(x, self.groups, self.eps)

    def _normalize_act(self, x: Tensor) -> Tensor:
        return x * self._gate(x) / self._group_stat(x)

    def _fused_forward(self, x: Tensor) -> Tensor:
        return fused.evonorm_s0(x, self.weight, self.bias, self.v, self.groups, self.eps,
                                self._centered)

    def extra_repr(self) -> str:
        size = "" if self.group_size is None else f", group_size={self.group_size}"
        return (f"{self.num_features}, groups={self.groups}{size}, "
                f"apply_act={self.apply_act}, eps={self.eps}, impl={self.impl}")


_BATCH_DOC = r"""

    :math:`\sigma^2_b` is the biased variance per channel over (N, *spatial) in
    training; in eval the buffer ``running_var`` replaces it, while the
    instance statistics still come from the sample itself. Training updates
    ``running_var <- running_var - momentum * (running_var - sigma_b^2)`` with
    the biased :math:`\sigma^2_b` (official decay 0.9 = 1 - momentum; timm
    stores n/(n-1) times it, we follow the authors). ``eps`` sits inside every
    square root. Statistics and arithmetic run in float32 (float64 input stays
    float64), as fp16/bf16 sums over N*H*W elements lose digits; the output is
    cast back to the input dtype.

    Args:
        num_features: C, the channel count.
        apply_act: if False the layer is the affine ``x * weight + bias`` only
            (official ``nonlinearity=False``); ``v`` and ``running_var`` are
            then None.
        momentum: weight of the new batch variance in ``running_var``.
        eps: added to every variance (or mean square) inside the square root.
        impl: ``"fused"`` (default; the kernels of ``evonorm.fused`` where
            they exist, B0 only) or ``"reference"`` (this module's code).
"""

_GROUP_DOC = r"""

    Group statistics reduce over the C/G channels of a group and all spatial
    axes, per sample (biased). ``eps`` sits inside the square root. No running
    state: train and eval compute the same thing. Statistics and arithmetic
    run in float32 (float64 input stays float64), as fp16/bf16 sums over many
    elements lose digits; the output is cast back to the input dtype.

    Args:
        num_features: C, the channel count.
        groups: G; falls back to the largest divisor of C not above it
            (see ``resolve_groups``), as the official code does.
        group_size: alternative to ``groups``: channels per group; must divide C.
        apply_act: if False the layer is the affine ``x * weight + bias`` only
            and ``v`` is None.
        eps: added to every variance (or mean square) inside the square root.
        impl: ``"fused"`` (default; the kernels of ``evonorm.fused``) or
            ``"reference"`` (this module's code).
"""


@_fused_variant
class _EvoNormB0(_EvoNormBatch):
    r"""EvoNorm-B0 (Liu et al. 2020): batch-dependent normalisation-activation.

    .. math::
        y = \frac{x}{\max\left(\sqrt{\sigma^2_b + \epsilon},\;
            v x + \sqrt{\sigma^2_{i}(x) + \epsilon}\right)} \gamma + \beta

    :math:`\sigma^2_i` is the biased variance per (sample, channel) over the
    spatial axes."""
    __doc__ += _BATCH_DOC
    _has_v = True

    def _instance_term(self, x: Tensor) -> Tensor:
        return x * self._param(self.v, x.dtype) + _stats.instance_std(x, self.eps)

    def _fused_forward(self, x: Tensor) -> Tensor:
        if self.training:
            y, var = fused.evonorm_b0(x, self.weight, self.bias, self.v, None, self.eps)
            self._update_running_var(var, x.numel() // x.shape[1])
            return y
        return fused.evonorm_b0(x, self.weight, self.bias, self.v, self.running_var, self.eps)[0]


class _EvoNormB1(_EvoNormBatch):
    r"""EvoNorm-B1 (timm's formula): B0 with the instance term ``(x + 1) * rms``.

    .. math::
        y = \frac{x}{\max\left(\sqrt{\sigma^2_b + \epsilon},\;
            (x + 1)\sqrt{\overline{x^2}_i + \epsilon}\right)} \gamma + \beta

    :math:`\overline{x^2}_i` is the mean square per (sample, channel) over the
    spatial axes. No ``v``."""
    __doc__ += _BATCH_DOC

    def _instance_term(self, x: Tensor) -> Tensor:
        return (x + 1) * _stats.instance_rms(x, self.eps)


class _EvoNormB2(_EvoNormBatch):
    r"""EvoNorm-B2 (timm's formula): B0 with the instance term ``rms - x``.

    .. math::
        y = \frac{x}{\max\left(\sqrt{\sigma^2_b + \epsilon},\;
            \sqrt{\overline{x^2}_i + \epsilon} - x\right)} \gamma + \beta

    :math:`\overline{x^2}_i` is the mean square per (sample, channel) over the
    spatial axes. No ``v``."""
    __doc__ += _BATCH_DOC

    def _instance_term(self, x: Tensor) -> Tensor:
        return _stats.instance_rms(x, self.eps) - x


@_fused_variant
class _EvoNormS0(_EvoNormGroup):
    r"""EvoNorm-S0 (Liu et al. 2020): batch-independent normalisation-activation.

    .. math::
        y = \frac{x \,\mathrm{sigmoid}(v x)}{\sqrt{\sigma^2_g(x) + \epsilon}} \gamma + \beta

    :math:`\sigma^2_g` is the biased variance per (sample, group)."""
    __doc__ += _GROUP_DOC
    _has_v = True

    def _gate(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x * self._param(self.v, x.dtype))


@_fused_variant
class _EvoNormS1(_EvoNormGroup):
    r"""EvoNorm-S1 (timm's formula): S0 with v fixed to 1, i.e. SiLU over group std.

    .. math::
        y = \frac{x \,\mathrm{sigmoid}(x)}{\sqrt{\sigma^2_g(x) + \epsilon}} \gamma + \beta

    :math:`\sigma^2_g` is the biased variance per (sample, group). No ``v``."""
    __doc__ += _GROUP_DOC


@_fused_variant
class _EvoNormS2(_EvoNormGroup):
    r"""EvoNorm-S2 (timm's formula): SiLU over the group root mean square.

    .. math::
        y = \frac{x \,\mathrm{sigmoid}(x)}{\sqrt{\overline{x^2}_g + \epsilon}} \gamma + \beta

    :math:`\overline{x^2}_g` is the mean square per (sample, group). No ``v``."""
    __doc__ += _GROUP_DOC
    _centered = False

    def _group_stat(self, x: Tensor) -> Tensor:
        return _stats.group_rms(x, self.groups, self.eps)


_SPATIAL_NAMES = {1: "L", 2: "H, W", 3: "D, H, W"}


def _specialise(variant: type, spatial_dims: int) -> type:
    """The public class for ``variant`` on inputs with ``spatial_dims`` spatial axes."""
    name = variant.__name__.replace("_EvoNorm", f"EvoNorm{spatial_dims}d")
    axes = _SPATIAL_NAMES[spatial_dims]
    doc = (variant.__doc__ + f"\n    Shape:\n        - Input: (N, C, {axes}); channels_last "
           "works.\n        - Output: same shape, dtype and memory format as the input.\n")
    return type(name, (variant,), {"_spatial_dims": spatial_dims, "_name": name, "__doc__": doc,
                                   "__module__": __name__, "__qualname__": name})


EvoNorm1dB0 = _specialise(_EvoNormB0, 1)
EvoNorm1dB1 = _specialise(_EvoNormB1, 1)
EvoNorm1dB2 = _specialise(_EvoNormB2, 1)
EvoNorm1dS0 = _specialise(_EvoNormS0, 1)
EvoNorm1dS1 = _specialise(_EvoNormS1, 1)
EvoNorm1dS2 = _specialise(_EvoNormS2, 1)
EvoNorm2dB0 = _specialise(_EvoNormB0, 2)
EvoNorm2dB1 = _specialise(_EvoNormB1, 2)
EvoNorm2dB2 = _specialise(_EvoNormB2, 2)
EvoNorm2dS0 = _specialise(_EvoNormS0, 2)
EvoNorm2dS1 = _specialise(_EvoNormS1, 2)
EvoNorm2dS2 = _specialise(_EvoNormS2, 2)
EvoNorm3dB0 = _specialise(_EvoNormB0, 3)
EvoNorm3dB1 = _specialise(_EvoNormB1, 3)
EvoNorm3dB2 = _specialise(_EvoNormB2, 3)
EvoNorm3dS0 = _specialise(_EvoNormS0, 3)
EvoNorm3dS1 = _specialise(_EvoNormS1, 3)
EvoNorm3dS2 = _specialise(_EvoNormS2, 3)
