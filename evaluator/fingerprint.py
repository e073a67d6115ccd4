"""Functional fingerprints: what a layer computes on fixed probes, rounded and hashed, for deduplication.

Two graphs that compute the same function (``add(a, b)`` and ``add(b, a)``, a sub-graph written twice, dead
nodes, ``mul(x, exp(zero))`` and ``x``) get one fingerprint even when their structure differs. The probes:
fresh layers (never the module being trained) at two shapes, one whose channel count makes groups differ from
instances and layers, with ``v0``, ``v1``, ``weight``, ``bias`` and the running buffers drawn from a fixed
seed rather than left at their initial values (with v0=0 and v1=1, EvoNorm-S0 would look like S1); each is run
once in train mode, then in eval mode on its updated running statistics. The outputs, computed in float64 so
that equivalent evaluation orders agree to ~1e-15, are rounded to 20 significant bits and hashed.

The same probes, in float32 and at the initial parameter values, serve the pre-rejection
(``evaluator.rejection.prefilter``). Costs a few milliseconds; touches no global random state.
"""
from __future__ import annotations

import hashlib
from typing import Callable

import numpy as np
import torch
from torch import nn

from .models import Layer, NormActFactory

__all__ = ["fingerprint", "probe_outputs", "probe_shapes", "randomize_"]

PROBE_SEED = 20200406  # the paper's arXiv date; any fixed value works
MANTISSA_BITS = 20
TINY = 1e-9  # values below TINY times a probe's largest output count as zero


def probe_shapes(groups: int) -> tuple[tuple[int, int, int, int], ...]:
    """(N, C, H, W) probes: few channels (groups fall back to instances), and 2 channels per group."""
    return (4, 6, 3, 3), (3, 2 * groups, 2, 3)


def _probe_input(shape, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Per-channel shifted and scaled normal values, so centring and scaling both show in the output."""
    n, c = shape[:2]
    shift = torch.randn(1, c, 1, 1, generator=generator, dtype=torch.float64)
    scale = 0.5 + torch.rand(1, c, 1, 1, generator=generator, dtype=torch.float64) * 1.5
    return (torch.randn(shape, generator=generator, dtype=torch.float64) * scale + shift).to(dtype)


@torch.no_grad()
def randomize_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Set every float parameter and buffer to a value drawn from ``generator`` (running variances and
    mean squares positive), so that parameters at their special initial values (0, 1) do not hide structure."""
    tensors = list(module.named_parameters()) + list(module.named_buffers())
    for name, t in sorted(tensors, key=lambda item: item[0]):
        if not t.is_floating_point():
            continue
        leaf = name.rsplit(".", 1)[-1]
        u = torch.rand(t.shape, generator=generator, dtype=torch.float64)
        if leaf.startswith("running_mean") or leaf in ("bias", "v0"):
            value = u * 2.0 - 1.0                     # U(-1, 1)
        else:  # weight, v1, running_var*, running_msq*
            value = 0.5 + u * 1.5                     # U(0.5, 2)
        t.copy_(value.to(t.dtype))
    return module


def probe_outputs(make_layer: Callable[..., nn.Module], groups: int, randomize: bool,
                  dtype: torch.dtype = torch.float64) -> list[tuple[str, torch.Tensor]]:
    """``(label, output)`` for each probe shape, in train mode and then in eval mode.

    ``make_layer(num_channels, dtype=...)`` builds a fresh layer; nothing else is touched.
    """
    generator = torch.Generator().manual_seed(PROBE_SEED)
    outputs = []
    for shape in probe_shapes(groups):
        x = _probe_input(shape, generator, dtype)
        layer = make_layer(shape[1], dtype=dtype)
        if randomize:
            randomize_(layer, generator)
        layer.train()
        outputs.append((f"train{shape}", layer(x)))
        layer.eval()
        outputs.append((f"eval{shape}", layer(x)))
    return outputs


def _canonical(t: torch.Tensor) -> np.ndarray:
    """Round to ``MANTISSA_BITS`` significant bits; flush values tiny against the largest to 0; one NaN."""
    a = t.detach().to(torch.float64).cpu().numpy()
    finite = np.isfinite(a)
    scale = np.abs(a[finite]).max(initial=0.0)
    a = np.where(finite & (np.abs(a) <= TINY * scale), 0.0, a)
    mantissa, exponent = np.frexp(np.where(finite, a, 0.0))
    rounded = np.ldexp(np.round(mantissa * 2.0 ** MANTISSA_BITS) / 2.0 ** MANTISSA_BITS, exponent) + 0.0
    return np.where(finite, rounded, np.where(np.isnan(a), np.nan, a))


def fingerprint(layer: Layer, groups: int = 32, eps: float = 1e-5, momentum: float = 0.1) -> str:
    """A 16-hex-digit hash of the layer's function (a ``LayerGraph``, a seed name or a reference name).

    ``groups``, ``eps`` and ``momentum`` are those the layer will be trained with: they are part of its function.
    """
    factory = NormActFactory(layer, groups=groups, eps=eps, momentum=momentum)
    digest = hashlib.sha256()
    for label, out in probe_outputs(factory, groups, randomize=True):
        digest.update(label.encode())
        digest.update(np.ascontiguousarray(_canonical(out)).tobytes())
    return digest.hexdigest()[:16]
