"""Short proxy training: SGD with Nesterov momentum, a one-cycle or cosine schedule, accuracy on held-out images.

A ``Trainer`` owns one network's optimiser, schedule and batch order, and trains in segments
(``train_to(step)``), so the evaluator can stop at the quality check and resume later. With
``train.channels_last`` the network and its batches are NHWC, which oneDNN's convolutions and BatchNorm run
faster on CPU; only rounding changes. With ``train.flush_denormal`` an evaluation counts subnormal floats as
0 (``flush_denormal``). It never hides a blow-up: a non-finite loss or non-finite eval-mode outputs raise
``NonFiniteError``, and a passed deadline raises ``TimeLimitError``; the evaluator turns both into records.
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .data import BatchOrder, Dataset

__all__ = ["Trainer", "NonFiniteError", "TimeLimitError", "make_optimizer", "lr_factor", "accuracy",
           "flush_denormal"]

# How often a training loop looks at the loss: each look is a device sync on CUDA.
CHECK_EVERY = 10


class NonFiniteError(RuntimeError):
    """The loss or the network's outputs became NaN or Inf."""


class TimeLimitError(RuntimeError):
    """The candidate's time limit passed."""


def make_optimizer(model: nn.Module, train_cfg: Mapping[str, Any], lr_scale: float = 1.0) -> torch.optim.SGD:
    """SGD with weight decay on conv and linear weights only: 1-D parameters (norm weights, biases, v0, v1)
    are left undecayed, as the paper's proxy trainings do for normalisation parameters. The update runs as
    torch's fused kernel (one pass over each parameter) where the parameters are CPU or CUDA floats, else as
    multi-tensor (foreach) ops, a few calls per step rather than a few per parameter; the math is the same."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() > 1], "weight_decay": train_cfg["weight_decay"]},
              {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}]
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.SGD(groups, lr=train_cfg["lr"] * lr_scale, momentum=train_cfg["momentum"],
                           nesterov=train_cfg["nesterov"] and train_cfg["momentum"] > 0,
                           **({"fused": True} if fused else {"foreach": True}))


def lr_factor(schedule: str, steps: int, warmup: float) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at each step.

    ``one_cycle``: linear warm-up from 4% of the peak over ``warmup * steps`` steps, then cosine decay to 0;
    ``cosine``: cosine decay from the peak to 0.
    """
    ramp = int(warmup * steps) if schedule == "one_cycle" else 0

    def factor(step: int) -> float:
        if step < ramp:
            return 0.04 + 0.96 * step / ramp
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - ramp) / max(1, steps - ramp))))

    return factor


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def flush_denormal(enabled: bool = True):
    """Subnormal floats (magnitude below 1.2e-38 in float32, 2.2e-308 in float64) read and written as 0 on CPU,
    in this thread (all of an evaluation at ``train.threads: 1``), until the block ends.

    x86 CPUs compute on subnormals in microcode, tens of times slower, so a candidate whose activations or
    gradients underflow would be judged on a slow machine. Values of normal size are untouched. Ends in the
    default state (off): torch cannot read the previous one.
    """
    if not enabled:
        yield
        return
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


@torch.inference_mode()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
             amp: bool = False, channels_last: bool = False) -> float:
    """Top-1 accuracy in eval mode; raises ``NonFiniteError`` on NaN/Inf outputs (checked once, at the end:
    a non-finite batch cannot become finite again, and each check is a device sync)."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=labels.device)
    finite = torch.ones((), dtype=torch.bool, device=labels.device)
    layout = memory_format(channels_last)
    try:
        for start in range(0, len(labels), batch_size):
            with _autocast(images.device, amp):
                logits = model(images[start:start + batch_size].contiguous(memory_format=layout))
            finite &= torch.isfinite(logits).all()
            correct += (logits.argmax(1) == labels[start:start + batch_size]).sum()
    finally:
        model.train(was_training)
    if not finite.item():
        raise NonFiniteError("eval-mode outputs are not finite")
    return correct.item() / len(labels)


class Trainer:
    """Trains one network on ``data`` for ``train_cfg['steps']`` steps, in segments, at ``lr_scale`` times
    the configured learning rate (``train.lr_scale`` holds one per family)."""

    def __init__(self, model: nn.Module, data: Dataset, train_cfg: Mapping[str, Any], seed: int,
                 lr_scale: float = 1.0):
        self.layout = memory_format(train_cfg["channels_last"])
        self.model = model.to(data.device, memory_format=self.layout).train()
        self.data = data
        self.cfg = train_cfg
        self.steps = train_cfg["steps"]
        self.step = 0
        self.generator = torch.Generator().manual_seed(seed)
        self.order = BatchOrder(len(data.train_y), train_cfg["batch_size"], self.generator)
        self.optimizer = make_optimizer(model, train_cfg, lr_scale)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_factor(train_cfg["schedule"], self.steps, train_cfg["warmup"]))

    def train_to(self, step: int, deadline: float = math.inf) -> None:
        """Run training steps until ``step`` (capped at the configured total)."""
        step = min(step, self.steps)
        bad = torch.zeros((), dtype=torch.bool, device=self.data.device)
        while self.step < step:
            if time.monotonic() > deadline:
                raise TimeLimitError(f"time limit passed at step {self.step}")
            x, y = self.batch(self.order.next(), self.generator)
            with _autocast(x.device, self.cfg["amp"]):
                loss = F.cross_entropy(self.model(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.schedule.step()
            self.step += 1
            bad |= ~torch.isfinite(loss.detach())
            if (self.step % CHECK_EVERY == 0 or self.step == step) and bad.item():
                raise NonFiniteError(f"the training loss became non-finite by step {self.step}")

    def batch(self, index: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The training images at ``index`` in the network's memory format, and their labels."""
        x, y = self.data.train_batch(index, generator)
        return x.contiguous(memory_format=self.layout), y

    def accuracy(self, split: str = "val") -> float:
        images, labels = (self.data.val_x, self.data.val_y) if split == "val" else (self.data.test_x,
                                                                                   self.data.test_y)
        return accuracy(self.model, images, labels, self.cfg["eval_batch_size"], self.cfg["amp"],
                        self.cfg["channels_last"])
