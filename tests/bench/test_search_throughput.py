"""bench/search_throughput.py: two versions' searches at the same time, counted from their journals."""
from __future__ import annotations

import pytest

import search_throughput
from tests.bench.test_commit_bench import TINY, _has_git_history


def test_the_table_totals_the_seeds_and_gives_head_over_base():
    rows = [{"seed": s, "role": role, "version": role, "evaluated": n, "trained": n - 4, "past_quality": n // 2,
             "completed": 1, "wall_s": 480, **{f"s_{o}": 48.0 for o in search_throughput.OUTCOMES},
             "steps": 100 * n}
            for s, role, n in ((0, "base", 10), (0, "head", 15), (1, "base", 20), (1, "head", 20))]
    text = search_throughput.table(rows)
    assert "| 0 | 10 | 15 | 1.50 | 6 | 11 | 1.83 | 5 | 7 | 1 | 1 |" in text
    assert "| 1 | 20 | 20 | 1.00 | 16 | 16 | 1.00 |" in text
    assert "| all | 30 | 35 | 1.17 | 22 | 27 | 1.23 | 15 | 17 | 2 | 2 |" in text
    assert "| head | 96 (10%) | 96 (10%) |" in text
    assert "| base | 3000 | 480 | 6.2 |" in text and "| head | 3500 | 480 | 7.3 |" in text  # 5 outcomes x 48 s x 2
    assert "| head / base | | | 1.17 |" in text


@pytest.mark.skipif(not _has_git_history(), reason="needs the repository's git history")
def test_head_commit_against_the_working_tree(tmp_path):
    args = ["--base", "HEAD", "--head", "WORKTREE", "--seeds", "3", "--runs", str(tmp_path / "runs"),
            "--out", str(tmp_path), "--name", "st"]
    for item in TINY + ["executor.kind=serial", "search.max_evaluations=2", "search.references=[]"]:
        args += ["--set", item]
    text = search_throughput.main(args)
    rows = (tmp_path / "st.csv").read_text().splitlines()
    assert rows[0] == ",".join(search_throughput.FIELDS) and len(rows) == 1 + 2
    assert [line.split(",")[:2] for line in rows[1:]] == [["3", "base"], ["3", "head"]]
    assert all(0 < int(line.split(",")[3]) <= 2 for line in rows[1:])  # each evaluated its two candidates
    assert all(float(line.split(",")[8]) == 0.0 for line in rows[1:])  # no references asked for
    assert "| all |" in text and (tmp_path / "runs" / "head-seed3").is_dir()
    (tmp_path / "st.csv").unlink()
    assert search_throughput.main(args + ["--recount"]) == text  # the same journals, counted again
    assert (tmp_path / "st.csv").read_text().splitlines() == rows
