"""One candidate layer in, one plain record out: fingerprint, pre-rejection, stability, quality, fitness.

The order spends as little as possible on bad candidates:

1. fingerprint and pre-rejection on probe inputs (milliseconds);
2. for each architecture: build the network, run the stability check, train to the quality step (``quality.steps``) and
   reject below ``quality.min_accuracy`` validation accuracy (so a candidate that fails on the second
   architecture has not been trained to the end on the first);
3. for each architecture: train to ``train.steps``; fitness is the validation accuracy per architecture.

Final retraining (``search.rerank``) sets ``data.val_size: 0``: every training image trains, the quality
check (which reads validation accuracy) is off, and ``train.test`` gives the only score.

``Evaluator.evaluate`` never raises for a bad candidate: NaN/Inf in training, exceptions and the time limit
all end in a record. Each evaluation is seeded from the given seed (the search passes one per candidate) and
runs with ``train.threads`` torch threads, so its result does not depend on scheduling.
"""
from __future__ import annotations

import hashlib
import logging
import math
import time
import traceback
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Mapping

import torch

from primitives import LayerGraph

from . import depthwise
from .config import DEFAULTS, check_scoring, quality_step
from .data import Dataset, load_dataset
from .fingerprint import fingerprint
from .models import Layer, NormActFactory, build_model, layer_name, norm_options, resolve_layer
from .rejection import prefilter, worst_grad_norm
from .train import NonFiniteError, TimeLimitError, Trainer, flush_denormal

__all__ = ["Status", "REJECTIONS", "FAILURES", "REASONS", "EvalRecord", "Evaluator", "evaluate", "derive_seed", "pick_device"]

log = logging.getLogger(__name__)


class Status(str, Enum):
    """How an evaluation ended: the candidate passed every check, was judged and rejected, or the evaluation
    did not complete (which says nothing about the candidate)."""

    OK = "ok"
    REJECTED = "rejected"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


# Why the evaluator rejected a candidate, and why its own evaluation failed. Whoever runs evaluations may add
# failure reasons of its own (the search's executor: a lost worker). Stored in journals: never rename.
REJECTIONS = ("prefilter_nonfinite", "prefilter_constant", "quality", "stability", "nonfinite")
FAILURES = ("exception", "timeout")
REASONS = REJECTIONS + FAILURES


@dataclass
class EvalRecord:
    """The result of one evaluation, as plain JSON-ready values.

    ``fitness`` maps each architecture to its final validation accuracy (empty unless ``status`` is ok;
    always empty without a validation split);
    ``test_accuracy`` likewise for the test batch when ``train.test`` is set, else None; ``steps`` counts the
    training steps run, summed over architectures; ``wall_time`` is in seconds.
    """

    status: Status
    reason: str | None = None
    detail: str = ""
    fitness: dict[str, float] = field(default_factory=dict)
    test_accuracy: dict[str, float] | None = None
    steps: int = 0
    wall_time: float = 0.0
    fingerprint: str | None = None

    def __post_init__(self):
        try:
            self.status = Status(self.status)
        except ValueError:
            raise ValueError(f"status must be one of {[s.value for s in Status]}, got {self.status!r}") from None
        if (self.status is Status.OK) != (self.reason is None):
            raise ValueError(f"status {self.status!r} with reason {self.reason!r}: only 'ok' has no reason")
        if self.status is Status.REJECTED and self.reason not in REJECTIONS:
            raise ValueError(f"a rejection's reason must be one of {REJECTIONS}, got {self.reason!r}")
        if self.status is Status.FAILED and (self.reason in REJECTIONS or not self.reason):
            raise ValueError(f"a failure needs a failure reason (the evaluator's: {FAILURES}), got {self.reason!r}")

    @classmethod
    def for_reason(cls, reason: str, detail: str, **kwargs) -> "EvalRecord":
        """A rejection for one of ``REJECTIONS``, else a failure."""
        return cls(Status.REJECTED if reason in REJECTIONS else Status.FAILED, reason, detail, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "EvalRecord":
        unknown = set(doc) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown EvalRecord field(s) {sorted(unknown)}")
        return cls(**doc)


class _Rejected(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed from a base seed and keys (an architecture name, a purpose), stable across runs."""
    text = "/".join(str(k) for k in (seed, *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but CUDA is not available; use auto or cpu")
    return torch.device(device)


class Evaluator:
    """Holds the dataset (loaded once, in the constructor) and evaluates candidates one at a time.

    ``data`` passes an already loaded ``Dataset`` (benches and tests share one between configs). Raises
    ``ConfigError`` for a config without a validation split that still asks for validation accuracy.
    """

    def __init__(self, cfg: Mapping[str, Any] = DEFAULTS, data: Dataset | None = None):
        check_scoring(cfg)
        self.cfg = cfg
        torch.set_num_threads(cfg["train"]["threads"])
        self.device = pick_device(cfg["train"]["device"])
        if self.device.type == "cpu":  # build or load the depthwise loops now, not in the first evaluation's time
            depthwise.load()
        self.data = (data if data is not None else load_dataset(cfg["data"], cfg["seed"])).to(self.device)

    def _factory(self, layer: Layer) -> NormActFactory:
        return NormActFactory(layer, **norm_options(self.cfg["model"]))

    def fingerprint(self, layer: Layer) -> str:
        return fingerprint(layer, **norm_options(self.cfg["model"]))

    def evaluate(self, layer: Layer, seed: int) -> EvalRecord:
        """Evaluate ``layer`` (a ``LayerGraph``, a seed name or a reference name) seeded by ``seed``."""
        start = time.monotonic()
        trainers: dict[str, Trainer] = {}
        where = _Where(trainers)
        fp = None
        try:
            torch.set_num_threads(self.cfg["train"]["threads"])
            layer = resolve_layer(layer)
            fp = self.fingerprint(layer)
            with flush_denormal(self.cfg["train"]["flush_denormal"]):
                record = self._run(layer, seed, trainers, where, start + self.cfg["train"]["time_limit"])
        except _Rejected as r:
            record = EvalRecord.for_reason(r.reason, r.detail)
        except NonFiniteError as err:
            record = EvalRecord.for_reason("nonfinite", f"{where}{err}")
        except TimeLimitError as err:
            record = EvalRecord.for_reason(
                "timeout", f"{where}{err} (train.time_limit={self.cfg['train']['time_limit']} s)")
        except Exception as err:  # a bad candidate must never stop the search
            log.debug("candidate raised", exc_info=True)
            frame = traceback.extract_tb(err.__traceback__)[-1]
            record = EvalRecord.for_reason(
                "exception", f"{where}{type(err).__name__}: {err} ({frame.filename}:{frame.lineno})")
        record.fingerprint = fp
        record.steps = sum(t.step for t in trainers.values())
        record.wall_time = round(time.monotonic() - start, 3)
        log.info("%s: %s%s", _label(layer), record.status,
                 f" ({record.reason}: {record.detail})" if record.reason else f" {record.fitness}")
        return record

    def _run(self, layer: Layer, seed: int, trainers: dict[str, Trainer], where: "_Where",
             deadline: float) -> EvalRecord:
        cfg = self.cfg
        factory = self._factory(layer)
        if cfg["prefilter"]["enabled"]:
            verdict = prefilter(factory, cfg["model"]["groups"])
            if verdict is not None:
                raise _Rejected(*verdict)
        quality = cfg["quality"]
        for arch in cfg["model"]["archs"]:
            where.arch = arch
            torch.manual_seed(derive_seed(seed, arch, "init"))
            model = build_model(arch, cfg["model"], factory)
            trainers[arch] = trainer = Trainer(model, self.data, cfg["train"], derive_seed(seed, arch, "data"),
                                               cfg["train"]["lr_scale"][arch])
            if cfg["stability"]["enabled"]:
                self._check_stability(arch, trainer, seed)
            if quality["enabled"]:
                trainer.train_to(quality_step(cfg), deadline)
                acc = trainer.accuracy()
                if acc < quality["min_accuracy"]:
                    raise _Rejected("quality", f"{arch}: validation accuracy {acc:.3f} < {quality['min_accuracy']} "
                                               f"after {trainer.step} steps")
        fitness, test = {}, {}
        for arch, trainer in trainers.items():
            where.arch = arch
            trainer.train_to(trainer.steps, deadline)
            if len(self.data.val_y):
                fitness[arch] = trainer.accuracy()
            if cfg["train"]["test"]:
                test[arch] = trainer.accuracy("test")
        return EvalRecord(Status.OK, fitness=fitness, test_accuracy=test if cfg["train"]["test"] else None)

    def _check_stability(self, arch: str, trainer: Trainer, seed: int) -> None:
        s = self.cfg["stability"]
        generator = torch.Generator().manual_seed(derive_seed(seed, arch, "stability"))
        index = torch.randperm(len(self.data.train_y), generator=generator)[:s["batch_size"]]
        images, labels = trainer.batch(index, generator)
        norm = worst_grad_norm(trainer.model, images, labels, s["ascent_steps"], s["ascent_lr"])
        if not norm <= s["max_grad_norm"]:
            shown = "not finite" if math.isinf(norm) else f"{norm:.3g}"
            raise _Rejected("stability", f"{arch}: worst-case gradient norm {shown} > {s['max_grad_norm']:g}")


class _Where:
    """Which architecture an evaluation is working on, for the detail of a record."""

    def __init__(self, trainers: Mapping[str, Trainer]):
        self.trainers, self.arch = trainers, None

    def __str__(self) -> str:
        if self.arch is None:
            return ""
        trainer = self.trainers.get(self.arch)
        return f"{self.arch}, step {trainer.step}: " if trainer is not None else f"{self.arch}: "


def _label(layer: object) -> str:
    return layer_name(layer) if isinstance(layer, (str, LayerGraph)) else repr(layer)


def evaluate(layer: Layer, cfg: Mapping[str, Any] = DEFAULTS, seed: int | None = None) -> EvalRecord:
    """Evaluate one layer with a fresh ``Evaluator`` (loads the data; prefer ``Evaluator`` for many)."""
    return Evaluator(cfg).evaluate(layer, cfg["seed"] if seed is None else seed)
