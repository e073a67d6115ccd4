"""What the priors and the mutation operators propose, read off the graphs' structure (nothing is trained).

    python bench/search_space.py [--samples 4000] [--nodes 10] [--seed 0]

For each prior (``uniform``, the paper's, and ``structural``) over the paper's ops: the share of random graphs
that are viable (a full-size output that depends on x), the mean live nodes, and the share of each layer
class (``primitives.classify``). For each mutation operator, applied to viable random graphs: the share of
children that compute their parent's structure (a neutral mutation), and the share of pointwise parents whose
child is a normalizer. Writes ``bench/results/search_space.csv``; seconds on a laptop core.
"""
from __future__ import annotations

import random
import sys
from collections import Counter

from tqdm import tqdm

from primitives import OPERATORS, PAPER_OPS, PRIORS, mutate, random_graph
from primitives.classify import LAYER_CLASSES, is_normalizer, layer_class
import harness



def prior_rows(samples: int, nodes: int, seed: int) -> list[dict]:
    rows = []
    for prior in reversed(PRIORS):
        rng = random.Random(seed)
        classes, live = Counter(), 0
        for _ in tqdm(range(samples), desc=f"prior {prior}", unit="graph"):
            g = random_graph(rng, PAPER_OPS, nodes, prior)
            classes[layer_class(g)] += 1
            live += len(g.pruned())
        row = {"what": f"prior: {prior}", "viable": 1 - classes["not viable"] / samples,
               "mean live nodes": live / samples}
        row.update({c: classes[c] / samples for c in LAYER_CLASSES})
        rows.append(row)
    return rows


def operator_rows(samples: int, nodes: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    parents = [random_graph(rng, PAPER_OPS, nodes, "structural") for _ in range(samples // 4)]
    pointwise = [g for g in parents if layer_class(g) == "pointwise"]
    rows = []
    for operator in OPERATORS:
        rng = random.Random(seed + 1)
        neutral = sum(mutate(p, rng, PAPER_OPS, operator, 2 * nodes).structural_hash() == p.structural_hash()
                      for p in parents for _ in range(4))
        found = sum(is_normalizer(mutate(p, rng, PAPER_OPS, operator, 2 * nodes)) for p in pointwise for _ in range(4))
        rows.append({"what": f"mutation: {operator}", "neutral": neutral / (4 * len(parents)),
                     "pointwise parent -> normalizer": found / max(1, 4 * len(pointwise))})
    return rows


def main(argv=None) -> int:
    parser = harness.parser(__doc__, config=False, graphs=True)
    parser.add_argument("--samples", type=int, default=4000)
    args = parser.parse_args(argv)
    if args.samples < 4 or args.nodes < 1:
        parser.error(f"--samples must be at least 4 and --nodes at least 1, got {args.samples} and {args.nodes}")
    rows = prior_rows(args.samples, args.nodes, args.seed) + operator_rows(args.samples, args.nodes, args.seed)
    for r in rows:
        print(r["what"] + ": " + ", ".join(f"{k} {v:.4g}" for k, v in r.items() if k != "what"))
    harness.save_csv(args.out, "search_space.csv", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
