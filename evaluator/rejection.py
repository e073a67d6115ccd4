"""Rejecting candidates cheaply: pre-rejection on probe outputs, and the paper's stability check.

* ``prefilter`` (free, before any training): a layer whose outputs on the probe inputs are NaN/Inf at its
  initial parameters would fail at the first step; a layer whose outputs are the same for every sample and
  position, at its initial and at random parameters, ignores its input. Both run in float32, like training.
* ``worst_grad_norm`` (the paper's stability rejection): a few steps of gradient ascent on the network
  weights towards a larger norm of the loss gradient, on a copy of the network; the largest norm seen
  estimates the worst case. It differentiates a gradient norm, so it needs double backward (the reason the
  candidates run through plain autograd).
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .fingerprint import probe_outputs

__all__ = ["prefilter", "worst_grad_norm", "is_input_independent"]

CONSTANT_RTOL = 1e-6


def is_input_independent(out: torch.Tensor) -> bool:
    """True when every channel's output is the same for all samples and positions (up to float noise)."""
    flat = out.detach().transpose(0, 1).reshape(out.shape[1], -1)
    spread = (flat.amax(1) - flat.amin(1)).max().item()
    return spread <= CONSTANT_RTOL * max(flat.abs().max().item(), 1e-30)


def prefilter(make_layer: Callable[..., nn.Module], groups: int) -> tuple[str, str] | None:
    """``(reason, detail)`` when the layer can be rejected before training, else None."""
    initial = probe_outputs(make_layer, groups, randomize=False, dtype=torch.float32)
    for label, out in initial:
        if not torch.isfinite(out).all():
            bad = (~torch.isfinite(out)).float().mean().item()
            return "prefilter_nonfinite", f"{bad:.0%} of the outputs are NaN/Inf on the {label} probe"
    train_outputs = [out for label, out in initial if label.startswith("train")]
    if all(is_input_independent(out) for out in train_outputs):
        random = probe_outputs(make_layer, groups, randomize=True, dtype=torch.float32)
        if all(is_input_independent(out) for label, out in random if label.startswith("train")):
            return "prefilter_constant", "the outputs do not depend on the input (same for every sample and position)"
    return None


def worst_grad_norm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int,
                    lr: float) -> float:
    """Largest loss-gradient norm over ``steps`` ascent steps (each moving the weights by ``lr`` times
    their norm), on a copy of ``model`` in train mode; ``inf`` as soon as it is not finite."""
    net = copy.deepcopy(model).train()
    params = [p for p in net.parameters() if p.requires_grad]
    worst = 0.0
    for k in range(steps + 1):
        loss = F.cross_entropy(net(images), labels)
        grads = torch.autograd.grad(loss, params, create_graph=k < steps, allow_unused=True)
        norm = torch.sqrt(sum(g.square().sum() for g in grads if g is not None))
        value = norm.item()
        if not math.isfinite(value):
            return math.inf
        worst = max(worst, value)
        if k == steps or not norm.requires_grad:
            break
        ascent = torch.autograd.grad(norm, params, allow_unused=True)
        with torch.no_grad():
            a_norm = torch.sqrt(sum(a.square().sum() for a in ascent if a is not None)).item()
            w_norm = torch.sqrt(sum(p.square().sum() for p in params)).item()
            if not math.isfinite(a_norm):
                return math.inf
            if a_norm == 0.0:
                break
            for p, a in zip(params, ascent):
                if a is not None:
                    p.add_(a, alpha=lr * w_norm / a_norm)
    return worst
