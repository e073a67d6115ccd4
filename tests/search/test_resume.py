"""``kill -9`` of a serial run at several points, then resume: the journal ends as an uninterrupted run's,
with progressive hurdles too (then once more between two stages of one candidate)."""
import os
import signal
import subprocess
import sys
import time

import pytest

import search
from search.journal import Journal, JournalError
from tests.conftest import REPO
from tests.search.fakes import FakeEvaluator, journal_table, small_config

CONFIG = ("search.max_evaluations=40",)
SCRIPT = """
import functools, sys
import search
from tests.search.fakes import FakeEvaluator, small_config
factory = functools.partial(FakeEvaluator, sleep=0.01, noise=0.2)
if sys.argv[1] == "run":
    search.run(small_config(*sys.argv[3:]), sys.argv[2], evaluator_factory=factory)
else:
    search.resume(sys.argv[2], evaluator_factory=factory)
"""


def _start(*args):
    return subprocess.Popen([sys.executable, "-c", SCRIPT, *map(str, args)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _reached(run_dir, rows: int, in_flight: bool, between_stages: bool = False) -> bool:
    try:
        with Journal.open(run_dir, readonly=True) as journal:
            found = journal.rows()
            staged = {s.candidate_id for s in journal.stages() if s.advanced}
    except JournalError:  # not created yet
        return False
    if between_stages:  # a candidate that cleared a hurdle is training its next stage
        return len(found) >= rows and any(r.status == "running" and r.id in staged for r in found)
    return len(found) >= rows and (not in_flight or found[-1].status == "running")


def _kill_when(proc, run_dir, rows: int, in_flight: bool = True, between_stages: bool = False) -> None:
    """SIGKILL the run once the journal holds ``rows`` rows (and, with ``in_flight``, its last is running;
    with ``between_stages``, a candidate is between two of its stages)."""
    deadline = time.monotonic() + 90
    while not _reached(run_dir, rows, in_flight, between_stages):
        assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("hurdles", [(), ("search.stages=3",)], ids=["plain", "hurdles"])
def test_kill_9_at_several_points_then_resume_gives_the_uninterrupted_journal(tmp_path, hurdles):
    config = (*CONFIG, *hurdles)
    straight = search.run(small_config(*config), tmp_path / "straight",
                          evaluator_factory=lambda cfg: FakeEvaluator(cfg, noise=0.2))
    run_dir = tmp_path / "killed"
    _kill_when(_start("run", run_dir, *config), run_dir, rows=2)  # during the references
    kills = [(9, True, False), (23, False, False), (37, True, False)]
    if hurdles:
        kills.insert(1, (12, False, True))
    for rows, in_flight, between_stages in kills:
        _kill_when(_start("resume", run_dir), run_dir, rows, in_flight, between_stages)
    done = _start("resume", run_dir)
    assert done.wait(timeout=120) == 0, done.stderr.read()
    assert journal_table(run_dir) == journal_table(straight.run_dir)
    sessions = search.open_run(run_dir).sessions()
    assert len(sessions) == len(kills) + 2
    assert [s.stop_reason for s in sessions] == [None] * (len(kills) + 1) + ["max_evaluations"]
    if hurdles:
        assert _stage_table(run_dir) == _stage_table(straight.run_dir) and _stage_table(run_dir)


def _stage_table(run_dir) -> list[tuple]:
    with Journal.open(run_dir, readonly=True) as journal:
        return [(s.candidate_id, s.stage, s.seed, s.record.status, s.record.fitness, s.advanced)
                for s in journal.stages()]
