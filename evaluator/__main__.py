"""Evaluate one layer: ``python -m evaluator --config CONFIG --graph NAME_OR_YAML [--set k=v ...] [--json]``.

NAME_OR_YAML is a seed (``evonorm_s0``), a reference (``bn_relu``, ``gn_relu``) or a graph YAML file. Exit
status: 0 when the layer was evaluated (whatever its status), 2 for a bad config or graph file, 1 when the
data cannot be loaded.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from primitives import GraphFormatError, load_graph

from .config import ConfigError, load_config
from .data import DataError
from .evaluate import Evaluator
from .models import REFERENCES, layer_name, resolve_layer


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m evaluator", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config (default: the built-in defaults)")
    parser.add_argument("--graph", required=True, help=f"a seed name (evonorm_s0, ...), a reference "
                                                       f"({', '.join(REFERENCES)}) or a graph YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.steps=50 (repeatable)")
    parser.add_argument("--seed", type=int, help="evaluation seed (default: the config's seed)")
    parser.add_argument("--json", action="store_true", help="print the record as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return parser.parse_args(argv)


def _layer(spec: str):
    if os.path.isfile(spec) or spec.endswith((".yaml", ".yml")):
        return load_graph(spec)
    return resolve_layer(spec)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, args.overrides, foreign_sections=True)
        layer = _layer(args.graph)
    except (ConfigError, GraphFormatError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        evaluator = Evaluator(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    record = evaluator.evaluate(layer, cfg["seed"] if args.seed is None else args.seed)
    if args.json:
        print(json.dumps(record.to_dict(), indent=2))
    else:
        print(f"layer:       {layer_name(layer)}")
        for key, value in record.to_dict().items():
            print(f"{key + ':':12s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
