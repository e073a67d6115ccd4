"""Configs: YAML files over typed defaults, with dotted ``--set key=value`` overrides.

A config is a plain nested dict (it is saved beside each run as ``config.yaml``). Every key must exist in the
defaults and every value must have the default's type, so a typo or a wrong type stops the program with a
message that names the key and the file. Packages above the evaluator (``search``) pass their own sections in
``defaults``; this module never imports them.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Iterable, Mapping

import yaml

__all__ = ["ConfigError", "DEFAULTS", "load_config", "apply_overrides", "merge", "dump_config"]


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key and the file."""


# The evaluator's sections. `None` defaults accept a value of any type (or None).
DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "data": {
        "root": None,           # --set data.root, then $EVONORM_DATA, then ./data
        "download": False,      # fetch cifar-10-python.tar.gz when the files are missing
        "synthetic": False,     # a small generated dataset, for tests and dry runs
        "val_fraction": 0.1,    # held out from the training files; the search's fitness
        "max_train": 0,         # use at most this many training images (0: all)
        "augment": True,        # random crop (pad 4) and horizontal flip
    },
    "model": {
        "archs": ["resnet", "mobilenetv2"],  # proxy families: resnet, mobilenetv2, efficientnet
        "width": 1.0,           # width multiplier
        "depth": 1.0,           # depth multiplier
        "groups": 32,           # group count of group aggregates (falls back to a divisor of C)
        "eps": 1.0e-5,
        "momentum": 0.1,
    },
    "train": {
        "steps": 200,
        "batch_size": 64,
        "lr": 0.1,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 5.0e-4,  # not applied to normalisation parameters
        "schedule": "one_cycle",  # one_cycle | cosine
        "eval_batch_size": 500,
        "threads": 1,             # torch threads per evaluation
        "time_limit": 300.0,      # seconds per candidate, all architectures together
        "device": "auto",         # auto | cpu | cuda
        "amp": False,             # mixed precision on CUDA
        "test": False,            # also report test-batch accuracy (final reporting only)
    },
    "prefilter": {"enabled": True},
    "quality": {"enabled": True, "steps": 100, "min_accuracy": 0.20},
    "stability": {"enabled": True, "max_grad_norm": 1.0e8, "ascent_steps": 3, "ascent_lr": 1.0e-2},
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


def _check(defaults: Mapping[str, Any], doc: Mapping[str, Any], source: str, prefix: str = "") -> dict:
    out = copy.deepcopy(dict(defaults))
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'the config'} must be a mapping, got {doc!r}")
    for key, value in doc.items():
        path = f"{prefix}{key}"
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
                defaults: Mapping[str, Any] = DEFAULTS) -> dict[str, Any]:
    """Read a YAML config (or only the defaults when ``path`` is None), apply overrides, validate."""
    source = os.fspath(path) if path is not None else "<defaults>"
    doc: Any = {}
    if path is not None:
        try:
            with open(path) as f:
                doc = yaml.safe_load(f) or {}
        except OSError as err:
            raise ConfigError(f"cannot read config file {source!r}: {err.strerror}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{source}: not valid YAML ({err})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: a config must be a mapping of sections, got {type(doc).__name__}")
    overrides = list(overrides)
    doc = apply_overrides(doc, overrides)
    if overrides:
        source = f"{source} (with --set {' '.join(overrides)})"
    return _check(defaults, doc, source)


def dump_config(cfg: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(cfg), sort_keys=False)
