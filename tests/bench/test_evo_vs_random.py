"""bench/evo_vs_random.py: the runs' overrides, the config guard of resumed runs, and best-so-far curves."""
import pytest

from bench.evo_vs_random import CHANCE, band, best_at, changed_keys, run_overrides
from search import load_config
from search.config import find_config

QUICK = find_config("quick")


def config(variant, seed=0, max_steps=5000, seed_graphs=()):
    return load_config(QUICK, run_overrides(variant, seed, max_steps, seed_graphs))


def test_steps_are_the_only_budget_and_references_are_not_evaluated():
    cfg = config("random", seed=2)
    s = cfg["search"]
    assert (s["algorithm"], s["max_steps"], s["max_evaluations"], s["max_time"]) == ("random", 5000, 0, 0)
    assert s["references"] == [] and s["seeds"] == [] and cfg["seed"] == 2
    assert config("evolution", seed_graphs=["evonorm_s0"])["search"]["seeds"] == ["evonorm_s0"]


def test_only_the_ablation_switches_the_rejection_protocols_off():
    base = load_config(QUICK)
    evolution, ablation = config("evolution"), config("evolution_no_rejection")
    for check in ("prefilter", "quality", "stability"):
        assert evolution[check]["enabled"] == base[check]["enabled"]
        assert not ablation[check]["enabled"]
    assert ablation["search"]["algorithm"] == "evolution"


def test_bad_variants_and_budgets_are_refused():
    with pytest.raises(ValueError, match="unknown variant 'annealing'"):
        run_overrides("annealing", 0, 100, ())
    with pytest.raises(ValueError, match="must be positive, got 0"):
        run_overrides("random", 0, 0, ())


def test_a_resumed_run_may_change_its_budget_but_not_its_training():
    saved = config("evolution", max_steps=5000)
    assert changed_keys(saved, config("evolution", max_steps=9000)) == []
    assert changed_keys(saved, load_config(QUICK, [*run_overrides("evolution", 0, 5000, ()), "train.steps=50"])) \
        == ["train.steps"]
    assert changed_keys(saved, config("random")) == ["search.algorithm"]


def test_best_so_far_holds_its_value_between_results_and_starts_at_chance():
    xs, best = [0, 0, 100, 250, 400], [None, None, 0.3, 0.3, 0.45]
    assert best_at(xs, best, [0, 50, 100, 399, 400, 1000]) == [CHANCE, CHANCE, 0.3, 0.3, 0.45, 0.45]
    assert best_at([10], [0.05], [20]) == [CHANCE], "never drawn below chance"
    assert best_at([], [], [0, 10]) == [CHANCE, CHANCE]


def test_band_spans_the_seeds_up_to_the_shortest_run_or_the_budget():
    runs = [([0, 100, 200], [None, 0.2, 0.4]), ([0, 50, 300], [0.3, 0.3, 0.5])]
    grid, mean, low, high = band(runs, points=5)
    assert grid == [0, 50, 100, 150, 200]
    assert low == [CHANCE, CHANCE, 0.2, 0.2, 0.3] and high == [0.3, 0.3, 0.3, 0.3, 0.4]
    assert mean == pytest.approx([0.2, 0.2, 0.25, 0.25, 0.35])
    assert band(runs, end=100, points=3)[0] == [0, 50, 100]
