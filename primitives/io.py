"""YAML form of a ``LayerGraph``: what the journal stores and what people edit and pass around.

.. code-block:: yaml

    format: 1
    name: evonorm_s0
    formula: x * sigmoid(v1 * x) / std_group(x)   # informative; ignored on load
    nodes:
    - {id: n1, op: mul, inputs: [v1, x]}
    - ...

A malformed file raises ``GraphFormatError`` naming the file and the problem, never a deep traceback.
"""
from __future__ import annotations

import math
import os
from typing import Any

import yaml

from .graph import GraphError, LayerGraph

__all__ = ["GraphFormatError", "graph_from_dict", "graph_to_yaml", "graph_from_yaml", "save_graph", "load_graph"]

FORMAT_VERSION = 1


class GraphFormatError(ValueError):
    """A graph file or document that cannot be read as a graph."""


def graph_from_dict(doc: Any, source: str = "graph") -> LayerGraph:
    """Build a graph from its dict form, checking every field."""
    if not isinstance(doc, dict):
        raise GraphFormatError(f"{source}: expected a mapping with a 'nodes' list, got {type(doc).__name__}")
    unknown = set(doc) - {"format", "name", "formula", "nodes"}
    if unknown:
        raise GraphFormatError(f"{source}: unknown key(s) {sorted(unknown, key=str)}; "  # keys of any type
                               "expected format, name, formula, nodes")
    if doc.get("format", FORMAT_VERSION) != FORMAT_VERSION:
        raise GraphFormatError(f"{source}: graph format {doc['format']!r} is not supported (expected {FORMAT_VERSION})")
    nodes = doc.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise GraphFormatError(f"{source}: 'nodes' must be a non-empty list of {{id, op, inputs}}")
    rows = []
    for i, node in enumerate(nodes):
        if not isinstance(node, dict) or not {"op", "inputs"} <= set(node) or set(node) - {"id", "op", "inputs"}:
            raise GraphFormatError(f"{source}: nodes[{i}] must be a mapping with keys id, op, inputs; got {node!r}")
        inputs = node["inputs"]
        if not isinstance(inputs, list) or not all(isinstance(s, str) for s in inputs):
            raise GraphFormatError(f"{source}: nodes[{i}].inputs must be a list of node ids; got {inputs!r}")
        rows.append((str(node.get("id", f"n{i + 1}")), str(node["op"]), inputs))
    name = doc.get("name")
    try:
        return LayerGraph.from_nodes(rows, name=str(name) if name is not None else None)
    except GraphError as err:  # unknown ops, wrong arity and bad inputs are format errors here
        raise GraphFormatError(f"{source}: {err}") from None


def graph_to_yaml(graph: LayerGraph) -> str:
    doc = graph.to_dict()
    nodes = doc.pop("nodes")
    head = yaml.safe_dump(doc, sort_keys=False, width=1000)
    # one flow mapping per node, ``- {id: n1, op: mul, inputs: [v1, x]}``, ids quoted where YAML needs it
    body = "".join("- " + yaml.safe_dump(n, default_flow_style=True, sort_keys=False, width=math.inf) for n in nodes)
    return f"{head}nodes:\n{body}"


def graph_from_yaml(text: str, source: str = "graph") -> LayerGraph:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise GraphFormatError(f"{source}: not valid YAML ({err})") from None
    return graph_from_dict(doc, source)


def save_graph(graph: LayerGraph, path: str | os.PathLike) -> None:
    with open(path, "w") as f:
        f.write(graph_to_yaml(graph))


def load_graph(path: str | os.PathLike) -> LayerGraph:
    try:
        with open(path) as f:
            text = f.read()
    except OSError as err:
        raise GraphFormatError(f"cannot read graph file {os.fspath(path)!r}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise GraphFormatError(f"{os.fspath(path)}: not a text file ({err})") from None
    return graph_from_yaml(text, source=os.fspath(path))
