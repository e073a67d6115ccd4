"""A run that cannot be damaged: one driver per run, a damaged journal named with its backup, a full disk
that stops the run cleanly."""
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

import search
from search import journal as journal_module
from search.command import report_error
from search.journal import BACKUP_FILE, JOURNAL_FILE, Journal, JournalError, JournalWriteError
from search.runlock import LOCK_FILE, RunLock, RunLockedError
from tests.conftest import REPO
from tests.search.fakes import FakeEvaluator, journal_table, small_config

SCRIPT = """
import functools, sys
import search
from tests.search.fakes import FakeEvaluator, small_config
factory = functools.partial(FakeEvaluator, sleep=float(sys.argv[3]))
search.run(small_config(*sys.argv[4:]), sys.argv[2], evaluator_factory=factory)
"""


def _start(run_dir, sleep: float, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, "run", str(run_dir), str(sleep), *overrides], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for_rows(proc, run_dir, rows: int) -> None:
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, f"the run ended early: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "the run made no progress"
        try:
            with Journal.open(run_dir, readonly=True) as j:
                if len(j.rows()) >= rows:
                    return
        except JournalError:
            pass
        time.sleep(0.02)


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run_search.py", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})


def _told(run_dir) -> list[int]:
    with Journal.open(run_dir, readonly=True) as j:
        return sorted(r.told_seq for r in j.rows() if r.told_seq is not None)


# --- one driver per run ------------------------------------------------------------------------------
def test_a_second_driver_refuses_the_run_and_nothing_is_written_twice(tmp_path):
    run_dir = tmp_path / "run"
    first = _start(run_dir, 0.5, "search.max_evaluations=20")  # ~10 s: time for the second to try
    try:
        _wait_for_rows(first, run_dir, 4)
        with pytest.raises(RunLockedError, match=f"pid {first.pid} on .*, started 20"):
            search.resume(run_dir, evaluator_factory=FakeEvaluator)
        second = _cli("--resume", run_dir, "--quiet", "--set", "executor.kind=serial")
        assert second.returncode == 2 and f"pid {first.pid}" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        with pytest.raises(RunLockedError):  # a new run into the same directory too
            search.run(small_config(), run_dir, evaluator_factory=FakeEvaluator)
        assert first.wait(timeout=120) == 0, first.stderr.read()
    finally:
        first.kill()
    told = _told(run_dir)
    assert told == list(range(1, len(told) + 1))  # one teller: no result told twice, none skipped
    with Journal.open(run_dir, readonly=True) as j:
        assert len(j.sessions()) == 1 and j.sessions()[0].stop_reason == "max_evaluations"


def test_a_lock_left_by_a_killed_driver_does_not_block_the_resume(tmp_path):
    run_dir = tmp_path / "run"
    proc = _start(run_dir, 0.05, "search.max_evaluations=20")
    _wait_for_rows(proc, run_dir, 4)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert f'"pid": {proc.pid}' in (run_dir / LOCK_FILE).read_text()  # its note is still there
    result = search.resume(run_dir, evaluator_factory=FakeEvaluator)
    assert result.stop_reason == "max_evaluations"
    assert (run_dir / LOCK_FILE).read_text() == ""  # released on the way out


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).__enter__()
    with RunLock(tmp_path):  # released
        pass


def test_resume_of_a_mistyped_path_makes_no_directory(tmp_path):
    with pytest.raises(JournalError, match="no journal"):
        search.resume(tmp_path / "typo", evaluator_factory=FakeEvaluator)
    assert not (tmp_path / "typo").exists()


# --- a damaged journal ---------------------------------------------------------------------------------
def _damage(path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(bytes(range(256)) * 16)


def test_a_damaged_journal_is_named_with_its_backup_and_resumes_from_it(tmp_path):
    run_dir = tmp_path / "run"
    done = search.run(small_config("search.max_evaluations=30", "search.backup_every=7"), run_dir,
                      evaluator_factory=FakeEvaluator)
    assert done.stop_reason == "max_evaluations" and (run_dir / BACKUP_FILE).is_file()
    with Journal.open(run_dir, readonly=True) as j:
        assert [r[0] for r in j._conn.execute("PRAGMA quick_check")] == ["ok"]
    assert journal_table(run_dir) == _table_of_backup(run_dir)  # the backup at the stop holds everything
    with pytest.raises(JournalError, match="is intact: resume it without --from-backup"):
        search.resume(run_dir, evaluator_factory=FakeEvaluator, from_backup=True)
    _damage(run_dir / JOURNAL_FILE, 4096)  # page 2: the start of a table's b-tree

    with pytest.raises(JournalError, match=rf"{JOURNAL_FILE} is damaged: SQLite cannot read it .* backup"):
        Journal.open(run_dir, readonly=True)
    for command in (["-m", "search.inspect", run_dir], ["run_search.py", "--resume", run_dir]):
        out = subprocess.run([sys.executable, *map(str, command)], cwd=REPO, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 2 and "is damaged" in out.stderr and "--from-backup" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr

    more = search.resume(run_dir, ["search.max_evaluations=40"], evaluator_factory=FakeEvaluator,
                         from_backup=True)
    assert more.stop_reason == "max_evaluations" and more.summary.evaluated >= 40
    assert list(run_dir.glob(f"{JOURNAL_FILE}.damaged-*")), "the damaged file is kept"
    told = _told(run_dir)
    assert told == list(range(1, len(told) + 1))
    straight = search.run(small_config("search.max_evaluations=40"), tmp_path / "straight",
                          evaluator_factory=FakeEvaluator)
    assert journal_table(run_dir) == journal_table(straight.run_dir)


def _table_of_backup(run_dir) -> list[dict]:
    copy = run_dir.parent / "backup_copy"
    copy.mkdir()
    (copy / JOURNAL_FILE).write_bytes((run_dir / BACKUP_FILE).read_bytes())
    return journal_table(copy)


def test_a_damaged_journal_without_a_backup_says_so(tmp_path):
    path = tmp_path / JOURNAL_FILE
    path.write_bytes(os.urandom(8192))
    with pytest.raises(JournalError, match="is damaged.*no intact backup"):
        Journal.open(tmp_path)
    with pytest.raises(JournalError, match="no backup of a journal at"):
        search.resume(tmp_path, evaluator_factory=FakeEvaluator, from_backup=True)
    (tmp_path / BACKUP_FILE).write_bytes(os.urandom(8192))
    with pytest.raises(JournalError, match="damaged too, so there is nothing to resume from"):
        search.resume(tmp_path, evaluator_factory=FakeEvaluator, from_backup=True)


def test_backups_come_every_n_results(tmp_path, monkeypatch):
    told_at_backup = []
    real = Journal.backup
    monkeypatch.setattr(Journal, "backup", lambda self: (told_at_backup.append(self.next_told_seq() - 1),
                                                         real(self))[1])
    search.run(small_config("search.max_evaluations=20", "search.backup_every=5"), tmp_path / "run",
               evaluator_factory=FakeEvaluator)
    *periodic, final = told_at_backup
    assert periodic == list(range(5, final + 1, 5)) and final >= 20


# --- a write that fails --------------------------------------------------------------------------------
def test_a_full_disk_stops_the_run_cleanly_and_it_resumes(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    search.run(small_config("search.max_evaluations=10"), run_dir, evaluator_factory=FakeEvaluator)
    real = journal_module._connect

    def full_soon(path, readonly):  # SQLite's own "database or disk is full", a few pages from now
        conn = real(path, readonly)
        if not readonly:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        return conn

    monkeypatch.setattr(journal_module, "_connect", full_soon)
    with pytest.raises(JournalWriteError, match=rf"cannot write the journal .*{JOURNAL_FILE} \(database or disk "
                                                r"is full\)\. The run stops here.*--resume"):
        search.resume(run_dir, ["search.max_evaluations=40"], evaluator_factory=FakeEvaluator)
    assert report_error(JournalWriteError("disk full")) == 1
    monkeypatch.setattr(journal_module, "_connect", real)

    with Journal.open(run_dir, readonly=True) as j:  # what was written stays readable
        assert len(j.rows()) > 10 and [r[0] for r in j._conn.execute("PRAGMA quick_check")] == ["ok"]
    search.resume(run_dir, ["search.max_evaluations=40"], evaluator_factory=FakeEvaluator)
    straight = search.run(small_config("search.max_evaluations=40"), tmp_path / "straight",
                          evaluator_factory=FakeEvaluator)
    assert journal_table(run_dir) == journal_table(straight.run_dir)


def test_a_journal_that_cannot_be_opened_for_writing_is_not_called_damaged(tmp_path, monkeypatch):
    search.run(small_config("search.max_evaluations=5"), tmp_path / "run", evaluator_factory=FakeEvaluator)

    def refused(path, readonly):  # what SQLite says of a read-only file (root, running the tests, may write it)
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(journal_module, "_connect", refused)
    with pytest.raises(JournalError, match=rf"cannot open .*{JOURNAL_FILE} for writing \(attempt to write a "
                                           r"readonly database\)$"):
        search.resume(tmp_path / "run", evaluator_factory=FakeEvaluator)
