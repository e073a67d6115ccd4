"""``search.plugins`` (imported on the driver, on every worker and by the readers of a run) and ``search.seeds``
from graph files and from a previous run's best (``RUN_DIR#topK``), read once, so that a resume stays exact."""
import functools
import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid

import pytest

import search
from primitives import LayerGraph, save_graph
from primitives.ops import OPS, unregister_op
from search.config import ConfigError, resolve_ops
from search.journal import Journal
from search.leaderboard import leaderboard
from tests.conftest import REPO
from tests.search.fakes import TINY_REAL, FakeEvaluator, journal_table, small_config

PLUGGED = ("search.plugins=[tests.plugin_ops]", "search.ops=[softsign_t, smax_t, mul, div, std_group, rms_instance]",
           "search.seeds=[]", "search.references=[bn_relu]")
ENV = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture
def plugin():
    yield importlib.import_module("tests.plugin_ops")
    sys.modules["tests.plugin_ops"].forget()


@pytest.fixture
def restore_path(monkeypatch):
    """``search.plugins`` appends the current directory to ``sys.path``; give the test's back afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))


def _run(cfg, run_dir, fake=None):
    fake = fake or FakeEvaluator(cfg)
    return search.run(cfg, run_dir, evaluator_factory=lambda c: fake)


def _plugged(rows):
    return [r for r in rows if r.formula and ("softsign_t" in r.formula or "smax_t" in r.formula)]


# --- plug-ins ---------------------------------------------------------------------------------------------

def test_plugins_are_imported_before_search_ops_is_checked(plugin):
    plugin.forget()  # not imported yet: the config must import it
    with pytest.raises(ConfigError, match=r"'search.ops' must be"):
        small_config("search.ops=[paper, softsign_t]")
    cfg = small_config("search.plugins=[tests.plugin_ops]", "search.ops=[paper, softsign_t]")
    assert "tests.plugin_ops" in sys.modules and resolve_ops(cfg["search"]["ops"])[-1] == "softsign_t"


def test_a_plugin_that_cannot_be_imported_is_a_config_error_naming_key_and_module(tmp_path, monkeypatch,
                                                                                     restore_path):
    with pytest.raises(ConfigError, match=r"'search.plugins' names 'no_such_ops_module', which cannot be imported"):
        small_config("search.plugins=[no_such_ops_module]")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clashing_ops.py").write_text(
        "import torch\nfrom primitives import register_op\nregister_op('tanh', 1, torch.tanh, 'tanh({0})')\n")
    with pytest.raises(ConfigError, match=r"'clashing_ops', whose import failed: ValueError: op name 'tanh' is a "
                                          r"built-in op"):
        small_config("search.plugins=[clashing_ops]")
    with pytest.raises(ConfigError, match="'search.plugins' must be a list of distinct module names"):
        small_config("search.plugins=['not a module']")
    sys.modules.pop("clashing_ops", None)


def test_a_serial_search_evaluates_plugin_ops_and_the_readers_import_them(plugin, tmp_path):
    cfg = small_config(*PLUGGED, "search.max_evaluations=15")
    result = _run(cfg, tmp_path / "run")
    rows = search.open_run(result.run_dir).candidates()
    plugged = [r for r in _plugged(rows) if r.duplicate_of is None]
    assert plugged and all(r.status != "failed" for r in rows)
    passed = [e.row for e in leaderboard(rows) if e.row in plugged]
    assert passed, "no candidate with a plug-in op passed; pick another run seed"
    # fresh processes, where only the run's saved config says which modules to import
    inspect = subprocess.run([sys.executable, "-m", "search.inspect", str(result.run_dir), "--json"], cwd=tmp_path,
                             env=ENV, capture_output=True, text=True, timeout=300)
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["summary"]["evaluated"] == 15
    export = subprocess.run([sys.executable, "-m", "search.export", str(result.run_dir), "--hash",
                             passed[0].structural_hash, "--out", str(tmp_path / "layer.py")], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert export.returncode == 0, export.stderr
    assert "from tests.plugin_ops import" in (tmp_path / "layer.py").read_text()
    rerank = subprocess.run([sys.executable, "-c", "import sys; from search.rerank import rerank_config; "
                             "from primitives import get_op; rerank_config(sys.argv[1]); get_op('smax_t')",
                             str(result.run_dir)], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert rerank.returncode == 0, rerank.stderr


def test_a_run_whose_plugin_is_gone_is_named_by_the_readers(plugin, tmp_path):
    result = _run(small_config(*PLUGGED, "search.max_evaluations=3"), tmp_path / "run")
    config = result.run_dir / "config.yaml"
    config.write_text(config.read_text().replace("- tests.plugin_ops", "- gone_ops_module"))
    out = subprocess.run([sys.executable, "-m", "search.inspect", str(result.run_dir)], cwd=tmp_path, env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "'search.plugins' names 'gone_ops_module'" in out.stderr


def test_ray_workers_import_a_plugin_from_the_drivers_current_directory(tmp_path, monkeypatch, restore_path,
                                                                        ray_session):
    """The Ray instance started in the repository, before the test moved to a folder only the driver knows."""
    tag = uuid.uuid4().hex[:8]
    module, op = f"cwd_ops_{tag}", f"soft_{tag}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(f"""
        import torch
        from primitives import register_op

        def soft(a):
            return a / (1 + torch.abs(a))

        register_op("{op}", 1, soft, "{op}({{0}})")
    """))
    monkeypatch.chdir(tmp_path)
    try:
        cfg = small_config("executor.kind=ray", "executor.num_workers=2", f"search.plugins=[{module}]",
                           f"search.ops=[{op}, mul, div, std_group]", "search.seeds=[]", "search.references=[]",
                           "search.max_evaluations=10")
        result = search.run(cfg, tmp_path / "run", evaluator_factory=functools.partial(FakeEvaluator, sleep=0.02))
        rows = search.open_run(result.run_dir).candidates()
    finally:
        if op in OPS:
            unregister_op(op)
        sys.modules.pop(module, None)
    evaluated = [r for r in rows if r.duplicate_of is None]
    assert len(evaluated) == 10 and all(r.status in ("ok", "rejected") for r in evaluated)
    assert sum(op in r.formula for r in evaluated) >= 5  # the workers parsed and fingerprinted the plug-in op
    assert len({r.worker for r in evaluated}) == 2 and not any(r.worker.startswith("serial") for r in evaluated)


# --- seeds --------------------------------------------------------------------------------------------------

def _graph(name=None):
    """x * tanh(v1 * x) / std_group(x), with a dead node (a seed keeps its genotype)."""
    return LayerGraph.from_nodes([("a", "mul", ("v1", "x")), ("dead", "exp", ("x",)), ("b", "tanh", ("a",)),
                                  ("c", "mul", ("x", "b")), ("d", "std_group", ("x",)), ("out", "div", ("c", "d"))],
                                 name=name)


def test_seeds_from_graph_files_are_read_into_the_config(tmp_path):
    save_graph(_graph("my_tanh"), tmp_path / "named.yaml")
    save_graph(_graph(), tmp_path / "unnamed.yaml")
    cfg = small_config(f"search.seeds=[{tmp_path / 'named.yaml'}, evonorm_s0, {tmp_path / 'unnamed.yaml'}]",
                       "search.max_evaluations=5")
    seeds = cfg["search"]["seeds"]
    assert seeds[1] == "evonorm_s0" and [s["name"] for s in (seeds[0], seeds[2])] == ["my_tanh", "unnamed"]
    assert seeds[0]["nodes"][1] == {"id": "dead", "op": "exp", "inputs": ["x"]}
    result = _run(cfg, tmp_path / "run")
    rows = [r for r in search.open_run(result.run_dir).candidates() if r.role == "seed"]
    assert [r.name for r in rows] == ["my_tanh", "evonorm_s0", "unnamed"]
    assert rows[0].graph.rows() == _graph().rows()
    assert search.open_run(result.run_dir).config["search"]["seeds"] == seeds


def test_seeds_from_a_previous_runs_best(tmp_path):
    source = _run(small_config("search.max_evaluations=15"), tmp_path / "source")
    best = leaderboard(search.open_run(source.run_dir).candidates(), top=2)
    cfg = small_config(f"search.seeds=[{source.run_dir}#top2]", "search.max_evaluations=4")
    assert [s["name"] for s in cfg["search"]["seeds"]] == [f"{source.run_dir}#1", f"{source.run_dir}#2"]
    result = _run(cfg, tmp_path / "run")
    seeds = [r for r in search.open_run(result.run_dir).candidates() if r.role == "seed"]
    assert [r.structural_hash for r in seeds] == [e.row.structural_hash for e in best]
    assert [r.graph.rows() for r in seeds] == [e.row.graph.rows() for e in best]


@pytest.mark.parametrize("entry, message", [
    ("{tmp}/missing.yaml", r"'search.seeds\[0\]' '.*missing.yaml' is neither a built-in seed graph .* nor a graph file"),
    ("evonorm_s9", r"'evonorm_s9' is neither a built-in seed graph \(evonorm_b0, .*\) nor a graph file"),
    ("{tmp}/bad.yaml", r"'search.seeds\[0\]': .*bad.yaml: node 'n1': unknown op 'nope'"),
    ("{tmp}/empty#top2", r"'.*empty#top2': no journal at .*empty/search.sqlite; is .* a run directory"),
    ("{run}#top0", r"K in RUN_DIR#topK must be a positive integer, got '0'"),
    ("{run}#topx", r"K in RUN_DIR#topK must be a positive integer, got 'x'"),
    ("{run}#best", r"'.*#best' is not a file; a previous run's best are named RUN_DIR#topK"),
    ("{run}#top999", r"the run has \d+ search candidate\(s\) that passed every check, fewer than the 999 asked"),
], ids=["missing-file", "unknown-name", "malformed-graph", "no-journal", "k-zero", "k-not-a-number", "not-topk",
        "fewer-than-k"])
def test_a_bad_seed_entry_is_named(tmp_path, entry, message):
    (tmp_path / "bad.yaml").write_text("nodes:\n- {id: n1, op: nope, inputs: [x]}\n")
    (tmp_path / "empty").mkdir()
    run = tmp_path / "run"
    if "{run}" in entry:
        _run(small_config("search.max_evaluations=6"), run)
    with pytest.raises(ConfigError, match=message):
        small_config(f"search.seeds=['{entry.format(tmp=tmp_path, run=run)}']")


def test_a_runs_plugin_ops_need_its_plugins(plugin, tmp_path):
    source = _run(small_config(*PLUGGED, "search.max_evaluations=15"), tmp_path / "source")
    ranked = leaderboard(search.open_run(source.run_dir).candidates())
    k = 1 + next(i for i, e in enumerate(ranked) if e.row in _plugged([e.row for e in ranked]))
    with pytest.raises(ConfigError, match=r"plug-in op\(s\) .* add \['tests.plugin_ops'\] to search.plugins"):
        small_config(f"search.seeds=[{source.run_dir}#top{k}]")
    cfg = small_config("search.plugins=[tests.plugin_ops]", f"search.seeds=[{source.run_dir}#top{k}]")
    assert len(cfg["search"]["seeds"]) == k


def test_resume_gets_the_seeds_the_run_started_with_after_their_files_are_gone(tmp_path):
    source = _run(small_config("search.max_evaluations=12"), tmp_path / "source")
    save_graph(_graph("from_file"), tmp_path / "seed.yaml")
    cfg = (f"search.seeds=[{tmp_path / 'seed.yaml'}, {source.run_dir}#top2, evonorm_s0]", "search.max_evaluations=20")
    straight = _run(small_config(*cfg), tmp_path / "straight")
    # references 1 and 2, the file's seed, then Ctrl-C while the run's best is evaluated: two seeds not proposed
    with pytest.raises(KeyboardInterrupt):
        _run(small_config(*cfg), tmp_path / "cut", FakeEvaluator(small_config(*cfg), interrupt_at=4))
    cut_rows = search.open_run(tmp_path / "cut").candidates()
    assert [r.role for r in cut_rows] == ["reference", "reference", "seed", "seed"]
    (tmp_path / "seed.yaml").unlink()
    shutil.rmtree(source.run_dir)
    resumed = search.resume(tmp_path / "cut", evaluator_factory=lambda c: FakeEvaluator(c))
    assert resumed.stop_reason == "max_evaluations"
    assert journal_table(straight.run_dir) == journal_table(tmp_path / "cut")
    seeds = [r.name for r in search.open_run(tmp_path / "cut").candidates() if r.role == "seed"]
    assert seeds == ["from_file", f"{source.run_dir}#1", f"{source.run_dir}#2", "evonorm_s0"]


# --- the command line, as a user types it ---------------------------------------------------------------------

def test_the_command_line_with_a_plugin_module_and_a_seed_file_in_the_current_directory(tmp_path):
    for name in ("run_search.py", "configs"):
        (tmp_path / name).symlink_to(REPO / name)
    (tmp_path / "my_ops.py").write_text(textwrap.dedent("""
        import torch
        from primitives import register_op

        def softsign(a):
            return a / (1 + torch.abs(a))

        register_op("softsign", 1, softsign, "softsign({0})")
    """))
    (tmp_path / "my_graph.yaml").write_text(textwrap.dedent("""
        name: soft_s0
        nodes:
        - {id: n1, op: mul, inputs: [v1, x]}
        - {id: n2, op: softsign, inputs: [n1]}
        - {id: n3, op: mul, inputs: [x, n2]}
        - {id: n4, op: std_group, inputs: [x]}
        - {id: n5, op: div, inputs: [n3, n4]}
    """))
    tiny = [*TINY_REAL, "search.max_evaluations=3", "search.population_size=3", "search.tournament_size=2",
            "search.max_initial=3", "search.ops=[paper, softsign]", "executor.num_workers=2"]
    sets = [item for kv in tiny for item in ("--set", kv)]
    cmd = [sys.executable, "run_search.py", "--config", "configs/quick.yaml", "--set", "search.plugins=[my_ops]",
           "--set", "search.seeds=[my_graph.yaml]", "--out", "runs/p", "--quiet", *sets]
    env = {**ENV, "PYTHONPATH": ""}  # run_search.py finds the package beside itself, my_ops only in the cwd
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    with Journal.open(tmp_path / "runs" / "p", readonly=True) as journal:
        rows = journal.rows()
    seed = next(r for r in rows if r.role == "seed")
    assert seed.name == "soft_s0" and seed.status == "ok" and not seed.worker.startswith("serial")
    assert all(r.status != "failed" for r in rows)
    (tmp_path / "my_graph.yaml").unlink()  # the run holds its seed: the resume does not read the file
    more = [sys.executable, "run_search.py", "--resume", "runs/p", "--quiet", "--set", "search.max_evaluations=4",
            "--set", "executor.kind=serial"]
    out = subprocess.run(more, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    export = [sys.executable, "-m", "search.export", "runs/p", "--hash", seed.structural_hash, "--out", "soft.py"]
    out = subprocess.run(export, cwd=tmp_path, env={**ENV}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "from my_ops import softsign as _op_softsign" in (tmp_path / "soft.py").read_text()
