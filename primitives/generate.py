"""Random graphs and mutation: the paper's operators, and structural ones that aim at layers worth training.

The paper's way (``prior="uniform"``, ``operator="paper"``): nodes are added one at a time, each with an op
drawn uniformly from the op set and inputs drawn uniformly from earlier nodes; a mutation picks an
intermediate node uniformly and redraws its op and inputs. Most such graphs are useless: their output is a
per-channel or per-sample constant, or ignores x, and most mutations hit a dead node and change nothing.

The structural prior (``prior="structural"``) keeps the uniform op draws but types the inputs: an aggregate
reads a full-size node (a statistic of a constant is a constant), and so does the first operand of a binary op
(the signal flows through it; the second operand may be anything, so ``x * v1``, ``x / std(x)`` and
``x + mean(x)`` stay reachable, ``v1 / x`` does not). A graph whose pruned output is not full-size or does
not depend on x is redrawn (``viable``). The structural operator
(``operator="structural"``) only touches live nodes: with probability ``INSERT_PROBABILITY`` it inserts a new
node on a live edge (so graphs grow, up to ``max_nodes``), otherwise it redraws one live node, typed as above.

Every function takes an explicit ``random.Random`` and draws only from it, so a search is a pure function of
its seed.
"""
from __future__ import annotations

import itertools
import random
from typing import Optional, Sequence

import networkx as nx

from .graph import INPUTS, LayerGraph
from .ops import get_op, op_names

__all__ = ["PRIORS", "OPERATORS", "INSERT_PROBABILITY", "MAX_DRAWS", "viable", "random_graph", "mutate"]

PRIORS = ("structural", "uniform")
OPERATORS = ("structural", "paper")
# The structural operator's share of insertions; the rest redraw one live node.
INSERT_PROBABILITY = 0.25
# Draws of the structural prior before it gives up on an op set that cannot make a viable graph.
MAX_DRAWS = 10_000


def viable(graph: LayerGraph) -> bool:
    """Whether the layer's output has x's full shape and depends on x: the least a normaliser must do."""
    return graph.output in graph.full_size and "x" in graph.used_inputs


def _needs_full(op: str, slot: int) -> bool:
    """Whether a typed draw gives input ``slot`` of ``op`` a full-size node: an aggregate's, a binary op's first."""
    spec = get_op(op)
    return slot == 0 and (spec.is_aggregate or spec.arity == 2)


def _draw_inputs(rng: random.Random, op: str, earlier: Sequence[str], full: Optional[set[str]]) -> list[str]:
    """Inputs for ``op`` from ``earlier``; with ``full`` given (typed draws), the slots that ``_needs_full``
    names read a full-size node (x always is one)."""
    signal = earlier if full is None else [n for n in earlier if n in full]
    return [rng.choice(signal if _needs_full(op, k) else earlier) for k in range(get_op(op).arity)]


def _grow(rng: random.Random, ops: Sequence[str], num_nodes: int, typed: bool) -> LayerGraph:
    graph = LayerGraph()
    earlier = list(INPUTS)
    full = {"x"} if typed else None
    for _ in range(num_nodes):
        op = rng.choice(ops)
        node = graph.add(op, *_draw_inputs(rng, op, earlier, full))
        if typed and not get_op(op).is_aggregate and any(src in full for src in graph.inputs(node)):
            full.add(node)
        earlier.append(node)
    return graph.validate()


def random_graph(rng: random.Random, ops: Sequence[str], num_nodes: int = 10, prior: str = "uniform") -> LayerGraph:
    """A graph of ``num_nodes`` intermediate nodes (the pruned layer is usually smaller), drawn from ``prior``."""
    ops = op_names(ops)
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be at least 1, got {num_nodes}")
    if prior not in PRIORS:
        raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
    if prior == "uniform":
        return _grow(rng, ops, num_nodes, typed=False)
    for _ in range(MAX_DRAWS):
        graph = _grow(rng, ops, num_nodes, typed=True)
        if viable(graph):
            return graph
    raise ValueError(f"the structural prior drew no viable graph in {MAX_DRAWS} tries from ops {list(ops)}: "
                     "a full-size output needs an element-wise op")


def mutate(graph: LayerGraph, rng: random.Random, ops: Sequence[str], operator: str = "paper",
           max_nodes: Optional[int] = None) -> LayerGraph:
    """A changed copy of ``graph``: ``paper`` redraws one node's op and inputs, any node; ``structural``
    inserts a node on a live edge or redraws a live node. ``max_nodes`` caps insertion (default: no cap)."""
    ops = op_names(ops)
    if operator not in OPERATORS:
        raise ValueError(f"operator must be one of {OPERATORS}, got {operator!r}")
    order = graph.intermediate
    if operator == "paper":
        return _redraw(graph, order[rng.randrange(len(order))], rng, ops, typed=False)
    live = [n for n in order if n in _live(graph)]
    if rng.random() < INSERT_PROBABILITY:
        child = _insert(graph, rng, ops, live, max_nodes)
        if child is not None:
            return child
    return _redraw(graph, rng.choice(live), rng, ops, typed=True)


def _live(graph: LayerGraph) -> set[str]:
    return nx.ancestors(graph.graph, graph.output) | {graph.output}


def _redraw(graph: LayerGraph, node: str, rng: random.Random, ops: Sequence[str], typed: bool) -> LayerGraph:
    order = graph.intermediate
    earlier = list(INPUTS) + order[:order.index(node)]
    op = rng.choice(ops)
    return graph.replace(node, op, _draw_inputs(rng, op, earlier, graph.full_size if typed else None))


def _insert(graph: LayerGraph, rng: random.Random, ops: Sequence[str], live: list[str],
            max_nodes: Optional[int]) -> Optional[LayerGraph]:
    """A new node ``w = op(..., src, ...)`` on a live edge ``src -> dst`` (or after the output), so that ``dst``
    reads ``w``; at ``max_nodes`` a dead node that nothing reads makes room. None when there is no room.
    Existing nodes keep their ids; ``w`` gets an unused ``n<k>``."""
    rows = [list(r) for r in graph.rows()]
    if max_nodes is not None and len(rows) >= max_nodes:
        read = {src for _, _, inputs in rows for src in inputs}
        sinks = [n for n, _, _ in rows if n not in live and n not in read]
        if not sinks:
            return None
        victim = rng.choice(sinks)
        rows = [r for r in rows if r[0] != victim]
    edges = [(dst, k) for dst, _, inputs in rows if dst in live for k in range(len(inputs))] + [(None, 0)]
    dst, k = rng.choice(edges)
    at = len(rows) if dst is None else next(i for i, r in enumerate(rows) if r[0] == dst)
    src = rows[-1][0] if dst is None else rows[at][2][k]
    full = graph.full_size
    op = rng.choice(ops)
    if src not in full and get_op(op).is_aggregate:  # a statistic of a reduced value is a constant
        op = rng.choice([o for o in ops if not get_op(o).is_aggregate] or ops)
    slots = [k for k in range(get_op(op).arity) if src in full or not _needs_full(op, k)] or [0]
    earlier = list(INPUTS) + [r[0] for r in rows[:at]]
    inputs = _draw_inputs(rng, op, earlier, full)
    inputs[rng.choice(slots)] = src
    new = next(f"n{i}" for i in itertools.count(1) if f"n{i}" not in graph.graph)
    rows.insert(at, [new, op, tuple(inputs)])
    if dst is not None:
        row = rows[at + 1]
        row[2] = tuple(new if i == k else s for i, s in enumerate(row[2]))
    return LayerGraph.from_nodes(rows)
