"""What kind of layer a graph is, read off its structure: the words a search report and a benchmark use.

A statistic of x is an aggregate of a full-size node (every full-size node depends on x). A normalizer
multiplies or divides a full-size value by something that depends on such a statistic, as BatchNorm,
GroupNorm and EvoNorm do; a gated one also applies a non-linearity to a full-size value (S0's sigmoid, B0's
max). A pointwise layer reaches the output without any statistic of x.
"""
from __future__ import annotations

import networkx as nx

from .generate import viable
from .graph import LayerGraph
from .ops import get_op

__all__ = ["LAYER_CLASSES", "layer_class", "is_normalizer"]

LAYER_CLASSES = ("gated normalizer", "normalizer", "other statistic", "pointwise", "not viable")
_LINEAR = frozenset({"add", "mul", "div", "neg"})


def layer_class(graph: LayerGraph) -> str:
    """One of ``LAYER_CLASSES``."""
    g = graph.pruned()
    if not viable(g):
        return "not viable"
    full = g.full_size
    stats = {n for n, op, inputs in g.rows() if get_op(op).is_aggregate and inputs[0] in full}
    if not stats:
        return "pointwise"
    depends = {n for n in g.intermediate if n in stats or nx.ancestors(g.graph, n) & stats}

    def scales(node: str, op: str, inputs: tuple[str, ...]) -> bool:
        if op == "div":
            return inputs[0] in full and inputs[1] in depends
        if op == "mul":
            a, b = inputs
            return (a in full and b in depends and b not in full) or (b in full and a in depends and a not in full) \
                or (a in full and b in full and (a in depends) != (b in depends))
        return False

    if not any(scales(*row) for row in g.rows()):
        return "other statistic"
    gated = any(op not in _LINEAR and n in full for n, op, _ in g.rows())
    return "gated normalizer" if gated else "normalizer"


def is_normalizer(graph: LayerGraph) -> bool:
    """Whether the layer divides or multiplies a full-size value by a statistic of x."""
    return layer_class(graph) in ("gated normalizer", "normalizer")
