"""The run journal: one SQLite file, ``RUN_DIR/search.sqlite``, written by the driver as things happen.

Storage only, no algorithm. Tables:

* ``meta`` (key, value): ``schema_version`` (checked on every open), ``created_at``, ``seed``, ``algorithm``.
* ``candidates``: one row per candidate, inserted when it is proposed and updated once when it finishes.
  ``status`` is ``running`` while it is evaluated (or, with ``duplicate_of`` set, while it waits for an
  in-flight evaluation of the same function), then ``ok``, ``rejected``, ``failed``, ``duplicate`` (the
  result of ``duplicate_of`` reused, nothing trained) or ``abandoned`` (in flight when the run was stopped;
  a resumed run evaluates it again). ``reason`` is the evaluator's reason code (for a duplicate, the
  original's). ``told_seq`` numbers results in the order the algorithm received them: replaying them in that
  order rebuilds the algorithm's state.
* ``sessions``: one row per start or resume of the driver, for wall time and throughput.

The database runs in WAL mode with full sync, so a reader (``search.inspect``) can follow a live run and a
``kill -9`` or power loss loses at most the transaction in progress; every write is one transaction.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Optional

from primitives import LayerGraph, graph_from_yaml

__all__ = ["SCHEMA_VERSION", "JOURNAL_FILE", "STATUSES", "ROLES", "JournalError", "CandidateRow", "Session", "Journal"]

SCHEMA_VERSION = 1
JOURNAL_FILE = "search.sqlite"
STATUSES = ("running", "ok", "rejected", "failed", "duplicate", "abandoned")
# reference: a named baseline evaluated for comparison, never a population member unless also a seed.
ROLES = ("reference", "seed", "initial", "child", "random")

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE candidates (
    id INTEGER PRIMARY KEY,
    role TEXT NOT NULL,
    name TEXT,
    graph_yaml TEXT,
    formula TEXT,
    structural_hash TEXT,
    fingerprint TEXT,
    batch_dependent INTEGER,
    parent_id INTEGER REFERENCES candidates(id),
    duplicate_of INTEGER REFERENCES candidates(id),
    status TEXT NOT NULL,
    reason TEXT,
    detail TEXT,
    fitness_json TEXT,
    test_json TEXT,
    steps INTEGER NOT NULL DEFAULT 0,
    eval_seed INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    wall_time REAL,
    proposed_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    told_seq INTEGER UNIQUE
);
CREATE INDEX candidates_by_hash ON candidates(structural_hash);
CREATE INDEX candidates_by_fingerprint ON candidates(fingerprint);
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    started_at REAL NOT NULL,
    ended_at REAL,
    stop_reason TEXT,
    host TEXT
);
"""


class JournalError(RuntimeError):
    """A journal that cannot be opened or written as asked; the message names the file."""


@dataclass(frozen=True)
class CandidateRow:
    """One row of ``candidates``, with ``fitness`` and ``test_accuracy`` decoded (architecture -> accuracy)."""

    id: int
    role: str
    name: Optional[str]
    graph_yaml: Optional[str]
    formula: Optional[str]
    structural_hash: Optional[str]
    fingerprint: Optional[str]
    batch_dependent: Optional[bool]
    parent_id: Optional[int]
    duplicate_of: Optional[int]
    status: str
    reason: Optional[str]
    detail: Optional[str]
    fitness: Optional[dict[str, float]]
    test_accuracy: Optional[dict[str, float]]
    steps: int
    eval_seed: Optional[int]
    attempts: int
    worker: Optional[str]
    wall_time: Optional[float]
    proposed_at: float
    started_at: Optional[float]
    finished_at: Optional[float]
    told_seq: Optional[int]

    @property
    def graph(self) -> Optional[LayerGraph]:
        """The candidate's graph (None for a reference layer that is not a graph, such as ``bn_relu``)."""
        return graph_from_yaml(self.graph_yaml, source=f"candidate {self.id}") if self.graph_yaml else None

    @property
    def finished(self) -> bool:
        return self.status in ("ok", "rejected", "failed", "duplicate")

    @property
    def passed(self) -> bool:
        """Whether the evaluation (the original's, for a duplicate) passed every check."""
        return self.status == "ok" or (self.status == "duplicate" and self.reason is None)

    @property
    def mean_fitness(self) -> Optional[float]:
        """The mean validation accuracy over architectures: the one-number summary used for "best"."""
        return sum(self.fitness.values()) / len(self.fitness) if self.fitness else None


@dataclass(frozen=True)
class Session:
    id: int
    started_at: float
    ended_at: Optional[float]
    stop_reason: Optional[str]
    host: Optional[str]


_JSON_COLUMNS = {"fitness": "fitness_json", "test_accuracy": "test_json"}
_COLUMNS = [_JSON_COLUMNS.get(f.name, f.name) for f in fields(CandidateRow)]


def _row(values: sqlite3.Row) -> CandidateRow:
    kwargs = {}
    for f in fields(CandidateRow):
        value = values[_JSON_COLUMNS.get(f.name, f.name)]
        if f.name in _JSON_COLUMNS and value is not None:
            value = json.loads(value)
        elif f.name == "batch_dependent" and value is not None:
            value = bool(value)
        kwargs[f.name] = value
    return CandidateRow(**kwargs)


def _encode(columns: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in columns.items():
        column = _JSON_COLUMNS.get(key, key)
        if column not in _COLUMNS:
            raise JournalError(f"unknown candidates column {key!r}; columns: {', '.join(_COLUMNS)}")
        if column in _JSON_COLUMNS.values() and value is not None:
            value = json.dumps(value, sort_keys=True)
        out[column] = value
    if out.get("status") is not None and out["status"] not in STATUSES:
        raise JournalError(f"unknown status {out['status']!r}; statuses: {', '.join(STATUSES)}")
    if out.get("role") is not None and out["role"] not in ROLES:
        raise JournalError(f"unknown role {out['role']!r}; roles: {', '.join(ROLES)}")
    return out


class Journal:
    """The SQLite journal of one run. Use :meth:`create` for a new run and :meth:`open` to resume or read."""

    def __init__(self, path: Path, conn: sqlite3.Connection, readonly: bool):
        self.path = path
        self.readonly = readonly
        self._conn = conn
        self._conn.row_factory = sqlite3.Row

    # --- opening --------------------------------------------------------------------------------------
    @classmethod
    def create(cls, run_dir: str | os.PathLike, meta: dict[str, Any]) -> "Journal":
        path = Path(run_dir) / JOURNAL_FILE
        if path.exists():
            raise JournalError(f"{path} already exists; resume that run or choose another run directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        with conn:
            conn.executescript(_SCHEMA)
            rows = {"schema_version": SCHEMA_VERSION, "created_at": time.time(), **meta}
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in rows.items()])
        return cls(path, conn, readonly=False)

    @classmethod
    def open(cls, run_dir: str | os.PathLike, readonly: bool = False) -> "Journal":
        """Open an existing journal; ``readonly`` for readers of a run that may still be going."""
        path = Path(run_dir) / JOURNAL_FILE
        if not path.is_file():
            raise JournalError(f"no journal at {path}; is {os.fspath(run_dir)!r} a run directory?")
        if readonly:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        else:
            conn = sqlite3.connect(path)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
        journal = cls(path, conn, readonly)
        try:
            found = journal.meta().get("schema_version")
        except sqlite3.DatabaseError as err:
            conn.close()
            raise JournalError(f"{path} is not a search journal ({err})") from None
        if found != SCHEMA_VERSION:
            conn.close()
            raise JournalError(f"{path} has journal schema version {found}, but this program reads version "
                               f"{SCHEMA_VERSION}; open it with the version of this package that wrote it")
        return journal

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- reading --------------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._conn.execute("SELECT key, value FROM meta")}

    def rows(self) -> list[CandidateRow]:
        """Every candidate, in id order."""
        return [_row(r) for r in self._conn.execute("SELECT * FROM candidates ORDER BY id")]

    def row(self, candidate_id: int) -> CandidateRow:
        found = self._conn.execute("SELECT * FROM candidates WHERE id = ?", (candidate_id,)).fetchone()
        if found is None:
            raise JournalError(f"{self.path} has no candidate {candidate_id}")
        return _row(found)

    def find_original(self, column: str, value: str) -> Optional[CandidateRow]:
        """The first evaluation of the same function (matching ``structural_hash`` or ``fingerprint``) whose
        result can be reused: finished ``ok`` or ``rejected``, else one still running; None when there is none.
        Failed evaluations (a lost worker, a timeout) say nothing about the function and are not reused."""
        if column not in ("structural_hash", "fingerprint"):
            raise JournalError(f"can only look candidates up by structural_hash or fingerprint, not {column!r}")
        found = self._conn.execute(
            f"SELECT * FROM candidates WHERE {column} = ? AND duplicate_of IS NULL "
            "AND status IN ('ok', 'rejected', 'running') ORDER BY status = 'running', id LIMIT 1", (value,)
        ).fetchone()
        return _row(found) if found is not None else None

    def next_told_seq(self) -> int:
        return self._conn.execute("SELECT COALESCE(MAX(told_seq), 0) + 1 FROM candidates").fetchone()[0]

    def sessions(self) -> list[Session]:
        return [Session(*r) for r in self._conn.execute("SELECT * FROM sessions ORDER BY id")]

    # --- writing (the driver only) --------------------------------------------------------------------
    def _write(self, sql: str, params: Iterable[Any]) -> sqlite3.Cursor:
        if self.readonly:
            raise JournalError(f"{self.path} was opened read-only")
        with self._conn:
            return self._conn.execute(sql, tuple(params))

    def insert(self, **columns: Any) -> None:
        """Add a candidate row (``id``, ``role``, ``status``, ``proposed_at`` required)."""
        cols = _encode(columns)
        self._write(f"INSERT INTO candidates ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    cols.values())

    def update(self, candidate_id: int, **columns: Any) -> None:
        cols = _encode(columns)
        cursor = self._write(f"UPDATE candidates SET {', '.join(f'{k} = ?' for k in cols)} WHERE id = ?",
                             [*cols.values(), candidate_id])
        if cursor.rowcount != 1:
            raise JournalError(f"{self.path} has no candidate {candidate_id} to update")

    def start_session(self, host: str) -> int:
        return self._write("INSERT INTO sessions (started_at, host) VALUES (?, ?)", (time.time(), host)).lastrowid

    def end_session(self, session_id: int, stop_reason: str) -> None:
        self._write("UPDATE sessions SET ended_at = ?, stop_reason = ? WHERE id = ?",
                    (time.time(), stop_reason, session_id))
