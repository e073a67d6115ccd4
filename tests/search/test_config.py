"""Search configs: the shipped ones load, bad ones stop with the key and the file named (exit 2 on the CLI)."""
import subprocess
import sys

import pytest

from primitives import PAPER_OPS, S_SERIES_OPS
from search.config import ConfigError, check_resume_overrides, find_config, load_config, resolve_ops
from tests.conftest import REPO


@pytest.mark.parametrize("name", ["quick", "paper_b", "paper_s"])
def test_shipped_configs_load(name):
    cfg = load_config(find_config(name))
    assert set(cfg) >= {"search", "executor", "model", "train"}
    assert "bn_relu" in cfg["search"]["references"]


def test_paper_configs_follow_the_paper():
    b, s = load_config(find_config("paper_b")), load_config(find_config("paper_s"))
    for cfg in (b, s):
        assert len(cfg["model"]["archs"]) == 3 and 0 < cfg["executor"]["gpus_per_eval"] < 1
    assert resolve_ops(b["search"]["ops"]) == PAPER_OPS
    assert resolve_ops(s["search"]["ops"]) == S_SERIES_OPS


@pytest.mark.parametrize("name", ["quick", "paper_b", "paper_s"])
def test_shipped_configs_search_with_the_structural_generators_and_a_capped_fill(name):
    s = load_config(find_config(name))["search"]
    assert (s["prior"], s["mutation"]) == ("structural", "structural")
    # the random phase ends within half the budget, whatever the pass rate, so mutation always gets its turn
    assert 0 < s["max_initial"] <= s["max_evaluations"] / 2 and s["max_nodes"] >= s["num_nodes"]


def test_resolve_ops_expands_sets_and_drops_repeats():
    assert resolve_ops(["add", "s_series", "mul"]) == S_SERIES_OPS
    assert resolve_ops(["Mul", "add", "mul"]) == ("mul", "add")


@pytest.mark.parametrize("override, key", [
    ("search.populaton_size=3", "search.populaton_size"),
    ("search.population_size=many", "search.population_size"),
    ("search.population_size=0", "search.population_size"),
    ("search.tournament_size=30", "search.tournament_size"),
    ("search.ops=[add, frobnicate]", "search.ops"),
    ("search.references=[bn_relu, layer_norm]", "search.references"),
    ("search.algorithm=annealing", "search.algorithm"),
    ("executor.kind=threads", "executor.kind"),
    ("executor.gpus_per_eval=-1", "executor.gpus_per_eval"),
    ("search.prior=typed", "search.prior"),
    ("search.mutation=grow", "search.mutation"),
    ("search.max_initial=-1", "search.max_initial"),
    ("search.max_nodes=5", "search.max_nodes"),
])
def test_bad_values_name_the_key_and_the_file(tmp_path, override, key):
    path = tmp_path / "my.yaml"
    path.write_text("search: {population_size: 20}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, [override])
    assert f"'{key}'" in str(err.value) and str(path) in str(err.value)


def test_a_run_needs_a_budget():
    with pytest.raises(ConfigError, match="set at least one budget"):
        load_config(None, ["search.max_evaluations=0"])


def test_a_search_needs_a_validation_split_a_rerank_does_not():
    with pytest.raises(ConfigError, match="'data.val_size' is 0"):
        load_config(None, ["data.val_size=0"])
    assert load_config(None, ["data.val_size=0"], check_search=False)["data"]["val_size"] == 0


def test_resume_may_change_only_budgets_data_and_executor(tmp_path):
    check_resume_overrides(["search.max_evaluations=9", "executor.num_workers=1", "data.root=/x"], tmp_path)
    with pytest.raises(ConfigError, match="'search.population_size' cannot change"):
        check_resume_overrides(["search.population_size=9"], tmp_path)


def test_cli_exits_2_naming_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("search:\n  tournament_sise: 3\n")
    done = subprocess.run([sys.executable, str(REPO / "run_search.py"), "--config", str(path), "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "search.tournament_sise" in done.stderr and str(path) in done.stderr
    assert not (tmp_path / "run").exists()  # nothing ran
