"""How the evaluator disposes of random candidates: the reason each of ``--count`` random graphs is rejected.

    EVONORM_DATA=/path/to/data python bench/rejections.py [--config configs/quick.yaml] [--count 50]
                                                          [--nodes 10] [--seed 0] [--set key=value ...]

Draws ``--count`` random graphs of ``--nodes`` intermediate nodes over the paper's ops (all of them, whatever
the config's ``search.ops``; seeded), evaluates each
with the config's evaluator in this process, one after another, and prints how many ended with each reason
(``passed`` for the ones that trained to the end), with the seconds spent on each group: the free
pre-rejection should take most of them in milliseconds. Writes ``bench/results/rejections.csv`` (one row per
graph: formula, status, reason, steps, seconds).
"""
from __future__ import annotations

import random
import sys
from collections import Counter, defaultdict

from tqdm import tqdm

from evaluator.config import load_config
from evaluator.evaluate import Evaluator, derive_seed
from primitives import PAPER_OPS, random_graph
import harness



def main(argv=None) -> int:
    parser = harness.parser(__doc__, graphs=True)
    parser.add_argument("--count", type=int, default=50)
    args = parser.parse_args(argv)
    if args.count < 1 or args.nodes < 1:
        parser.error(f"--count and --nodes must be at least 1, got {args.count} and {args.nodes}")
    cfg = load_config(args.config, args.overrides, foreign_sections=True)
    evaluator = Evaluator(cfg)
    rng = random.Random(args.seed)
    rows = []
    for i in tqdm(range(args.count), desc="random graphs", unit="graph"):
        graph = random_graph(rng, PAPER_OPS, args.nodes)
        record = evaluator.evaluate(graph, derive_seed(args.seed, "rejections", i))
        rows.append({"formula": graph.formula(), "status": record.status, "reason": record.reason or "passed",
                     "steps": record.steps, "seconds": round(record.wall_time, 3)})
    counts = Counter(r["reason"] for r in rows)
    seconds = defaultdict(float)
    for r in rows:
        seconds[r["reason"]] += r["seconds"]
    print(f"{'reason':22s} {'count':>5s} {'share':>6s} {'seconds':>8s}")
    for reason, n in counts.most_common():
        print(f"{reason:22s} {n:5d} {n / len(rows):6.0%} {seconds[reason]:8.1f}")
    harness.save_csv(args.out, "rejections.csv", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
