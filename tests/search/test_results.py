"""Run summaries: wall time over sessions, killed ones included; best candidate; fitness descriptions."""
from dataclasses import replace

from search.journal import CandidateRow, Session
from search.results import best_candidate, describe_fitness, wall_time

ROW = CandidateRow(id=1, role="child", name=None, graph_yaml=None, formula="x", structural_hash=None,
                   fingerprint=None, batch_dependent=False, parent_id=None, duplicate_of=None, status="ok",
                   reason=None, detail=None, fitness={"resnet": 0.5, "mobilenetv2": 0.3}, test_accuracy=None,
                   steps=600, eval_seed=1, attempts=1, worker="w", wall_time=1.0, proposed_at=100.0,
                   started_at=101.0, finished_at=130.0, told_seq=1)


def test_a_killed_session_counts_until_its_last_event():
    rows = [ROW, replace(ROW, id=2, proposed_at=300.0, started_at=301.0, finished_at=None)]
    sessions = [Session(1, 90.0, None, None, "h"),          # killed: last event at 130
                Session(2, 290.0, 400.0, "max_time", "h")]  # ended cleanly
    assert wall_time(sessions, rows) == (130 - 90) + (400 - 290)


def test_best_skips_references_rejections_and_duplicates():
    rows = [replace(ROW, id=1, role="reference", fitness={"a": 0.9}),
            replace(ROW, id=2, fitness={"a": 0.4}),
            replace(ROW, id=3, status="rejected", reason="quality", fitness={"a": 0.8}),
            replace(ROW, id=4, status="duplicate", duplicate_of=2, fitness={"a": 0.4}),
            replace(ROW, id=5, fitness={"a": 0.5, "b": 0.25}),   # mean 0.375
            replace(ROW, id=6, fitness={"a": 0.4})]              # ties with 2: the earlier wins
    assert best_candidate(rows).id == 2
    assert best_candidate(rows[:1]) is None


def test_describe_fitness():
    assert describe_fitness(ROW) == "mean 0.400 (mobilenetv2 0.300, resnet 0.500)"
    assert describe_fitness(replace(ROW, status="rejected", reason="quality")) == "rejected (quality)"
