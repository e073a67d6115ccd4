"""Evolution against random search at an equal budget of training steps, and evolution with the rejection
protocols switched off (the paper's ablation): the best mean validation accuracy found so far, against the
training steps spent and against the candidates evaluated.

    EVONORM_DATA=/path/to/data python bench/evo_vs_random.py [--config configs/quick.yaml]
        [--max-steps 12000] [--seeds 0,1,2] [--variants evolution,random,evolution_no_rejection,evolution_hurdles]
        [--seed-graphs evonorm_s0] [--runs runs/evo_vs_random] [--set key=value ...]

Variants, all from the same base config and evaluator:

* ``evolution``: the config's aging evolution;
* ``random``: independent random graphs of the same size and op set;
* ``evolution_no_rejection``: evolution with the pre-rejection, the stability check and the quality check all
  off, so every candidate that does not blow up trains to the end (Liu et al. 2020, the rejection ablation);
* ``evolution_hurdles``: evolution with two progressive stages (``search.stages: 2``): a candidate at or above
  the population's median trains once more with another seed, and its fitness is the mean of both.

Liu et al. report that evolution is far more sample-efficient than random search, and that without rejection
the search wastes its budget on bad layers. The budget is counted in training steps (``search.max_steps``,
the journal's ``steps``), not candidates, because the variants differ in how many candidates are rejected for
free; ``search.max_evaluations`` and ``search.max_time`` are 0, so steps bind (a run overshoots by what its
workers have in flight when the budget runs out). No references are evaluated (they cost time, not budget;
``--set search.references=[bn_relu]`` adds them, drawn as grey lines). ``search.seeds`` is empty by default:
every variant starts from random graphs, as in the paper's ablation, so none is handed the hand-designed
EvoNorm-S0; ``--seed-graphs evonorm_s0`` opens every variant with it (random search proposes seeds first
too). Each replicate sets the run seed (``seed``), which also redraws the validation split; the variants of
one replicate share it, and their comparison is paired: the draws for candidate k come from (seed, k) alone, so
evolution's initial population holds the same random graphs that random search proposes first.

Runs go one after another (each search uses every core through its own Ray workers), each into
``RUNS/<variant>-seed<k>``. A run that has spent its budget is skipped and an interrupted one resumed, so after
a stop the same command carries on; a run directory made with a different config is refused.

Curves: each run's best-so-far is replayed from its journal in the order results were told
(``search.plots.progress_info``); it is drawn at chance (0.10, what a constant layer scores) until a candidate
beats that. A variant's line is the mean over its seeds, its band spans the worst to the best seed, up to where
its shortest run ends (in the steps panel, at most the budget).

Budget: a run's wall time is its step budget over the machine's training speed, plus the start of its workers
(the README gives the times of one comparison). Writes
``bench/results/evo_vs_random.csv`` (one row per run) and ``evo_vs_random.png``.
"""
from __future__ import annotations

import logging
import statistics
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import yaml

from evaluator.config import dump_config
from search import ConfigError, RunView, load_config, open_run, resume, run
from search.config import check_resume_overrides, find_config
from search.journal import JOURNAL_FILE
from search.plots import progress_info
import harness

REPO = Path(__file__).resolve().parents[1]
VARIANTS: dict[str, list[str]] = {
    "evolution": ["search.algorithm=evolution"],
    "random": ["search.algorithm=random"],
    "evolution_no_rejection": ["search.algorithm=evolution", "prefilter.enabled=false", "quality.enabled=false",
                               "stability.enabled=false"],
    "evolution_hurdles": ["search.algorithm=evolution", "search.stages=2", "search.hurdle=0.5"],
}
CHANCE = 0.10  # CIFAR-10: what a layer whose output ignores the image scores
POINTS = 200   # grid points of a mean curve
FIELDS = ("variant", "seed", "best_at_budget", "best_fitness", "best_formula", "steps", "evaluations", "passed",
          "rejected", "duplicates", "stop_reason", "wall_time")


def run_overrides(variant: str, seed: int, max_steps: int, seed_graphs: Sequence[str]) -> list[str]:
    """The overrides that make one run of the comparison: the variant, the step budget as the only budget,
    no references, the same seed graphs for every variant, and the replicate's run seed."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    if max_steps <= 0:
        raise ValueError(f"the step budget must be positive, got {max_steps}")
    return [*VARIANTS[variant], f"search.max_steps={max_steps}", "search.max_evaluations=0", "search.max_time=0",
            "search.references=[]", f"search.seeds=[{', '.join(seed_graphs)}]", f"seed={seed}"]


def _may_change(key: str) -> bool:
    """Whether a resumed run may take a new value for ``key`` (a budget, the data root, the executor)."""
    try:
        check_resume_overrides([f"{key}=0"], ".")
    except ConfigError:
        return False
    return True


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in doc.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed_keys(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """The keys whose values differ between a run's saved config and the one wanted now, except those a
    resumed run may change."""
    a, b = _flatten(saved), _flatten(yaml.safe_load(dump_config(wanted)))
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and not _may_change(k))


def finished(view: RunView, max_steps: int) -> bool:
    """The run spent ``max_steps`` with nothing left in flight, or ran out of new candidates."""
    summary = view.summary()
    sessions = view.sessions()
    if sessions and sessions[-1].stop_reason == "exhausted":
        return True
    return summary.steps >= max_steps and not summary.running and not summary.abandoned


def ensure_run(cfg: Mapping[str, Any], run_dir: Path, max_steps: int, overrides: Sequence[str]) -> str:
    """Run, resume or skip one run; returns which. ``overrides`` are the command line's, passed on to a resumed
    run where they may change (the others must already match its saved config)."""
    if not (run_dir / JOURNAL_FILE).exists():
        run(cfg, run_dir, progress=True)
        return "ran"
    with open_run(run_dir) as view:
        changed = changed_keys(view.config, cfg)
        if changed:
            raise ConfigError(f"{run_dir} holds a run made with another config ({', '.join(changed)} differ); "
                              "delete it or choose another --runs folder")
        if finished(view, max_steps):
            return "skipped (finished)"
    keep = [o for o in overrides if _may_change(o.partition("=")[0].strip())]
    resume(run_dir, [f"search.max_steps={max_steps}", *keep], progress=True)
    return "resumed"


def best_at(xs: Sequence[float], best: Sequence[Optional[float]], grid: Sequence[float],
            floor: float = CHANCE) -> list[float]:
    """A best-so-far step curve (``xs`` ascending, ``best`` None until something passed) read at each point
    of the ascending ``grid``, never below ``floor``."""
    out, i, current = [], 0, floor
    for g in grid:
        while i < len(xs) and xs[i] <= g:
            if best[i] is not None:
                current = max(floor, best[i])
            i += 1
        out.append(current)
    return out


def band(curves: Sequence[tuple[Sequence[float], Sequence[Optional[float]]]], end: Optional[float] = None,
         floor: float = CHANCE, points: int = POINTS) -> tuple[list[float], list[float], list[float], list[float]]:
    """Mean, lowest and highest of several best-so-far curves ``(xs, best)`` on a common grid that ends
    where the shortest curve ends, or at ``end`` if that comes first: ``(grid, mean, low, high)``."""
    end = min([xs[-1] if xs else 0.0 for xs, _ in curves] + ([end] if end is not None else []))
    grid = [end * k / (points - 1) for k in range(points)]
    values = [best_at(xs, best, grid, floor) for xs, best in curves]
    columns = list(zip(*values))
    return grid, [statistics.mean(c) for c in columns], [min(c) for c in columns], [max(c) for c in columns]


def run_row(variant: str, seed: int, view: RunView, best_at_budget: float) -> dict:
    """One run's numbers: ``best_at_budget`` is the best found within the step budget (chance if nothing
    passed), ``best_fitness`` also counts what was in flight when the budget ran out."""
    s = view.summary()
    best = view.best()
    sessions = view.sessions()
    return {"variant": variant, "seed": seed, "best_at_budget": round(best_at_budget, 4),
            "best_fitness": round(best.mean_fitness, 4) if best else "",
            "best_formula": best.formula if best else "", "steps": s.steps, "evaluations": s.evaluated,
            "passed": s.completed, "rejected": sum(s.rejected.values()), "duplicates": s.duplicates,
            "stop_reason": sessions[-1].stop_reason if sessions else "", "wall_time": round(s.wall_time)}


def plot(curves: Mapping[str, Mapping[str, list]], references: Mapping[str, float], max_steps: int, path: Path,
         title: str) -> None:
    """``curves[budget][variant]`` holds each seed's ``(xs, best)``; one panel per budget, the steps panel
    cut at ``max_steps`` (what every run spent before the budget stopped it)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"steps": "training steps spent", "evaluations": "candidates evaluated"}
    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4.4), squeeze=False)
    for ax, (budget, by_variant) in zip(axes[0], curves.items()):
        for i, (variant, runs) in enumerate(by_variant.items()):
            grid, mean, low, high = band(runs, max_steps if budget == "steps" else None)
            ax.plot(grid, mean, color=f"C{i}", lw=2, label=f"{variant} (mean of {len(runs)})")
            ax.fill_between(grid, low, high, color=f"C{i}", alpha=0.2, lw=0)
        for name, value in sorted(references.items()):
            ax.axhline(value, color="gray", lw=0.8, ls=":")
            ax.text(0.01, value, f" {name}", transform=ax.get_yaxis_transform(), fontsize=8, color="gray",
                    va="bottom")
        ax.set_xlabel(labels[budget])
        ax.set_ylabel("best mean validation accuracy so far")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(rows: Sequence[dict]) -> list[str]:
    """One line per run (best within the budget, then at the end), then each variant's mean, lowest and
    highest best within the budget over its seeds."""
    lines = [f"{'variant':24s} {'seed':>4s} {'budget':>6s} {'final':>6s} {'steps':>7s} {'evals':>6s} {'passed':>6s} "
             f"{'rejected':>8s} {'wall s':>7s}  best formula"]
    for r in rows:
        best = f"{r['best_fitness']:.3f}" if r["best_fitness"] != "" else "-"
        lines.append(f"{r['variant']:24s} {r['seed']:4d} {r['best_at_budget']:6.3f} {best:>6s} {r['steps']:7d} "
                     f"{r['evaluations']:6d} {r['passed']:6d} {r['rejected']:8d} {r['wall_time']:7d}  "
                     f"{r['best_formula']}")
    for variant in dict.fromkeys(r["variant"] for r in rows):
        bests = [r["best_at_budget"] for r in rows if r["variant"] == variant]
        lines.append(f"{variant}: best within the budget {statistics.mean(bests):.3f} "
                     f"(seeds {min(bests):.3f}-{max(bests):.3f})")
    return lines


def _csv_list(text: str, kind=str) -> list:
    return [kind(item.strip()) for item in text.split(",") if item.strip()]


def main(argv=None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--max-steps", type=int, default=12000, help="training steps per run (search.max_steps)")
    parser.add_argument("--seeds", default="0,1,2", help="run seeds, one replicate of every variant each")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seed-graphs", default="", help="search.seeds for every variant (default: none)")
    parser.add_argument("--runs", default=str(REPO / "runs" / "evo_vs_random"), help="folder of the run directories")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    seeds, variants = _csv_list(args.seeds, int), _csv_list(args.variants)
    jobs = [(v, s) for s in seeds for v in variants]
    try:
        configs = {(v, s): load_config(find_config(args.config), [
            *run_overrides(v, s, args.max_steps, _csv_list(args.seed_graphs)), *args.overrides]) for v, s in jobs}
        for k, (variant, seed) in enumerate(jobs, 1):
            run_dir = Path(args.runs) / f"{variant}-seed{seed}"
            print(f"[{k}/{len(jobs)}] {variant}, seed {seed} -> {run_dir}", flush=True)
            outcome = ensure_run(configs[variant, seed], run_dir, args.max_steps, args.overrides)
            print(f"[{k}/{len(jobs)}] {variant}, seed {seed}: {outcome}", flush=True)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; the same command resumes where this one stopped", file=sys.stderr)
        return 130
    rows = []
    curves: dict[str, dict[str, list]] = {"steps": {}, "evaluations": {}}
    references: dict[str, list[float]] = {}
    for variant, seed in jobs:
        with open_run(Path(args.runs) / f"{variant}-seed{seed}") as view:
            candidates = view.candidates()
            for budget, by_variant in curves.items():
                p = progress_info(candidates, view.config, variant, budget)
                by_variant.setdefault(variant, []).append((p.x, p.best))
            steps_x, steps_best = curves["steps"][variant][-1]
            rows.append(run_row(variant, seed, view, best_at(steps_x, steps_best, [args.max_steps])[0]))
            for name, ref in view.references().items():
                if ref.passed:
                    references.setdefault(name, []).append(ref.mean_fitness)
    out = Path(args.out)
    harness.save_csv(out, "evo_vs_random.csv", rows, FIELDS)
    print("\n".join(table(rows)))
    title = (f"{Path(args.config).name}: {args.max_steps} training steps per run, seeds {args.seeds}; "
             f"seed graphs: {args.seed_graphs or 'none'}; band: worst to best seed")
    plot(curves, {k: statistics.mean(v) for k, v in references.items()}, args.max_steps, out / "evo_vs_random.png",
         title)
    print(f"wrote {out / 'evo_vs_random.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
