"""What common random numbers do to the noise of a comparison between two layers.

    EVONORM_DATA=/path/to/data python bench/crn_noise.py [--config configs/quick.yaml] [--seeds 4]
        [--layers bn_relu,evonorm_s0] [--set key=value ...]

Evaluates each layer with the same ``--seeds`` evaluation seeds (full quick-config evaluations, quality and
stability checks off, so every seed trains to the end), one after another in this process. A comparison of
layer A with layer B is the difference of their mean fitness. Under common random numbers
(``search.common_random_numbers``) both train with the same seed, so the pairs are (A at seed i, B at seed i);
without, every candidate has its own seed, so the pairs are (A at seed i, B at seed j), i != j. The same
evaluations give both: the script prints the standard deviation of the difference over each kind of pair,
and writes ``bench/results/crn_noise.csv`` (one row per evaluation).
"""
from __future__ import annotations

import itertools
import statistics
import sys

from tqdm import tqdm

from evaluator.config import load_config
from evaluator.evaluate import Evaluator, derive_seed
import harness



def main(argv=None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--layers", default="bn_relu,evonorm_s0")
    args = parser.parse_args(argv)
    layers = [s.strip() for s in args.layers.split(",") if s.strip()]
    if args.seeds < 2 or len(layers) != 2:
        parser.error(f"need --seeds >= 2 and two --layers, got {args.seeds} and {layers}")
    cfg = load_config(args.config, ["quality.enabled=false", "stability.enabled=false", *args.overrides],
                      foreign_sections=True)
    evaluator = Evaluator(cfg)
    seeds = [derive_seed(cfg["seed"], "crn", i) for i in range(args.seeds)]
    rows, fitness = [], {}
    for layer, (i, seed) in tqdm(list(itertools.product(layers, enumerate(seeds))), desc="evaluations"):
        record = evaluator.evaluate(layer, seed)
        mean = sum(record.fitness.values()) / len(record.fitness) if record.fitness else float("nan")
        fitness[layer, i] = mean
        rows.append({"layer": layer, "seed_index": i, "status": record.status, "mean_fitness": mean,
                     **{f"fitness_{a}": v for a, v in record.fitness.items()}})
    a, b = layers
    paired = [fitness[a, i] - fitness[b, i] for i in range(args.seeds)]
    unpaired = [fitness[a, i] - fitness[b, j] for i in range(args.seeds) for j in range(args.seeds) if i != j]
    print(f"{a} - {b}: mean {statistics.mean(paired):+.4f}")
    print(f"  std of the difference, common random numbers (same seed): {statistics.stdev(paired):.4f}")
    print(f"  std of the difference, independent seeds:                 {statistics.stdev(unpaired):.4f}")
    harness.save_csv(args.out, "crn_noise.csv", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
