"""Configs: YAML files over typed defaults, with dotted ``--set key=value`` overrides.

A config is a plain nested dict (it is saved beside each run as ``config.yaml``). Every key must exist in the
defaults and every value must have the default's type, so a typo or a wrong type stops the program with a
message that names the key and the file. Packages above the evaluator (``search``) pass their own sections in
``defaults``; this module never imports them.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Callable, Iterable, Mapping

import yaml

__all__ = ["ConfigError", "DEFAULTS", "CHECKS", "ARCHS", "load_config", "apply_overrides", "merge", "dump_config",
           "check_scoring"]


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key and the file."""


# The evaluator's sections. `None` defaults accept a value of any type (or None).
DEFAULTS: dict[str, Any] = {
    "seed": 0,                  # run seed: fixes the validation split; candidates get their own seeds
    "data": {
        "root": None,           # --set data.root, then $EVONORM_DATA, then ./data
        "download": False,      # fetch cifar-10-python.tar.gz when the files are missing
        "synthetic": False,     # a small generated dataset, for tests and dry runs
        "synthetic_size": 2000,  # training images of the synthetic dataset (test: a fifth of it)
        "val_size": 1000,       # images held out from the training files, whatever their number; the
                                # search's fitness (0: none, every training image trains, for final
                                # retraining scored with train.test)
        "max_train": 0,         # use at most this many training images (0: all)
        "augment": True,        # random crop (pad 4) and horizontal flip
    },
    "model": {
        "archs": ["resnet", "mobilenetv2"],  # proxy families: resnet, mobilenetv2, efficientnet
        "groups": 32,           # group count of group aggregates (falls back to a divisor of C)
        "eps": 1.0e-5,
        "momentum": 0.1,
        # per family: width and depth multipliers over the CIFAR base network; stem_stride 2 halves the
        # resolution of the whole network (4x fewer FLOPs); resnet.block is basic (ResNet-20-like) or
        # bottleneck (ResNet-50-like)
        "resnet": {"block": "basic", "width": 1.0, "depth": 1.0, "stem_stride": 1},
        "mobilenetv2": {"width": 1.0, "depth": 1.0, "stem_stride": 1},
        "efficientnet": {"width": 1.0, "depth": 1.0, "stem_stride": 1},
    },
    "train": {
        "steps": 200,
        "batch_size": 64,
        "lr": 0.1,
        "lr_scale": {"resnet": 1.0, "mobilenetv2": 1.0, "efficientnet": 1.0},  # per family: lr x scale
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 5.0e-4,  # not applied to normalisation parameters (nor to any 1-D parameter)
        "schedule": "one_cycle",  # one_cycle (linear warm-up, cosine decay) | cosine
        "warmup": 0.2,           # one_cycle: fraction of the steps spent warming up
        "eval_batch_size": 500,
        "threads": 1,             # torch threads per evaluation
        "time_limit": 300.0,      # seconds per candidate, all architectures together
        "device": "auto",         # auto | cpu | cuda
        "amp": False,             # bfloat16 autocast on CUDA
        "channels_last": True,    # NHWC activations: oneDNN's convolutions (and BatchNorm) run faster on them
        "flush_denormal": True,   # CPU: subnormal floats (below 1.2e-38) count as 0, which x86 computes far faster
        "test": False,            # also report test-batch accuracy (final reporting only)
    },
    "prefilter": {"enabled": True},
    # steps: a number of steps (the paper's 100), or below 1 a fraction of train.steps, so that the check keeps
    # its place in the schedule when train.steps changes
    "quality": {"enabled": True, "steps": 100.0, "min_accuracy": 0.20},
    # worst-case gradient norm: `ascent_steps` steps of gradient ascent on the weights, each moving them by
    # `ascent_lr` times their norm, towards a larger norm of the loss gradient
    "stability": {"enabled": True, "max_grad_norm": 1.0e8, "ascent_steps": 3, "ascent_lr": 0.05,
                  "batch_size": 32},
}

ARCHS = ("resnet", "mobilenetv2", "efficientnet")


def _positive(v) -> bool:
    return v > 0


# Value checks beyond the type, by dotted key: (predicate, what is expected). Search adds its own.
CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "data.root": (lambda v: v is None or isinstance(v, str), "a path string or null"),
    "data.synthetic_size": (lambda v: v >= 20, "at least 20"),
    "data.val_size": (lambda v: v >= 0, "0 (no validation split) or a positive number of images"),
    "data.max_train": (lambda v: v >= 0, "0 (all) or a positive count"),
    "model.archs": (lambda v: bool(v) and all(a in ARCHS for a in v) and len(set(v)) == len(v),
                    f"a non-empty list of distinct names from {list(ARCHS)}"),
    "model.groups": (_positive, "a positive integer"),
    "model.eps": (lambda v: v >= 0, "non-negative"),
    "model.momentum": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "model.resnet.block": (lambda v: v in ("basic", "bottleneck"), "basic or bottleneck"),
    **{f"model.{a}.{k}": (_positive, "positive") for a in ARCHS for k in ("width", "depth")},
    **{f"model.{a}.stem_stride": (lambda v: v in (1, 2), "1 or 2") for a in ARCHS},
    **{f"train.lr_scale.{a}": (_positive, "positive") for a in ARCHS},
    "train.steps": (_positive, "a positive number of steps"),
    "train.batch_size": (lambda v: v >= 2, "at least 2 (batch statistics need two samples)"),
    "train.lr": (_positive, "positive"),
    "train.momentum": (lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    "train.weight_decay": (lambda v: v >= 0, "non-negative"),
    "train.schedule": (lambda v: v in ("one_cycle", "cosine"), "one_cycle or cosine"),
    "train.warmup": (lambda v: 0.0 <= v < 1.0, "a fraction in [0, 1)"),
    "train.eval_batch_size": (_positive, "positive"),
    "train.threads": (_positive, "a positive number of threads"),
    "train.time_limit": (_positive, "positive seconds"),
    "train.device": (lambda v: v in ("auto", "cpu", "cuda"), "auto, cpu or cuda"),
    "quality.steps": (lambda v: 0 < v < 1 or (v >= 1 and v == int(v)),
                      "a whole number of steps, or a fraction of train.steps between 0 and 1"),
    "quality.min_accuracy": (lambda v: 0.0 <= v <= 1.0, "an accuracy in [0, 1]"),
    "stability.max_grad_norm": (_positive, "positive"),
    "stability.ascent_steps": (_positive, "a positive number of steps"),
    "stability.ascent_lr": (lambda v: v >= 0, "non-negative"),
    "stability.batch_size": (lambda v: v >= 2, "at least 2"),
}


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``extra`` over ``base`` (new sections allowed), without touching either."""
    out = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _check(defaults: Mapping[str, Any], doc: Mapping[str, Any], source: str, prefix: str = "",
           foreign_sections: bool = False) -> dict:
    out = copy.deepcopy(dict(defaults))
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'the config'} must be a mapping, got {doc!r}")
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if foreign_sections and key not in defaults and isinstance(value, Mapping):
            out[key] = copy.deepcopy(value)  # another program's section: its own loader validates it
            continue
        if key not in defaults:
            valid = ", ".join(f"{prefix}{k}" for k in defaults)
            raise ConfigError(f"{source}: unknown key '{path}' (valid keys here: {valid})")
        default = defaults[key]
        if isinstance(default, Mapping):
            out[key] = _check(default, value if value is not None else {}, source, f"{path}.")
        else:
            out[key] = _coerce(default, value, path, source)
    return out


def _coerce(default: Any, value: Any, path: str, source: str) -> Any:
    if default is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        if isinstance(default, float) and isinstance(value, str):  # YAML reads 1e8 (no dot) as a string
            value = _float_or_str(value)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and isinstance(default, int) and not isinstance(default, bool) and value != int(value):
            ok = False
        if ok:
            value = type(default)(value)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"{source}: '{path}' must be {type(default).__name__} "
                          f"(like the default {default!r}), got {value!r}")
    return value


def _float_or_str(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _lookup(cfg: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _check_values(cfg: Mapping[str, Any], checks: Mapping[str, tuple[Callable[[Any], bool], str]],
                  source: str) -> None:
    for path, (ok, expected) in checks.items():
        present, value = _lookup(cfg, path)
        if present and not ok(value):
            raise ConfigError(f"{source}: '{path}' must be {expected}, got {value!r}")


def apply_overrides(doc: dict[str, Any], overrides: Iterable[str], source: str = "--set") -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a raw config document."""
    doc = copy.deepcopy(doc)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{source}: expected key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = doc
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: cannot set {key!r}: '{part}' is not a section")
        node[parts[-1]] = value
    return doc


def load_config(path: str | os.PathLike | None = None, overrides: Iterable[str] = (),
                defaults: Mapping[str, Any] = DEFAULTS,
                checks: Mapping[str, tuple[Callable[[Any], bool], str]] = CHECKS,
                foreign_sections: bool = False) -> dict[str, Any]:
    """Read a YAML config (or only the defaults when ``path`` is None), apply overrides, validate.

    Types come from ``defaults``; ``checks`` (dotted key -> (predicate, what is expected)) reject
    impossible values. Either failure raises ``ConfigError`` naming the key and the file.
    ``foreign_sections=True`` keeps unknown top-level sections unchecked (the evaluator's command line
    reads a search config's evaluator sections and leaves ``search:`` to the search).
    """
    source = os.fspath(path) if path is not None else "<defaults>"
    doc: Any = {}
    if path is not None:
        try:
            with open(path) as f:
                doc = yaml.safe_load(f) or {}
        except OSError as err:
            raise ConfigError(f"cannot read config file {source!r}: {err.strerror}") from None
        except UnicodeDecodeError as err:
            raise ConfigError(f"{source}: not a text file ({err})") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{source}: not valid YAML ({err})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: a config must be a mapping of sections, got {type(doc).__name__}")
    overrides = list(overrides)
    doc = apply_overrides(doc, overrides)
    if overrides:
        source = f"{source} (with --set {' '.join(overrides)})"
    cfg = _check(defaults, doc, source, foreign_sections=foreign_sections)
    _check_values(cfg, checks, source)
    return cfg


def dump_config(cfg: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(cfg), sort_keys=False)


def quality_step(cfg: Mapping[str, Any]) -> int:
    """The training step at which the quality check reads validation accuracy (at least 1)."""
    steps = cfg["quality"]["steps"]
    return max(1, round(steps * cfg["train"]["steps"])) if steps < 1 else int(steps)


def check_scoring(cfg: Mapping[str, Any]) -> None:
    """Refuse a config without a validation split that still asks for validation accuracy."""
    if not cfg["data"]["val_size"] and (cfg["quality"]["enabled"] or not cfg["train"]["test"]):
        raise ConfigError("data.val_size is 0, so there are no validation images: set quality.enabled: "
                          "false (its check reads them) and train.test: true (the test batch gives the score)")
