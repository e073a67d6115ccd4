"""bench/commit_bench.py: two code versions in alternating subprocesses, on a tiny synthetic config."""
from __future__ import annotations

import csv
import subprocess

import pytest

import commit_bench

TINY = ["data.synthetic=true", "data.synthetic_size=200", "data.val_size=40", "model.archs=[resnet]",
        "model.groups=4", "model.resnet.width=0.25", "model.resnet.depth=0.33", "model.resnet.stem_stride=2",
        "train.steps=2", "train.batch_size=16", "quality.steps=0.5", "quality.min_accuracy=0.0",
        "stability.batch_size=8", "stability.ascent_steps=1"]


def _has_git_history() -> bool:
    try:
        subprocess.run(["git", "-C", str(commit_bench.REPO), "rev-parse", "--verify", "HEAD^{commit}"],
                       check=True, capture_output=True)
        return True
    except (OSError, subprocess.CalledProcessError):
        return False


@pytest.mark.skipif(not _has_git_history(), reason="needs the repository's git history")
def test_head_commit_against_the_working_tree(tmp_path):
    args = ["--base", "HEAD", "--head", "WORKTREE", "--rounds", "1", "--layers", "bn_relu", "--no-warmup",
            "--out", str(tmp_path), "--name", "cb"]
    for item in TINY:
        args += ["--set", item]
    commit_bench.CACHE = tmp_path / "trees"
    text = commit_bench.main(args)
    assert "| bn_relu |" in text and "| all together |" in text and "head / base" in text
    rows = (tmp_path / "cb.csv").read_text().splitlines()
    assert len(rows) == 1 + 2  # one evaluation per version
    assert {line.split(",")[1] for line in rows[1:]} == {"base", "head"}
    assert (tmp_path / "trees").is_dir()  # the commit was exported there, the working tree used in place


def test_the_config_is_translated_for_an_older_evaluator():
    old = {"data": {"val_fraction": 0.1, "root": None, "augment": True}, "train": {"steps": 200},
           "quality": {"steps": 100, "min_accuracy": 0.2}, "model": {}}
    doc = {"seed": 0, "data": {"val_size": 1000, "augment": False}, "train": {"steps": 200, "channels_last": True},
           "quality": {"steps": 0.5}, "search": {"algorithm": "evolution"}}
    adapted, notes = commit_bench.adapt_config(doc, {"seed": 0, **old}, lambda: 10000)
    assert adapted["data"] == {"val_fraction": 0.1, "augment": False}
    assert adapted["quality"] == {"steps": 100}
    assert adapted["train"] == {"steps": 200}
    assert "search" not in adapted and len(notes) == 3  # val_size, quality.steps, and train.channels_last dropped
    same, notes = commit_bench.adapt_config(doc, {"seed": 0, "data": {"val_size": 0, "augment": True},
                                                  "train": {"steps": 1, "channels_last": False},
                                                  "quality": {"steps": 1.0}}, lambda: 1 / 0)
    assert same["data"] == doc["data"] and same["quality"] == {"steps": 0.5} and notes == []


def test_head_set_overrides_the_heads_config_alone(tmp_path):
    args = ["--base", "WORKTREE", "--head", "WORKTREE", "--rounds", "1", "--layers", "bn_relu", "--no-warmup",
            "--out", str(tmp_path), "--name", "cb", "--head-set", "train.steps=3"]
    for item in TINY:
        args += ["--set", item]
    text = commit_bench.main(args)
    assert "head: WORKTREE with train.steps=3" in text
    with open(tmp_path / "cb.csv") as f:
        steps = {row["role"]: int(row["steps"]) for row in csv.DictReader(f)}
    assert steps == {"base": 2, "head": 3}
