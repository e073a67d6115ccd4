"""The seed graphs of a search (``search.seeds``): built-in names, graph YAML files, a previous run's best.

An entry of ``search.seeds`` is one of

* a built-in seed graph's name (``evonorm_b0`` ... ``evonorm_s2``, ``primitives.seeds``);
* a graph YAML file (``primitives.load_graph``; a path relative to the current directory), named by the
  graph's own ``name``, else by the file's stem;
* ``RUN_DIR#topK``: the K best search candidates of a previous run, in the ranking ``search.inspect`` shows
  (read with ``search.open_run``), named ``RUN_DIR#1`` ... ``RUN_DIR#K``;
* a graph document (the mapping a graph YAML file holds: ``{name, nodes: [...]}``).

``search.load_config`` resolves the files and run references once, into the graph documents they name
(``freeze_seeds``), so the config a run saves holds its seeds themselves: a resumed run reads them from its
``config.yaml`` and gets the graphs it started with, whatever became of the files and runs since.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from evaluator.config import ConfigError
from primitives import GraphFormatError, LayerGraph, get_op, graph_from_dict, load_graph
from primitives import seeds as builtin_seeds

from .plugins import KEY as PLUGINS_KEY

__all__ = ["KEY", "is_seed_list", "resolve_seeds", "freeze_seeds", "seed_pairs"]

KEY = "search.seeds"
_TOP = re.compile(r"top([0-9]+)\Z")


def is_seed_list(value: Any) -> bool:
    """The check of ``search.seeds`` before anything is read: strings (distinct) and graph documents."""
    if not isinstance(value, list) or not all(isinstance(e, (str, dict)) for e in value):
        return False
    names = [e for e in value if isinstance(e, str)]
    return all(names) and len(set(names)) == len(names)


def resolve_seeds(entries: Sequence[Any], source: str = "the config",
                  plugins: Iterable[str] = ()) -> list[tuple[str, LayerGraph, Any]]:
    """``(name, graph, frozen entry)`` per seed graph, in order: a built-in name stays a name, every other entry
    becomes its graph documents (a run reference one per candidate). Raises ``ConfigError`` naming ``source``
    and the entry. ``plugins`` is the config's ``search.plugins``, which a run reference's plug-in ops need."""
    out = []
    for i, entry in enumerate(entries):
        where = f"{source}: '{KEY}[{i}]'"
        if isinstance(entry, str) and entry in builtin_seeds.names():
            out.append((entry, builtin_seeds.get(entry), entry))
        elif isinstance(entry, dict):
            try:
                graph = graph_from_dict(entry, f"{where} (a graph document)")
            except GraphFormatError as err:
                raise ConfigError(str(err)) from None
            out.append(_frozen(graph.name or f"seed{i + 1}", graph))
        elif isinstance(entry, str) and "#" in entry and not Path(entry).is_file():
            out += [_frozen(name, graph) for name, graph in _from_run(entry, where, plugins)]
        elif isinstance(entry, str):
            out.append(_frozen(*_from_file(entry, where)))
        else:
            raise ConfigError(f"{where} must be a seed name, a graph file, RUN_DIR#topK or a graph document, "
                              f"got {entry!r}")
    return out


def freeze_seeds(entries: Sequence[Any], source: str = "the config", plugins: Iterable[str] = ()) -> list[Any]:
    """``search.seeds`` with every file and run reference replaced by the graph documents it names."""
    return [frozen for _, _, frozen in resolve_seeds(entries, source, plugins)]


def seed_pairs(entries: Sequence[Any]) -> list[tuple[str, LayerGraph]]:
    """``(name, graph)`` per seed graph, for the search algorithm."""
    return [(name, graph) for name, graph, _ in resolve_seeds(entries)]


def _frozen(name: str, graph: LayerGraph) -> tuple[str, LayerGraph, dict]:
    named = LayerGraph.from_nodes(graph.rows(), name=name)
    return name, named, named.to_dict()


def _from_file(path: str, where: str) -> tuple[str, LayerGraph]:
    if not Path(path).is_file():
        raise ConfigError(f"{where} {path!r} is neither a built-in seed graph ({', '.join(builtin_seeds.names())}) "
                          "nor a graph file" + (f" (no such file in {os.getcwd()})" if not os.path.isabs(path) else ""))
    try:
        graph = load_graph(path)
    except GraphFormatError as err:
        raise ConfigError(f"{where}: {err}") from None
    return graph.name or Path(path).stem, graph


def _from_run(entry: str, where: str, plugins: Iterable[str]) -> list[tuple[str, LayerGraph]]:
    # imported here: the run readers sit above the config, which imports this module
    from .journal import JOURNAL_FILE, JournalError
    from .plugins import plugins_of
    from .results import open_run

    path, _, pick = entry.rpartition("#")
    match = _TOP.match(pick)
    if not path or not pick.startswith("top"):
        raise ConfigError(f"{where} {entry!r} is not a file; a previous run's best are named RUN_DIR#topK")
    k = int(match.group(1)) if match else 0
    if k < 1:
        raise ConfigError(f"{where} {entry!r}: K in RUN_DIR#topK must be a positive integer, got {pick[3:]!r}")
    if not (Path(path) / JOURNAL_FILE).is_file():
        raise ConfigError(f"{where} {entry!r}: no journal at {Path(path) / JOURNAL_FILE}; is {path!r} a run "
                          "directory?")
    try:
        with open_run(path) as view:
            entries = view.leaderboard(k)
            theirs = plugins_of(view.config)
            graphs = [e.row.graph for e in entries]
    except (JournalError, OSError, ConfigError, GraphFormatError) as err:
        raise ConfigError(f"{where} {entry!r}: cannot read the run: {err}") from None
    if len(entries) < k:
        raise ConfigError(f"{where} {entry!r}: the run has {len(entries)} search candidate(s) that passed every "
                          f"check, fewer than the {k} asked")
    missing = [m for m in theirs if m not in set(plugins)]
    used = sorted({op for g in graphs for _, op, _ in g.rows() if get_op(op).plugin})
    if used and missing:
        raise ConfigError(f"{where} {entry!r}: its graphs use the plug-in op(s) {', '.join(used)} of that run's "
                          f"{PLUGINS_KEY} {theirs}; add {missing} to {PLUGINS_KEY}, so the workers have them too")
    return [(f"{path}#{e.rank}", g) for e, g in zip(entries, graphs)]
