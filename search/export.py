"""Take a discovered layer away as one standalone Python file whose only dependency is torch.

    python -m search.export RUN_DIR [--rank N | --hash H] --out my_layer.py [--name ClassName]
    python -m search.export --graph evonorm_s0 --out evonorm_s0.py

``--rank`` counts from 1 in ``search.inspect``'s ranking (the default, 1, is the best candidate); ``--hash``
picks a candidate by structural hash (a unique prefix is enough); ``--graph`` exports a seed graph or a graph
YAML file instead of a run's candidate. The code comes from ``primitives.codegen``, which reads the same op
registry as the compiler, so the file reproduces the journal's compiled graph exactly.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from primitives import seeds
from primitives import GraphFormatError, LayerGraph, layer_source, load_graph

from .command import report_error
from .journal import JournalError
from .results import open_run

__all__ = ["choose_graph", "class_name_for", "main"]


class ExportError(ValueError):
    """The asked-for candidate cannot be exported; the message says why and what exists."""


def choose_graph(run_dir: str, rank: int | None = None, hash_prefix: str | None = None) -> LayerGraph:
    """The graph of the candidate at ``rank`` (1 = best) or with a structural hash starting ``hash_prefix``."""
    with open_run(run_dir) as view:
        entries = view.leaderboard()
    if not entries:
        raise ExportError(f"{run_dir}: no candidate passed every check yet, so there is nothing to export")
    if hash_prefix is not None:
        matches = [e for e in entries if (e.row.structural_hash or "").startswith(hash_prefix)]
        hashes = sorted({e.row.structural_hash for e in matches})
        if len(hashes) != 1:
            what = "no" if not hashes else f"{len(hashes)} ({', '.join(hashes)})"
            raise ExportError(f"{run_dir}: {what} passed candidates have a structural hash starting {hash_prefix!r}")
        entry = matches[0]
    else:
        rank = 1 if rank is None else rank
        if not 1 <= rank <= len(entries):
            raise ExportError(f"{run_dir}: rank {rank} is out of range; ranks run from 1 to {len(entries)}")
        entry = entries[rank - 1]
    return entry.row.graph  # a search candidate always has one


def class_name_for(graph: LayerGraph) -> str:
    """``EvoNormS0`` for the seed ``evonorm_s0``, ``EvolvedNorm<hash>`` for a discovered graph."""
    if graph.name and graph.name.startswith("evonorm_"):
        return "EvoNorm" + graph.name.removeprefix("evonorm_").upper()
    if graph.name and graph.name.isidentifier():
        return "".join(part.capitalize() for part in re.split(r"_+", graph.name) if part)
    return f"EvolvedNorm{graph.structural_hash()[:8]}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.export", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", nargs="?", help="a run directory (or use --graph)")
    pick = p.add_mutually_exclusive_group()
    pick.add_argument("--rank", type=int, help="the candidate at this rank (1 = best; default)")
    pick.add_argument("--hash", dest="hash_prefix", help="the candidate with this structural hash (prefix)")
    p.add_argument("--graph", help=f"a seed ({', '.join(seeds.names())}) or a graph YAML file, instead of a run")
    p.add_argument("--out", required=True, help="the Python file to write")
    p.add_argument("--name", help="the class name (default: from the seed's name or the graph's hash)")
    args = p.parse_args(argv)
    if (args.run_dir is None) == (args.graph is None):
        p.error("give either RUN_DIR or --graph")
    try:
        if args.graph is not None:
            graph = load_graph(args.graph) if Path(args.graph).is_file() else seeds.get(args.graph)
        else:
            graph = choose_graph(args.run_dir, args.rank, args.hash_prefix)
        source = layer_source(graph, args.name or class_name_for(graph))
    except (ExportError, JournalError, GraphFormatError, ValueError, OSError) as err:
        return report_error(err)
    Path(args.out).write_text(source)
    print(f"wrote {args.out}: {args.name or class_name_for(graph)}, y = ({graph.formula()}) * weight + bias")
    return 0


if __name__ == "__main__":
    sys.exit(main())
