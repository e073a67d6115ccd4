"""bench/search_space.py and bench/quick_runs.py on small inputs."""
import csv

import search
from bench import quick_runs, search_space
from tests.search.fakes import FakeEvaluator, small_config


def test_search_space_counts_classes_for_both_priors_and_operators(tmp_path):
    assert search_space.main(["--samples", "40", "--nodes", "8", "--out", str(tmp_path)]) == 0
    rows = {r["what"]: r for r in csv.DictReader(open(tmp_path / "search_space.csv"))}
    assert set(rows) == {"prior: uniform", "prior: structural", "mutation: structural", "mutation: paper"}
    assert float(rows["prior: structural"]["viable"]) == 1.0 > float(rows["prior: uniform"]["viable"])
    shares = [float(rows["prior: uniform"][c]) for c in search_space.LAYER_CLASSES]
    assert abs(sum(shares) - 1) < 1e-9
    assert float(rows["mutation: paper"]["neutral"]) > float(rows["mutation: structural"]["neutral"])


def test_quick_runs_reads_a_runs_funnel(tmp_path):
    cfg = small_config("search.max_evaluations=12")
    search.run(cfg, tmp_path / "run", evaluator_factory=lambda c: FakeEvaluator(cfg))
    row = quick_runs.funnel(str(tmp_path / "run"))
    assert row["evaluated"] == 12 >= row["distinct_fingerprints"] >= row["past_quality"] >= row["completed"] > 0
    assert row["wall_s"] >= 0 and row["best_class"] in search_space.LAYER_CLASSES
    assert quick_runs.main([str(tmp_path / "run"), "--csv", str(tmp_path / "q.csv")]) == 0
    assert len(list(csv.DictReader(open(tmp_path / "q.csv")))) == 1
