"""Random, mutated and malformed graphs through every stage a candidate meets, in float32 and bfloat16.

    python bench/fuzz.py [--graphs 10000] [--nodes 10] [--seed 0]

Each case goes through validation, the structural hash, a YAML round trip (which must give back the same
graph, hash, formula and name), compilation, the pre-rejection, the fingerprint and, in each dtype, a
training-mode forward and backward pass and an eval-mode forward pass on a small probe. It ends in an
outcome: ``ok``, ``invalid`` (a malformed graph document, refused with a ``GraphFormatError`` that names it),
a pre-rejection reason, or ``nonfinite_<dtype>`` (NaN/Inf in that dtype's outputs or gradients, where the
pre-rejection saw none). Any other exception is a bug: it stops the run, its note naming the case to replay.

The cases come in about equal thirds: random graphs of 1 to ``2 * --nodes`` nodes from both priors over both
op sets; chains of mutations (both operators) of random graphs and of the EvoNorm seeds; and random edits of a
valid graph's document (wrong ops, dangling and forward inputs, wrong arity, wrong types, odd ids and names).
Prints the count of each outcome and writes ``bench/results/fuzz.csv`` (outcome, count, share).
"""
from __future__ import annotations

import random
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import torch
from tqdm import tqdm

from evaluator.config import DEFAULTS
from evaluator.evaluate import REJECTIONS
from evaluator.fingerprint import fingerprint
from evaluator.models import NormActFactory, norm_options
from evaluator.rejection import prefilter
from primitives import (OPERATORS, PAPER_OPS, PRIORS, S_SERIES_OPS, GraphFormatError, LayerGraph, graph_from_dict,
                        graph_from_yaml, graph_to_yaml, mutate, random_graph, seeds)
import harness

DTYPES = (torch.float32, torch.bfloat16)
# Probe shapes (N, C, H, W), degenerate ones included: batch 1, H = W = 1, a prime channel count.
SHAPES = ((2, 8, 3, 3), (1, 6, 1, 1), (3, 5, 2, 2))
# Group counts; most divide no probe's channel count (8, 6, 5), so the groups fall back to a divisor.
GROUPS = (1, 3, 4, 32)
OP_SETS = (PAPER_OPS, S_SERIES_OPS)
PROBE_SEED = 0
SOURCE = "fuzz case"  # how a malformed document's error must name it


@dataclass(frozen=True)
class Case:
    """One fuzz input: a graph or a graph document (perhaps malformed), and the layer options it runs with."""

    graph: Any  # a LayerGraph, or a document for graph_from_dict
    groups: int
    shape: tuple[int, int, int, int]


def nonfinite(dtype: torch.dtype) -> str:
    return "nonfinite_" + str(dtype).removeprefix("torch.")


def outcomes(dtypes: Sequence[torch.dtype] = DTYPES) -> tuple[str, ...]:
    """Every outcome a case may end in."""
    return ("ok", "invalid", *(r for r in REJECTIONS if r.startswith("prefilter_")), *map(nonfinite, dtypes))


def outcome(case: Case, dtypes: Sequence[torch.dtype] = DTYPES) -> str:
    """The case's outcome (see the module docstring); raises on anything that is not one."""
    graph = case.graph
    if not isinstance(graph, LayerGraph):
        try:
            graph = graph_from_dict(graph, SOURCE)
        except GraphFormatError as err:
            if not str(err).startswith(f"{SOURCE}: "):
                raise AssertionError(f"a malformed document's error does not name it: {err}") from err
            return "invalid"
    graph.validate()
    _check_round_trip(graph)
    options = {**norm_options(DEFAULTS["model"]), "groups": case.groups}
    factory = NormActFactory(graph, **options)
    fp = fingerprint(graph, **options)
    if len(fp) != 16 or set(fp) - set("0123456789abcdef"):
        raise AssertionError(f"fingerprint {fp!r} of {graph!r} is not 16 hex digits")
    rejection = prefilter(factory, case.groups)
    blown = [nonfinite(dtype) for dtype in dtypes if not _finite_pass(factory, case.shape, dtype)]
    return rejection[0] if rejection else blown[0] if blown else "ok"


def _check_round_trip(graph: LayerGraph) -> None:
    """YAML and pruning must keep the graph's identity: its rows, hash, formula and name."""
    h, formula = graph.structural_hash(), graph.formula()
    back = graph_from_yaml(graph_to_yaml(graph), "round trip")
    pruned = graph.pruned()
    if (back, back.structural_hash(), back.formula(), back.name) != (graph, h, formula, graph.name or None):
        raise AssertionError(f"the YAML round trip changed\n{graph_to_yaml(graph)}into\n{graph_to_yaml(back)}")
    if (pruned.structural_hash(), pruned.formula()) != (h, formula):
        raise AssertionError(f"pruning changed the hash or formula of\n{graph_to_yaml(graph)}")


def _finite_pass(factory: NormActFactory, shape: tuple[int, ...], dtype: torch.dtype) -> bool:
    """Whether a fresh layer's train-mode output and gradients and its eval-mode output are all finite."""
    generator = torch.Generator().manual_seed(PROBE_SEED)
    x = torch.randn(shape, generator=generator).to(dtype).requires_grad_()
    upstream = torch.randn(shape, generator=generator).to(dtype)
    layer = factory(shape[1], dtype=dtype)
    repr(layer)  # prints the formula: must not raise
    y = layer.train()(x)
    (y * upstream).sum().backward()
    with torch.no_grad():
        grads = [t.grad for t in (x, *layer.parameters()) if t.grad is not None]  # x may be unused
        tensors = [y, layer.eval()(x), *grads]
    return all(bool(torch.isfinite(t).all()) for t in tensors)


# --- the cases ------------------------------------------------------------------------------------------------
def cases(rng: random.Random, count: int, nodes: int = 10) -> Iterator[Case]:
    """``count`` cases in about equal thirds of random, mutated and malformed graphs (see the module docstring)."""
    draw = (_random, _mutated, _malformed)
    for _ in range(count):
        graph = rng.choice(draw)(rng, nodes)
        yield Case(graph, rng.choice(GROUPS), rng.choice(SHAPES))


def _random(rng: random.Random, nodes: int) -> LayerGraph:
    return random_graph(rng, rng.choice(OP_SETS), rng.randint(1, 2 * nodes), rng.choice(PRIORS))


def _mutated(rng: random.Random, nodes: int) -> LayerGraph:
    graph = seeds.get(rng.choice(seeds.names())) if rng.random() < 0.5 else _random(rng, nodes)
    ops = rng.choice(OP_SETS)
    for _ in range(rng.randint(1, 4)):
        graph = mutate(graph, rng, ops, rng.choice(OPERATORS), max_nodes=2 * nodes)
    return graph


# Values that are wrong where a node id, op, input list, node or document is expected (or odd but valid).
ODD_IDS = ("x", "v1", "", " n1", "5", "null", "yes", "a: b", "#c", "[n]", "é", "-", "*a", 5, 1.5, None, True)
ODD_OPS = ("relu", "", "MUL", " Neg ", "std", "std_channel", "mean-group", 3, None, ["mul"])
ODD_VALUES = (None, "x", 3, 2.5, True, [], [1], [["x"]], ("x",), {"a": "x"})
ODD_KEYS = ("extra", "Nodes", 1, None, ("a",))


def _malformed(rng: random.Random, nodes: int) -> Any:
    """A valid graph's document after one to three random edits; some edits leave it valid."""
    base = _random(rng, nodes) if rng.random() < 0.7 else seeds.get(rng.choice(seeds.names()))
    doc: Any = base.to_dict()  # a fresh document
    for _ in range(rng.randint(1, 3)):
        if not (isinstance(doc, dict) and isinstance(doc.get("nodes"), list) and doc["nodes"]
                and all(isinstance(n, dict) and isinstance(n.get("inputs"), list) for n in doc["nodes"])):
            break  # the document is broken past what the node edits expect
        doc = rng.choice(_EDITS)(doc, rng)
    return doc


def _edit_op(doc: dict, rng: random.Random) -> dict:
    rng.choice(doc["nodes"])["op"] = rng.choice(ODD_OPS + tuple(PAPER_OPS))
    return doc


def _edit_input(doc: dict, rng: random.Random) -> dict:
    """A dangling input, a node reading itself or a later node (a cycle), or a wrong type."""
    nodes = doc["nodes"]
    i = rng.randrange(len(nodes))
    inputs = nodes[i]["inputs"]
    choices = ["nope", "X", "n0", nodes[i].get("id"), rng.choice(nodes[i:]).get("id"), rng.choice(ODD_VALUES)]
    value = rng.choice(choices)
    if inputs:
        inputs[rng.randrange(len(inputs))] = value
    else:
        inputs.append(value)
    return doc


def _edit_arity(doc: dict, rng: random.Random) -> dict:
    inputs = rng.choice(doc["nodes"])["inputs"]
    if inputs and rng.random() < 0.5:
        inputs.pop(rng.randrange(len(inputs)))
    else:
        inputs.append(rng.choice(("x", "zero", "v0", "v1")))
    return doc


def _edit_type(doc: dict, rng: random.Random) -> Any:
    """A wrong type for an input list, a node, the node list or the document, or a wrong format."""
    nodes = doc["nodes"]
    where = rng.randrange(5)
    if where == 0:
        rng.choice(nodes)["inputs"] = rng.choice(ODD_VALUES)
    elif where == 1:
        nodes[rng.randrange(len(nodes))] = rng.choice(ODD_VALUES + ODD_IDS)
    elif where == 2:
        doc["nodes"] = rng.choice(ODD_VALUES)
    elif where == 3:
        doc["format"] = rng.choice((2, 0, "1", 1.0, None, [1]))
    else:
        return rng.choice(ODD_VALUES + (nodes,))
    return doc


def _edit_keys(doc: dict, rng: random.Random) -> dict:
    """Unknown keys in the document or a node, or a node without its op, inputs or id."""
    if rng.random() < 0.5:
        for key in rng.sample(ODD_KEYS, rng.randint(1, 2)):
            doc[key] = 1
    else:
        node = rng.choice(doc["nodes"])
        key = rng.choice(("op", "inputs", "id", "extra"))
        if key == "extra":
            node[key] = 1
        else:
            node.pop(key, None)  # it may be gone already
    return doc


def _edit_id(doc: dict, rng: random.Random) -> dict:
    """An odd id, and every read of the old one renamed to it, or not (a dangling read or a duplicate id)."""
    node = rng.choice(doc["nodes"])
    old, new = node.get("id"), rng.choice(ODD_IDS + tuple(n.get("id") for n in doc["nodes"]))
    node["id"] = new
    if rng.random() < 0.7:
        for other in doc["nodes"]:
            other["inputs"] = [new if src == old else src for src in other["inputs"]]
    return doc


def _edit_name(doc: dict, rng: random.Random) -> dict:
    doc["name"] = rng.choice(ODD_IDS + ODD_VALUES + ("x" * 300, "line\nbreak"))
    return doc


def _edit_order(doc: dict, rng: random.Random) -> dict:
    """Nodes shuffled, or one dropped: reads of later or missing nodes, unless they happen to stay valid."""
    nodes = doc["nodes"]
    if rng.random() < 0.5:
        rng.shuffle(nodes)
    else:
        nodes.pop(rng.randrange(len(nodes)))
    return doc


_EDITS = (_edit_op, _edit_input, _edit_arity, _edit_type, _edit_keys, _edit_id, _edit_name, _edit_order)


# --- the run --------------------------------------------------------------------------------------------------
def tally(items: Iterable[Case], seed: int, dtypes: Sequence[torch.dtype] = DTYPES) -> Counter:
    """The count of each outcome; a case that raises gets a note saying how to draw it again."""
    counts: Counter = Counter()
    for i, case in enumerate(items):
        try:
            counts[outcome(case, dtypes)] += 1
        except Exception as err:
            err.add_note(f"fuzz case {i} of seed {seed} (cases(random.Random({seed}), ...)): {case!r}")
            raise
    return counts


def main(argv=None) -> int:
    parser = harness.parser(__doc__, config=False, graphs=True)
    parser.add_argument("--graphs", type=int, default=10_000, help="number of cases")
    args = parser.parse_args(argv)
    if args.graphs < 1 or args.nodes < 1:
        parser.error(f"--graphs and --nodes must be at least 1, got {args.graphs} and {args.nodes}")
    items = tqdm(cases(random.Random(args.seed), args.graphs, args.nodes), total=args.graphs, desc="fuzz",
                 unit="graph", dynamic_ncols=True)
    counts = tally(items, args.seed)
    rows = [{"outcome": o, "count": counts[o], "share": counts[o] / args.graphs} for o in outcomes()]
    print(f"{'outcome':<22}{'count':>8}{'share':>9}")
    for r in rows:
        print(f"{r['outcome']:<22}{r['count']:>8}{r['share']:>9.2%}")
    harness.save_csv(args.out, "fuzz.csv", rows, ("outcome", "count", "share"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
