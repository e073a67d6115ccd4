"""``kill -9`` of a serial run at several points, then resume: the journal ends as an uninterrupted run's."""
import os
import signal
import subprocess
import sys
import time

import search
from search.journal import Journal, JournalError
from tests.conftest import REPO
from tests.search.fakes import FakeEvaluator, journal_table, small_config

CONFIG = ("search.max_evaluations=40",)
SCRIPT = """
import functools, sys
import search
from tests.search.fakes import FakeEvaluator, small_config
factory = functools.partial(FakeEvaluator, sleep=0.01)
if sys.argv[1] == "run":
    search.run(small_config(*sys.argv[3:]), sys.argv[2], evaluator_factory=factory)
else:
    search.resume(sys.argv[2], evaluator_factory=factory)
"""


def _start(*args):
    return subprocess.Popen([sys.executable, "-c", SCRIPT, *map(str, args)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _reached(run_dir, rows: int, in_flight: bool) -> bool:
    try:
        with Journal.open(run_dir, readonly=True) as journal:
            found = journal.rows()
    except JournalError:  # not created yet
        return False
    return len(found) >= rows and (not in_flight or found[-1].status == "running")


def _kill_when(proc, run_dir, rows: int, in_flight: bool = True) -> None:
    """SIGKILL the run once the journal holds ``rows`` rows (and, with ``in_flight``, its last is running)."""
    deadline = time.monotonic() + 90
    while not _reached(run_dir, rows, in_flight):
        assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill_9_at_several_points_then_resume_gives_the_uninterrupted_journal(tmp_path):
    straight = search.run(small_config(*CONFIG), tmp_path / "straight",
                          evaluator_factory=lambda cfg: FakeEvaluator(cfg))
    run_dir = tmp_path / "killed"
    _kill_when(_start("run", run_dir, *CONFIG), run_dir, rows=2)  # during the references
    for rows, in_flight in ((9, True), (23, False), (37, True)):
        _kill_when(_start("resume", run_dir), run_dir, rows, in_flight)
    done = _start("resume", run_dir)
    assert done.wait(timeout=120) == 0, done.stderr.read()
    assert journal_table(run_dir) == journal_table(straight.run_dir)
    sessions = search.open_run(run_dir).sessions()
    assert len(sessions) == 5 and [s.stop_reason for s in sessions] == [None] * 4 + ["max_evaluations"]
