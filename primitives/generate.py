"""Random graphs and mutation, as in the paper: nodes are added one at a time, each with an op drawn uniformly
from the op set and inputs drawn uniformly from earlier nodes; a mutation picks an intermediate node uniformly
and redraws its op and inputs.

Both take an explicit ``random.Random`` so that a search is a pure function of its seed.
"""
from __future__ import annotations

import random
from typing import Sequence

from .graph import INPUTS, LayerGraph
from .ops import get_op, op_names

__all__ = ["random_graph", "mutate"]


def _draw_node(rng: random.Random, ops: Sequence[str], earlier: Sequence[str]) -> tuple[str, list[str]]:
    op = rng.choice(ops)
    return op, [rng.choice(earlier) for _ in range(get_op(op).arity)]


def random_graph(rng: random.Random, ops: Sequence[str], num_nodes: int = 10) -> LayerGraph:
    """A graph of ``num_nodes`` intermediate nodes (the pruned layer is usually smaller)."""
    ops = op_names(ops)
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be at least 1, got {num_nodes}")
    graph = LayerGraph()
    earlier = list(INPUTS)
    for _ in range(num_nodes):
        op, inputs = _draw_node(rng, ops, earlier)
        earlier.append(graph.add(op, *inputs))
    return graph


def mutate(graph: LayerGraph, rng: random.Random, ops: Sequence[str]) -> LayerGraph:
    """A copy of ``graph`` with one intermediate node's op and inputs redrawn."""
    ops = op_names(ops)
    order = graph.intermediate
    i = rng.randrange(len(order))
    op, inputs = _draw_node(rng, ops, list(INPUTS) + order[:i])
    return graph.replace(order[i], op, inputs)
