"""One driver per run: an exclusive lock on the run directory while a search writes its journal.

Two drivers on one journal would interleave their proposals and results, and replay would rebuild neither
run. The lock is an OS file lock (``flock``) on ``RUN_DIR/driver.lock``, so it lives and dies with the
process that holds it: a driver killed with ``kill -9``, or a reboot, leaves no lock behind, only the note of
who held it. Readers (``search.inspect``, ``search.export``, ``search.rerank``) never take it.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

__all__ = ["LOCK_FILE", "RunLockedError", "RunLock"]

LOCK_FILE = "driver.lock"


class RunLockedError(RuntimeError):
    """Another live driver holds the run."""


class RunLock:
    """``with RunLock(run_dir):`` holds the run for this process, or raises :class:`RunLockedError` naming
    the holder (pid, host, start time)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by the workers it starts
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_note(fd)
            os.close(fd)
            raise RunLockedError(f"{self.run_dir} is being driven by another search ({holder}); wait for it to "
                                 "end or stop it first. Reading the run (inspect, export, rerank) needs no lock.") \
                from None
        note = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started_at": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, note.encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the lock
            self._fd = None


def _read_note(fd: int) -> str:
    """The holder as its note names it, or a plain word when the note cannot be read."""
    try:
        note = json.loads(os.pread(fd, 4096, 0).decode())
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(note["started_at"]))
        return f"pid {note['pid']} on {note['host']}, started {started}"
    except (ValueError, KeyError, TypeError, OSError):
        return "a process that has not written its name yet"
