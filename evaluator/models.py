"""The proxy networks and the ``norm_act`` factory that fills every normalization-activation slot.

Three CIFAR-sized families, as in the paper's search: a ResNet (basic blocks, ResNet-20-like, or bottleneck
blocks, ResNet-50-like), a MobileNetV2 (inverted residuals with linear bottlenecks) and an EfficientNet-B0-like
network (MBConv with squeeze-excitation), each scaled by width and depth multipliers from the config.

Every normalization(-activation) slot is built by one ``norm_act(num_channels, apply_act=True,
zero_init=False)`` made from a layer spec: a candidate ``LayerGraph`` (compiled by ``primitives``, plain
autograd, so the stability check can take double derivatives), or the references ``bn_relu`` / ``gn_relu``.
Slots followed by an activation in the BN-ReLU network use ``apply_act=True``; the others (before a residual
add, projection shortcuts, linear bottlenecks) use ``apply_act=False``, which for a candidate is its
affine-only form, as in the official code. The last norm of each residual branch starts with weight 0
(``init_zero`` in the official code), so every residual block starts as the identity. As in the official
ResNet, a ReLU follows each residual add whatever the layer.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Union

import torch
import torch.nn.functional as F
from torch import nn

from primitives import seeds
from primitives import LayerGraph, compile_graph, resolve_groups

from .depthwise import MAX_KERNEL, DepthwiseConv2d

__all__ = ["REFERENCES", "Layer", "NormActFactory", "resolve_layer", "layer_name", "norm_options", "build_model",
           "ResNet", "MobileNetV2", "EfficientNet", "PointwiseConv2d"]

REFERENCES = ("bn_relu", "gn_relu")
Layer = Union[LayerGraph, str]


def resolve_layer(layer: Layer) -> Layer:
    """A ``LayerGraph`` as is; a reference name cleaned up; a seed name (``evonorm_s0``, ``s0``) as its graph."""
    if isinstance(layer, LayerGraph):
        return layer
    if not isinstance(layer, str):
        raise TypeError(f"a layer is a LayerGraph or a name, got {type(layer).__name__}")
    name = layer.strip().lower().replace("-", "_")
    if name in REFERENCES:
        return name
    try:
        return seeds.get(name)
    except ValueError:
        raise ValueError(f"unknown layer {layer!r}; use a LayerGraph, a reference ({', '.join(REFERENCES)}) "
                         f"or a seed ({', '.join(seeds.names())})") from None


def norm_options(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The options every candidate layer is built with (``model.groups``, ``eps``, ``momentum``), as keyword
    arguments of ``NormActFactory`` and ``fingerprint``."""
    return {"groups": model_cfg["groups"], "eps": model_cfg["eps"], "momentum": model_cfg["momentum"]}


def layer_name(layer: Layer) -> str:
    return layer if isinstance(layer, str) else (layer.name or layer.formula())


class NormActFactory:
    """``norm_act(num_channels, apply_act=True, zero_init=False) -> nn.Module`` for one layer spec."""

    def __init__(self, layer: Layer, groups: int = 32, eps: float = 1e-5, momentum: float = 0.1):
        self.layer = resolve_layer(layer)
        self.groups, self.eps, self.momentum = groups, eps, momentum

    def __call__(self, num_channels: int, apply_act: bool = True, zero_init: bool = False,
                 dtype: torch.dtype | None = None) -> nn.Module:
        if isinstance(self.layer, LayerGraph):
            module = compile_graph(self.layer, num_channels, eps=self.eps, momentum=self.momentum,
                                   groups=self.groups, apply_act=apply_act, dtype=dtype)
            norm = module
        else:
            if self.layer == "bn_relu":
                norm = nn.BatchNorm2d(num_channels, eps=self.eps, momentum=self.momentum, dtype=dtype)
            else:
                norm = nn.GroupNorm(resolve_groups(num_channels, self.groups), num_channels, eps=self.eps,
                                    dtype=dtype)
            module = nn.Sequential(norm, nn.ReLU(inplace=True)) if apply_act else norm
        if zero_init:
            nn.init.zeros_(norm.weight)
        return module

    def __repr__(self) -> str:
        return f"NormActFactory({layer_name(self.layer)!r}, groups={self.groups}, eps={self.eps})"


NormAct = Callable[..., nn.Module]


def _scale(channels: int, width: float, divisor: int = 4) -> int:
    """channels * width rounded to a multiple of ``divisor`` (at least ``divisor``, never 10% below)."""
    c = max(divisor, int(channels * width + divisor / 2) // divisor * divisor)
    return c + divisor if c < 0.9 * channels * width else c


def _repeat(n: int, depth: float) -> int:
    """Blocks in a stage: ceil(n * depth), at least 1 (EfficientNet's depth scaling)."""
    return max(1, math.ceil(n * depth))


class PointwiseConv2d(nn.Conv2d):
    """A 1x1 convolution (stride 1, no bias) that multiplies a CPU NHWC input's channels by the weight matrix.

    On the proxies' small maps oneDNN's convolution primitive costs more than the matrix product it computes;
    the product sums over the same input channels and the weight keeps its (out, in, 1, 1) shape, so
    initialisation and checkpoints are those of ``nn.Conv2d``. Other inputs (NCHW, including those that are
    NHWC as well, such as 1x1 maps; other devices, where it is unmeasured) take the convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, device=None, dtype=None):
        super().__init__(in_channels, out_channels, 1, bias=False, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nhwc = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        if x.is_cpu and nhwc:
            return F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1)).permute(0, 3, 1, 2)
        return F.conv2d(x, self.weight)


def conv(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    if k == 1 and stride == 1 and groups == 1:
        return PointwiseConv2d(cin, cout)
    if groups == cin == cout and k % 2 == 1 and k <= MAX_KERNEL:
        return DepthwiseConv2d(cin, k, stride)
    return nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False)


class _Network(nn.Module):
    """Stem, body, global pooling and a linear classifier; He-initialised convolutions."""

    def __init__(self, stem: nn.Module, body: nn.Sequential, features: int, num_classes: int):
        super().__init__()
        self.stem, self.body = stem, body
        self.head = nn.Linear(features, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)).mean((2, 3)))


# --- ResNet -----------------------------------------------------------------------------------------------
class ResidualBlock(nn.Module):
    """``relu(branch(x) + shortcut(x))``, as in the official post-activation ResNet."""

    def __init__(self, branch: nn.Sequential, shortcut: nn.Module):
        super().__init__()
        self.branch, self.shortcut = branch, shortcut
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.branch(x) + self.shortcut(x))


def basic_block(cin: int, planes: int, stride: int, norm_act: NormAct) -> tuple[ResidualBlock, int]:
    branch = nn.Sequential(conv(cin, planes, 3, stride), norm_act(planes),
                           conv(planes, planes), norm_act(planes, apply_act=False, zero_init=True))
    return ResidualBlock(branch, _shortcut(cin, planes, stride, norm_act)), planes


def bottleneck_block(cin: int, planes: int, stride: int, norm_act: NormAct) -> tuple[ResidualBlock, int]:
    out = 4 * planes
    branch = nn.Sequential(conv(cin, planes, 1), norm_act(planes),
                           conv(planes, planes, 3, stride), norm_act(planes),
                           conv(planes, out, 1), norm_act(out, apply_act=False, zero_init=True))
    return ResidualBlock(branch, _shortcut(cin, out, stride, norm_act)), out


def _shortcut(cin: int, cout: int, stride: int, norm_act: NormAct) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(conv(cin, cout, 1, stride), norm_act(cout, apply_act=False))


class ResNet(_Network):
    """CIFAR ResNet: basic blocks as ResNet-20 (3 stages of 3), bottlenecks as ResNet-50 (3-4-6-3)."""

    BASE = {"basic": (basic_block, (16, 32, 64), (3, 3, 3)),
            "bottleneck": (bottleneck_block, (64, 128, 256, 512), (3, 4, 6, 3))}

    def __init__(self, norm_act: NormAct, block: str = "basic", width: float = 1.0, depth: float = 1.0,
                 stem_stride: int = 1, num_classes: int = 10):
        make_block, widths, repeats = self.BASE[block]
        widths = [_scale(w, width) for w in widths]
        stem = nn.Sequential(conv(3, widths[0], 3, stem_stride), norm_act(widths[0]))
        layers, cin = [], widths[0]
        for i, (planes, n) in enumerate(zip(widths, repeats)):
            for j in range(_repeat(n, depth)):
                unit, cin = make_block(cin, planes, 2 if i > 0 and j == 0 else 1, norm_act)
                layers.append(unit)
        super().__init__(stem, nn.Sequential(*layers), cin, num_classes)


# --- MobileNetV2 and EfficientNet ---------------------------------------------------------------------------
class InvertedResidual(nn.Module):
    """1x1 expansion, depthwise kxk, optional squeeze-excitation, linear 1x1 projection."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, kernel: int, se: float,
                 norm_act: NormAct):
        super().__init__()
        mid = cin * expand
        self.residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [conv(cin, mid, 1), norm_act(mid)]
        layers += [conv(mid, mid, kernel, stride, groups=mid), norm_act(mid)]
        if se:
            layers.append(SqueezeExcite(mid, max(1, int(cin * se))))
        layers += [conv(mid, cout, 1), norm_act(cout, apply_act=False, zero_init=self.residual)]
        self.branch = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        return out + x if self.residual else out


class SqueezeExcite(nn.Module):
    """Channel gating from pooled features (SiLU inside, as in EfficientNet; not a norm slot)."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.expand(nn.functional.silu(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(s)


class _MBNet(_Network):
    """A stem, stages of inverted residuals ``(expand, channels, repeats, stride, kernel)`` and a 1x1 head."""

    STEM, HEAD, SE = 32, 1280, 0.0
    STAGES: tuple[tuple[int, int, int, int, int], ...] = ()

    def __init__(self, norm_act: NormAct, width: float = 1.0, depth: float = 1.0, stem_stride: int = 1,
                 num_classes: int = 10):
        cin = _scale(self.STEM, width)
        stem = nn.Sequential(conv(3, cin, 3, stem_stride), norm_act(cin))
        layers = []
        for expand, channels, n, stride, kernel in self.STAGES:
            cout = _scale(channels, width)
            for j in range(_repeat(n, depth)):
                layers.append(InvertedResidual(cin, cout, stride if j == 0 else 1, expand, kernel, self.SE,
                                               norm_act))
                cin = cout
        head = _scale(self.HEAD, min(width, 1.0))
        layers += [conv(cin, head, 1), norm_act(head)]
        super().__init__(stem, nn.Sequential(*layers), head, num_classes)


class MobileNetV2(_MBNet):
    """MobileNetV2 for 32x32 inputs (stem and second stage at stride 1: 8x downsampling in all)."""

    STAGES = ((1, 16, 1, 1, 3), (6, 24, 2, 1, 3), (6, 32, 3, 2, 3), (6, 64, 4, 2, 3), (6, 96, 3, 1, 3),
              (6, 160, 3, 2, 3), (6, 320, 1, 1, 3))


class EfficientNet(_MBNet):
    """EfficientNet-B0's stages with squeeze-excitation (ratio 0.25), strided for 32x32 inputs."""

    SE = 0.25
    STAGES = ((1, 16, 1, 1, 3), (6, 24, 2, 1, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3), (6, 112, 3, 1, 5),
              (6, 192, 4, 2, 5), (6, 320, 1, 1, 3))


def build_model(arch: str, model_cfg: Mapping[str, Any], norm_act: NormAct, num_classes: int = 10) -> nn.Module:
    """The proxy network ``arch`` (resnet, mobilenetv2, efficientnet) scaled by its config section."""
    section = dict(model_cfg[arch])
    if arch == "resnet":
        return ResNet(norm_act, num_classes=num_classes, **section)
    if arch == "mobilenetv2":
        return MobileNetV2(norm_act, num_classes=num_classes, **section)
    if arch == "efficientnet":
        return EfficientNet(norm_act, num_classes=num_classes, **section)
    raise ValueError(f"unknown arch {arch!r}; valid: resnet, mobilenetv2, efficientnet")
