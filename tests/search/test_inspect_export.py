"""search.inspect and search.export on a real journal written by a fake-evaluator run."""
import json
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest

from search import open_run, run
from search.journal import CandidateRow
from search.leaderboard import leaderboard, pareto_ranks, places
from tests.search.fakes import FakeEvaluator, small_config

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "evo"
    cfg = small_config("search.max_evaluations=40")
    run(cfg, out, evaluator_factory=lambda c: FakeEvaluator(c))
    return out


def test_pareto_ranks_sort_fronts():
    fitness = [{"a": 0.5, "b": 0.5}, {"a": 0.6, "b": 0.4}, {"a": 0.4, "b": 0.4}, {"a": 0.3, "b": 0.3}]
    assert pareto_ranks(fitness) == [1, 1, 2, 3]


def test_leaderboard_orders_by_front_then_mean(run_dir):
    with open_run(run_dir) as view:
        entries = leaderboard(view.candidates())
        rows = view.candidates()
    assert entries, "the fake run should pass some candidates"
    keys = [(e.pareto_rank, -e.row.mean_fitness) for e in entries]
    assert keys == sorted(keys) and [e.rank for e in entries] == list(range(1, len(entries) + 1))
    assert all(e.row.status == "ok" for e in entries)
    duplicates = sum(1 for r in rows if r.status == "duplicate" and r.duplicate_of is not None
                     and any(e.row.id == r.duplicate_of for e in entries))
    assert sum(e.found - 1 for e in entries) == duplicates


def cli(*args, check=True):
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_inspect_json_table_plots_and_report(run_dir):
    out = json.loads(cli("-m", "search.inspect", str(run_dir), "--top", "5", "--json").stdout)
    assert 1 <= len(out["top"]) <= 5
    for key in ("rank", "hash", "formula", "fitness", "status"):
        assert key in out["top"][0]
    assert out["summary"]["evaluated"] > 0
    text = cli("-m", "search.inspect", str(run_dir), "--top", "3", "--plots").stdout
    assert "rank" in text and "formula" in text and "evaluations/hour" in text
    plots = run_dir / "plots"
    assert (plots / "progress.png").stat().st_size > 5000 and (plots / "pareto.png").stat().st_size > 5000
    assert (plots / "graph_1.png").is_file()
    report = (run_dir / "report.md").read_text()
    assert "![Search progress](plots/progress.png)" in report and "| rank |" in report


def test_ranks_count_search_candidates_and_references_get_their_place(tmp_path):
    out = tmp_path / "refs"
    run(small_config("search.max_evaluations=20", "model.groups=8"), out,  # groups 8: both references pass
        evaluator_factory=lambda c: FakeEvaluator(c))
    with open_run(out) as view:
        rows = view.candidates()
    board = leaderboard(rows)
    assert board and not any(e.row.is_reference for e in board)
    assert [e.rank for e in board] == list(range(1, len(board) + 1))
    ranked = places(rows)
    assert {r.name for r in rows if r.id in ranked} == {"bn_relu", "evonorm_s0"}
    for place in ranked.values():
        n, m = map(int, place.split(" of "))
        assert m == len(board) + 1 and 1 <= n <= m
    cli("-m", "search.inspect", str(out), "--top", "1", "--plots")
    references = (out / "report.md").read_text().split("## References")[1].split("##")[0]
    for row in rows:
        if row.id in ranked:
            line = next(line for line in references.splitlines() if line.startswith(f"| {row.name} |"))
            assert line.endswith(f"| {ranked[row.id]} |")


def test_a_reference_s_place_is_where_it_would_sit_among_the_candidates():
    row = CandidateRow(id=1, role="child", name=None, graph_yaml=None, formula="x", structural_hash=None,
                       fingerprint=None, batch_dependent=False, parent_id=None, duplicate_of=None, status="ok",
                       reason=None, detail=None, fitness={"a": 0.5}, test_accuracy=None, steps=1, eval_seed=1,
                       attempts=1, worker="w", wall_time=1.0, proposed_at=1.0, started_at=1.0, finished_at=1.0,
                       told_seq=1)
    rows = [replace(row, id=1, role="reference", name="best", fitness={"a": 0.9}),
            replace(row, id=2, role="reference", name="worst", fitness={"a": 0.1}),
            replace(row, id=3, fitness={"a": 0.5}), replace(row, id=4, fitness={"a": 0.6}),
            replace(row, id=5, role="reference", name="middle", fitness={"a": 0.55})]
    assert [e.row.id for e in leaderboard(rows)] == [4, 3]
    assert places(rows) == {1: "1 of 3", 2: "3 of 3", 5: "2 of 3"}  # each reference alone among the candidates


def test_inspect_refuses_a_directory_without_a_journal(tmp_path):
    result = cli("-m", "search.inspect", str(tmp_path), check=False)
    assert result.returncode == 2 and "no journal" in result.stderr


CHECK = textwrap.dedent('''
    import importlib.util, sys, warnings
    import torch
    from primitives import compile_graph, load_graph
    path, name, graph_file = sys.argv[1:4]
    spec = importlib.util.spec_from_file_location("exported", path)
    module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
    cls = getattr(module, name)
    graph = load_graph(graph_file)
    exported, compiled = cls(24, groups=8), compile_graph(graph, 24, groups=8)
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.rand(v.shape, generator=gen) + 0.5 for k, v in compiled.state_dict().items()}
    exported.load_state_dict(state); compiled.load_state_dict(state)
    x = torch.randn(4, 24, 5, 5, generator=gen)
    for train in (True, False):
        exported.train(train); compiled.train(train)
        torch.testing.assert_close(exported(x), compiled(x), rtol=0, atol=0, equal_nan=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(exported)
    torch.testing.assert_close(scripted(x), compiled(x), equal_nan=True)
    if torch.isfinite(compiled(x)).all():
        try:
            import onnxruntime
        except ImportError:
            onnxruntime = None
        if onnxruntime is not None:
            onnx_path = path + ".onnx"
            torch.onnx.export(exported, (x,), onnx_path, dynamo=True, verbose=False)
            session = onnxruntime.InferenceSession(onnx_path)
            (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
            torch.testing.assert_close(torch.from_numpy(out), compiled(x), rtol=1e-4, atol=1e-5)
    print("ok")
''')


def check_in_fresh_process(tmp_path, py_file, class_name, graph):
    from primitives import save_graph
    graph_file = tmp_path / "graph.yaml"
    save_graph(graph, graph_file)
    check = tmp_path / "check.py"
    check.write_text(CHECK)
    assert cli(str(check), str(py_file), class_name, str(graph_file)).stdout.strip().endswith("ok")


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_export_by_rank_reproduces_the_journal_graph(run_dir, tmp_path, rank):
    with open_run(run_dir) as view:
        entries = leaderboard(view.candidates())
    if rank > len(entries):
        pytest.fail(f"the fake run passed only {len(entries)} candidates")
    entry = entries[rank - 1]
    out = tmp_path / f"layer{rank}.py"
    cli("-m", "search.export", str(run_dir), "--rank", str(rank), "--out", str(out), "--name", "Found")
    check_in_fresh_process(tmp_path, out, "Found", entry.row.graph)


def test_export_by_hash_and_bad_choices(run_dir, tmp_path):
    with open_run(run_dir) as view:
        entry = next(e for e in leaderboard(view.candidates()) if e.row.graph is not None)
    out = tmp_path / "by_hash.py"
    cli("-m", "search.export", str(run_dir), "--hash", entry.row.structural_hash[:10], "--out", str(out))
    assert entry.row.formula in out.read_text()
    bad = cli("-m", "search.export", str(run_dir), "--rank", "999", "--out", str(out), check=False)
    assert bad.returncode == 2 and "rank 999 is out of range" in bad.stderr
    bad = cli("-m", "search.export", str(run_dir), "--hash", "zzzz", "--out", str(out), check=False)
    assert bad.returncode == 2 and "no passed candidates" in bad.stderr


@pytest.mark.parametrize("seed", ["evonorm_s0", "evonorm_b0"])
def test_exported_seed_matches_the_hand_written_layer(seed, tmp_path):
    out = tmp_path / f"{seed}.py"
    cli("-m", "search.export", "--graph", seed, "--out", str(out))
    script = tmp_path / "vs_layer.py"
    script.write_text(textwrap.dedent(f'''
        import importlib.util, torch, evonorm
        spec = importlib.util.spec_from_file_location("m", "{out}")
        m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
        name = "{seed}"
        hand = evonorm.EvoNorm2dS0(16, groups=8) if name.endswith("s0") else evonorm.EvoNorm2dB0(16)
        ours = getattr(m, "EvoNorm" + name[-2:].upper())(16, groups=8)
        gen = torch.Generator().manual_seed(1)
        state = {{k: torch.rand(v.shape, generator=gen) + 0.5 for k, v in hand.state_dict().items()}}
        hand.load_state_dict(state); ours.load_state_dict({{("v1" if k == "v" else k): v for k, v in state.items()}})
        x = torch.randn(4, 16, 6, 6, generator=gen)
        for train in (True, False):
            hand.train(train); ours.train(train)
            torch.testing.assert_close(ours(x), hand(x), rtol=1e-5, atol=1e-6)
        print("ok")
    '''))
    assert cli(str(script)).stdout.strip() == "ok"
