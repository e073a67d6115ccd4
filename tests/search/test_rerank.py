"""search.rerank on a tiny run: a fake-evaluator search, then real retraining on synthetic data, serially."""
import contextlib
import csv
import io
import math

import pytest

from evaluator.evaluate import EvalRecord, Evaluator
from primitives import graph_from_yaml
from search import inspect, open_run, run
from search.leaderboard import leaderboard
from search.leaderboard import kendall, spearman
from search.rerank import RerankError, main, rerank, rerank_config, rerank_seeds
from tests.search.fakes import FakeEvaluator, tiny_real_config

STEPS = 12


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*map(str, args), "--quiet"])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished search whose fitness is fake (instant), over graphs the real evaluator then retrains."""
    out = tmp_path_factory.mktemp("runs") / "evo"
    run(tiny_real_config("search.max_evaluations=8"), out, evaluator_factory=lambda c: FakeEvaluator(c))
    return out


@pytest.fixture(scope="module")
def reranked(run_dir):
    """The command line's stdout and the CSV rows of ``--top 2 --seeds 2``, serially."""
    code, stdout, stderr = cli(run_dir, "--top", 2, "--seeds", 2, "--steps", STEPS, "--workers", 0)
    assert code == 0, stderr
    with open(run_dir / "rerank.csv") as f:
        return stdout, list(csv.DictReader(f))


def test_retrains_the_top_candidates_and_the_references_with_each_seed(run_dir, reranked):
    _, rows = reranked
    with open_run(run_dir) as view:
        top = [e.row.id for e in leaderboard(view.candidates())][:2]
        references = sorted(r.id for r in view.references().values())
        seed = view.config["seed"]
    assert sorted({int(r["candidate_id"]) for r in rows}) == sorted(top + references)
    assert len(rows) == (2 + len(references)) * 2 * 2  # candidates x seeds x archs
    assert {int(r["seed"]) for r in rows} == set(rerank_seeds(seed, 2)) and len(set(rerank_seeds(seed, 2))) == 2
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok and all(0.0 <= float(r["test_accuracy"]) <= 1.0 for r in ok)
    by_seed = {}
    for r in ok:
        by_seed.setdefault((r["candidate_id"], r["arch"]), set()).add(r["test_accuracy"])
    assert any(len(accs) == 2 for accs in by_seed.values()), "two seeds should not train identically"
    assert {int(r["steps"]) for r in ok} == {2 * STEPS}


def test_new_ranks_count_search_candidates_and_place_the_references(reranked):
    _, rows = reranked
    ranks = {int(r["rank"]) for r in rows if r["role"] != "reference" and r["rank"]}  # "": no trial completed
    assert ranks and ranks == set(range(1, len(ranks) + 1))
    for r in rows:
        if r["role"] == "reference" and r["rank"]:
            n, m = map(int, r["rank"].split(" of "))
            assert m == len(ranks) + 1 and 1 <= n <= m and r["search_rank"] == ""


def test_a_csv_value_is_what_the_evaluator_gives_directly(run_dir, reranked):
    _, rows = reranked
    row = next(r for r in rows if r["status"] == "ok" and r["role"] != "reference" and r["seed_index"] == "1")
    with open_run(run_dir) as view:
        graph = graph_from_yaml(next(c for c in view.candidates() if c.id == int(row["candidate_id"])).graph_yaml)
    cfg = rerank_config(run_dir, STEPS, workers=0)
    assert cfg["data"]["val_size"] == 0 and cfg["train"]["test"] and not cfg["quality"]["enabled"]
    record = Evaluator(cfg).evaluate(graph, int(row["seed"]))
    assert record.fitness == {}
    assert record.test_accuracy[row["arch"]] == pytest.approx(float(row["test_accuracy"]), abs=1e-12)


def test_table_markdown_plot_and_report_section(run_dir, reranked):
    stdout, _ = reranked
    assert "search rank" in stdout and "test mean" in stdout and "Spearman" in stdout
    section = (run_dir / "rerank.md").read_text()
    assert section.startswith("## Re-ranking") and "| rank | search rank | id |" in section
    assert "![Re-ranking](plots/rerank.png)" in section and " ± " in section
    assert (run_dir / "plots" / "rerank.png").stat().st_size > 5000
    assert section.strip() in (run_dir / "report.md").read_text()
    assert inspect.main([str(run_dir), "--top", "2", "--plots"]) == 0  # inspect rewrites the report...
    report = (run_dir / "report.md").read_text()
    assert section.strip() in report and "![Search progress](plots/progress.png)" in report  # ...keeping it


def test_spearman_matches_the_textbook_values():
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 - 6 * 2 / (4 * 15)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(3 / math.sqrt(10))  # ties: average ranks
    assert spearman([3, 2, 1], [0.1, 0.5, 0.9]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_kendall_tau_b_by_hand():
    assert kendall([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)  # one discordant pair of six
    assert kendall([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(5 * 6))  # a tie in x
    assert kendall([4, 3, 2, 1], [1, 2, 3, 4]) == -1.0 and kendall([1, 1], [1, 2]) is None
    with pytest.raises(ValueError, match="paired"):
        kendall([1, 2], [1])


def test_errors_exit_2_with_the_reason(run_dir, tmp_path):
    code, _, err = cli(tmp_path)
    assert code == 2 and "no journal" in err
    code, _, err = cli(run_dir, "--workers", 0, "--set", "train.stepz=5")
    assert code == 2 and "'train.stepz'" in err and "--set train.stepz=5" in err
    with pytest.raises(RerankError, match="seeds must be at least 1"):
        rerank(run_dir, seeds=0)


class _RejectAll(FakeEvaluator):
    def evaluate(self, layer, seed):
        return EvalRecord.for_reason("quality", "rejected by the test")


def test_a_run_without_passed_candidates_is_refused(tmp_path):
    out = tmp_path / "evo"
    run(tiny_real_config("search.max_evaluations=3"), out, evaluator_factory=_RejectAll)
    code, _, err = cli(out, "--workers", 0)
    assert code == 2 and "no search candidate" in err and not (out / "rerank.csv").exists()


def test_an_override_that_asks_for_validation_accuracy_is_refused_before_any_worker_starts(tmp_path):
    from search.rerank import rerank_config
    from search.config import ConfigError as SearchConfigError
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("data: {synthetic: true}\n")
    with pytest.raises(SearchConfigError, match="val_size is 0"):
        rerank_config(run_dir, overrides=["quality.enabled=true"])
