"""Plug-in modules (``search.plugins``): imported before anything else runs, on the driver and on every worker.

A plug-in is a plain Python module that registers ops with ``primitives.register_op`` when it is imported;
``search.ops`` may then name those ops. The driver imports the modules when it loads the config (so that
``search.ops`` and ``search.seeds`` can be checked against the ops they add), every worker imports them
before it builds its evaluator, and the readers of a run (``search.inspect``, ``export``, ``rerank``) import
the ones the run's saved config lists. A module is looked up on ``sys.path``, then in the current directory
(as ``python -m`` would). A Ray actor does not start in the driver's interpreter, so it is handed the
directories the driver found the modules in (``plugin_paths``); on a cluster, the modules must sit at the
same path on every node, or be installed there, as this package must.
"""
from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Mapping

from evaluator.config import ConfigError

__all__ = ["KEY", "is_module_list", "plugins_of", "import_plugins", "plugin_paths"]

KEY = "search.plugins"
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


def is_module_list(value: Any) -> bool:
    """Whether ``value`` is a list of distinct dotted module names (the check of ``search.plugins``)."""
    return (isinstance(value, list) and all(isinstance(v, str) and _MODULE.match(v) for v in value)
            and len(set(value)) == len(value))


def plugins_of(cfg: Mapping[str, Any]) -> list[str]:
    """The config's ``search.plugins`` (none for a config without a search section, or older than the key)."""
    return list((cfg.get("search") or {}).get("plugins") or [])


def import_plugins(modules: Iterable[str], source: str = "the config", paths: Iterable[str] = ()) -> list[ModuleType]:
    """Import ``modules`` (each once per process: Python caches them), looking on ``sys.path``, then in
    ``paths`` and the current directory, which are appended to ``sys.path`` when missing. A module that cannot
    be imported, or whose import raises, is a ``ConfigError`` naming ``source``, the key and the module."""
    modules = list(modules)
    if not modules:
        return []
    cwd = os.getcwd()
    for entry in (*paths, cwd):
        if entry not in sys.path:
            sys.path.append(entry)
    out = []
    for name in modules:
        try:
            out.append(importlib.import_module(name))
        except ModuleNotFoundError as err:
            where = "" if err.name != name.partition(".")[0] else f" (looked on sys.path and in {cwd})"
            raise ConfigError(f"{source}: '{KEY}' names {name!r}, which cannot be imported: {err}{where}") from None
        except Exception as err:  # noqa: BLE001 -- a plug-in's own error (an op that clashes, a bad formula)
            raise ConfigError(f"{source}: '{KEY}' names {name!r}, whose import failed: "
                              f"{type(err).__name__}: {err}") from None
    return out


def plugin_paths(modules: Iterable[str]) -> tuple[str, ...]:
    """The directories this process imported ``modules`` from: the ``sys.path`` entries that hold their
    top-level packages, for a worker to append to its own ``sys.path`` before it imports them."""
    out: list[str] = []
    for name in modules:
        top = sys.modules.get(name.partition(".")[0])
        if top is None:
            continue
        if hasattr(top, "__path__"):  # a package (namespace packages have several folders)
            dirs = [Path(p).parent for p in top.__path__]
        else:
            dirs = [Path(top.__file__).parent] if getattr(top, "__file__", None) else []
        for d in dirs:
            if str(d.resolve()) not in out:
                out.append(str(d.resolve()))
    return tuple(out)
