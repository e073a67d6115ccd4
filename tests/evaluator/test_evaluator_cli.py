"""``python -m evaluator``: JSON records on synthetic data, and exit status 2 naming a bad key and its file."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from evaluator.__main__ import main
from evonorm import seeds
from primitives import save_graph

REPO = Path(__file__).resolve().parents[2]
TINY = ["data.synthetic=true", "data.synthetic_size=200", "data.val_size=40", "model.archs=[resnet]",
        "model.resnet.width=0.25", "model.resnet.depth=0.33", "model.resnet.stem_stride=2", "train.steps=4",
        "train.batch_size=16", "quality.enabled=false", "stability.ascent_steps=1", "stability.batch_size=8"]
SETS = [a for item in TINY for a in ("--set", item)]


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    status = main([*SETS, *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_python_m_evaluator_prints_a_json_record():
    done = subprocess.run([sys.executable, "-m", "evaluator", *SETS, "--graph", "evonorm_s0", "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["status"] == "ok" and set(record["fitness"]) == {"resnet"} and record["steps"] == 4


def test_graph_yaml_file_and_a_config_with_another_program_s_section(tmp_path, capsys):
    path = tmp_path / "s1.yaml"
    save_graph(seeds.get("evonorm_s1"), path)
    config = tmp_path / "cfg.yaml"
    config.write_text("search: {population: 4}\ntrain: {steps: 3}\n")
    status, out, err = run_main(capsys, "--config", str(config), "--graph", str(path), "--json",
                                "--set", "train.steps=2")
    assert status == 0, err
    assert json.loads(out)["steps"] == 2


def test_plain_text_record(capsys):
    status, out, _ = run_main(capsys, "--graph", "bn_relu")
    assert status == 0 and "status:" in out and "fitness:" in out and "bn_relu" in out


def test_bad_key_in_a_file_exits_2_naming_key_and_file(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  stpes: 3\n")
    status, _, err = run_main(capsys, "--config", str(config), "--graph", "bn_relu")
    assert status == 2 and "train.stpes" in err and str(config) in err


def test_bad_override_value_exits_2(capsys):
    status, _, err = run_main(capsys, "--graph", "bn_relu", "--set", "train.device=tpu")
    assert status == 2 and "train.device" in err


def test_unknown_graph_exits_2(capsys):
    status, _, err = run_main(capsys, "--graph", "evonorm_x9")
    assert status == 2 and "evonorm_s0" in err


def test_missing_data_exits_1_with_instructions(tmp_path, capsys):
    status, _, err = run_main(capsys, "--graph", "bn_relu", "--set", "data.synthetic=false",
                              "--set", f"data.root={tmp_path}")
    assert status == 1 and "data.download" in err
