"""``LayerGraph``: a candidate layer as a computation graph of primitive ops.

The genotype keeps every intermediate node, dead ones included, because mutation and the journal need them;
everything that judges the layer's function (formula, hashes, compiled module) works on ``pruned()``, which
drops dead nodes and merges repeated sub-expressions.

A graph maps x of shape (N, C, *spatial) to a tensor of the same shape. Its initial nodes are ``x``, the
constant ``zero`` and two trainable per-channel vectors ``v0`` (init 0) and ``v1`` (init 1); each op node
stores its op name and its ordered inputs (so ``mul(x, x)`` is representable), and the last node is the
output. A graph is a value: built node by node with ``add``, it is frozen by ``validate`` (which
``from_nodes`` calls), and from then on equal graphs hash alike and every change makes a copy.
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

import networkx as nx

from .ops import get_op

__all__ = ["LayerGraph", "GraphError", "INPUTS", "PARAM_INIT"]

INPUTS: tuple[str, ...] = ("x", "zero", "v0", "v1")
# The trainable per-channel inputs and their initial values, for the compiler and the code generator.
PARAM_INIT: dict[str, float] = {"v0": 0.0, "v1": 1.0}
_ATOM = 100  # formula precedence of a leaf or a function call


class GraphError(ValueError):
    """A graph that breaks the DSL's rules; the message names the node and the problem."""


class LayerGraph:
    """A networkx ``DiGraph`` of ops in topological order, plus the rules of the DSL."""

    def __init__(self, name: str | None = None):
        self.name = name
        self._g = nx.DiGraph()
        for key in INPUTS:
            self._g.add_node(key, op="input", inputs=())
        self._frozen = False
        self._pruned: LayerGraph | None = None

    # --- building -------------------------------------------------------------------------------------
    def add(self, op: str, *inputs: str, node: str | None = None) -> str:
        """Append an op node reading ``inputs`` (earlier nodes) and return its id (``n1``, ``n2``, ...).
        Reading earlier nodes only, a graph cannot have a cycle."""
        if self._frozen:
            raise GraphError("this graph is validated, so it is a value; build a new one (or use replace)")
        node = node if node is not None else f"n{len(self._g) - len(INPUTS) + 1}"
        try:
            spec = get_op(op)
        except ValueError as err:
            raise GraphError(f"node {node!r}: {err}") from None
        if node in self._g:
            raise GraphError(f"node id {node!r} is used twice")
        if len(inputs) != spec.arity:
            raise GraphError(f"node {node!r}: op {spec.name!r} takes {spec.arity} input(s), got {len(inputs)}")
        for src in inputs:
            if src not in self._g:
                raise GraphError(f"node {node!r} reads {src!r}, which is not an earlier node")
        self._g.add_node(node, op=spec.name, inputs=tuple(inputs))
        self._g.add_edges_from((src, node) for src in inputs)
        return node

    @classmethod
    def from_nodes(cls, nodes: Iterable[Sequence], name: str | None = None) -> "LayerGraph":
        """Build from ``(id, op, inputs)`` triples in order."""
        g = cls(name)
        for node, op, inputs in nodes:
            g.add(op, *inputs, node=node)
        g.validate()
        return g

    def replace(self, node: str, op: str, inputs: Sequence[str]) -> "LayerGraph":
        """An unnamed copy with ``node``'s op and inputs replaced (inputs must come before ``node``)."""
        if node not in self.intermediate:
            raise GraphError(f"{node!r} is not an intermediate node")
        order = self.intermediate
        earlier = set(INPUTS) | set(order[: order.index(node)])
        bad = [src for src in inputs if src not in earlier]
        if bad:
            raise GraphError(f"node {node!r} may only read earlier nodes, not {bad}")
        rows = [(n, op, inputs) if n == node else (n, self.op(n), self.inputs(n)) for n in order]
        return LayerGraph.from_nodes(rows)  # no longer the named graph it came from

    # --- reading --------------------------------------------------------------------------------------
    @property
    def graph(self) -> nx.DiGraph:
        """A read-only view of the networkx graph (for its algorithms: ancestors, drawing)."""
        return self._g.copy(as_view=True)

    @property
    def intermediate(self) -> list[str]:
        return [n for n in self._g if n not in INPUTS]

    @property
    def output(self) -> str:
        nodes = self.intermediate
        if not nodes:
            raise GraphError("the graph has no op nodes, so it has no output")
        return nodes[-1]

    def op(self, node: str) -> str:
        return self._g.nodes[node]["op"]

    def inputs(self, node: str) -> tuple[str, ...]:
        return self._g.nodes[node]["inputs"]

    def rows(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """``(id, op, inputs)`` for every op node, in order."""
        return [(n, self.op(n), self.inputs(n)) for n in self.intermediate]

    def __len__(self) -> int:
        return len(self.intermediate)

    def __eq__(self, other) -> bool:
        return isinstance(other, LayerGraph) and self.rows() == other.rows()

    def __hash__(self) -> int:
        if not self._frozen:
            raise TypeError("a LayerGraph is hashable once validated (it can still change before)")
        return hash(tuple(self.rows()))

    def __repr__(self) -> str:
        return f"LayerGraph({self.formula()!r}, nodes={len(self)})"

    # --- rules ----------------------------------------------------------------------------------------
    def validate(self) -> "LayerGraph":
        """Check that the graph has an output, and freeze it; returns it. ``add`` has checked each node's op,
        arity and inputs already."""
        self.output  # noqa: B018 -- raises when there is no op node
        self._frozen = True
        return self

    # --- the phenotype --------------------------------------------------------------------------------
    def pruned(self) -> "LayerGraph":
        """The nodes the output depends on, with repeated sub-expressions merged into their first copy
        (computed once for a validated graph, which every derived view reads)."""
        if self._pruned is not None:
            return self._pruned
        live = nx.ancestors(self._g, self.output) | {self.output}
        canonical: dict[str, str] = {k: k for k in INPUTS}
        seen: dict[tuple, str] = {}
        out = LayerGraph(self.name)
        for node in self.intermediate:
            if node not in live:
                continue
            spec = get_op(self.op(node))
            args = tuple(canonical[src] for src in self.inputs(node))
            key = (spec.name, tuple(sorted(args)) if spec.commutative else args)
            if key in seen:
                canonical[node] = seen[key]
                continue
            canonical[node] = seen.setdefault(key, node)
            out.add(spec.name, *args, node=node)
        out.validate()
        out._pruned = out  # pruning a pruned graph changes nothing
        if self._frozen:
            self._pruned = out
        return out

    @property
    def uses_batch_stats(self) -> bool:
        """Whether the layer's output depends on batch statistics (it then behaves like BatchNorm)."""
        return any(get_op(op).uses_batch_stats for _, op, _ in self.pruned().rows())

    @property
    def used_inputs(self) -> set[str]:
        """The initial nodes (``x``, ``zero``, ``v0``, ``v1``) the output depends on."""
        p = self.pruned()
        return {src for _, _, inputs in p.rows() for src in inputs if src in INPUTS}

    @property
    def full_size(self) -> set[str]:
        """The nodes whose value has x's full shape: x and the element-wise ops that read a full-size value.
        The rest (``zero``, ``v0``, ``v1``, aggregates and what is computed from them alone) are reduced
        tensors, one value per channel, sample or group, that broadcast against x."""
        full = {"x"}
        for node, op, inputs in self.rows():
            if not get_op(op).is_aggregate and any(src in full for src in inputs):
                full.add(node)
        return full

    def formula(self) -> str:
        """A readable formula of the pruned graph, e.g. ``x * sigmoid(v1 * x) / std_group(x)``."""
        memo: dict[str, tuple[str, int]] = {k: (k, _ATOM) for k in INPUTS}
        ops = {k: "input" for k in INPUTS}
        for node, op, inputs in self.pruned().rows():
            spec = get_op(op)
            ops[node] = op
            args = [memo[src] for src in inputs]
            if spec.arity == 1 and spec.prec < _ATOM:  # prefix
                text = spec.format(_wrap(args[0], spec.prec, strict=True))
            elif spec.arity == 2 and spec.prec < _ATOM:  # infix, left-associative
                # a + (b + c) prints as a + b + c; a * (b / c) keeps its parentheses
                strict = not (spec.commutative and ops[inputs[1]] == op)
                text = spec.format(_wrap(args[0], spec.prec, False), _wrap(args[1], spec.prec, strict))
            else:
                text = spec.format(*(a for a, _ in args))
            memo[node] = (text, spec.prec)
        return memo[self.output][0]

    def structural_hash(self) -> str:
        """A hash equal for graphs that differ only in node ids, dead nodes, repeated sub-expressions
        and the argument order of commutative ops."""
        memo: dict[str, str] = {k: k for k in INPUTS}
        for node, op, inputs in self.pruned().rows():
            args = [memo[src] for src in inputs]
            if get_op(op).commutative:
                args.sort()
            memo[node] = hashlib.sha256(f"{op}({','.join(args)})".encode()).hexdigest()
        return memo[self.output][:16]

    # --- serialisation (the YAML form lives in primitives.io) -------------------------------------------
    def to_dict(self) -> dict:
        d = {"format": 1}
        if self.name:
            d["name"] = self.name
        d["formula"] = self.formula()
        d["nodes"] = [{"id": n, "op": op, "inputs": list(inputs)} for n, op, inputs in self.rows()]
        return d


def _wrap(arg: tuple[str, int], prec: int, strict: bool) -> str:
    text, child_prec = arg
    needs = child_prec < prec or (strict and child_prec == prec)
    return f"({text})" if needs else text
