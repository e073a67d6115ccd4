"""The run journal: one SQLite file, ``RUN_DIR/search.sqlite``, written by the driver as things happen.

Storage only, no algorithm. Tables:

* ``meta`` (key, value): ``schema_version`` (checked on every open), ``created_at``, ``seed``, ``algorithm``.
* ``candidates``: one row per candidate, inserted when it is proposed (:meth:`Journal.propose`) and moved
  through its states (``search.states.State``) by the named transitions below. ``reason`` is why it ended
  as it did (for a duplicate, the original's reason). ``told_seq`` numbers results in the order the algorithm
  received them: replaying them in that order rebuilds the algorithm's state.
* ``stages``: with progressive hurdles (``search.stages``), one row per stage a candidate trained, with
  that stage's verdict and whether it cleared the hurdle (``advanced``); the candidate's own row holds the
  result over its stages. Journals written before hurdles existed get the table when opened for writing.
* ``sessions``: one row per start or resume of the driver, for wall time and throughput.

The database runs in WAL mode with full sync, so a reader (``search.inspect``) can follow a live run and a
``kill -9`` or power loss loses at most the transaction in progress; every write is one transaction. A write
that fails (a full disk, a read-only file) raises :class:`JournalWriteError` and leaves the file as it was.
Against damage that SQLite cannot undo (a disk or a copy that corrupts it), the driver keeps a consistent
copy, ``RUN_DIR/search.backup.sqlite`` (:meth:`Journal.backup`); a journal that cannot be read is named as
damaged on open, with that backup, which :func:`restore_backup` puts in its place.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from evaluator.evaluate import EvalRecord
from primitives import LayerGraph, graph_from_yaml

from .states import ABANDONED, JOURNAL_REASONS, Role, State

__all__ = ["SCHEMA_VERSION", "JOURNAL_FILE", "BACKUP_FILE", "JournalError", "JournalWriteError", "CandidateRow",
           "StageRow", "Session", "Journal", "restore_backup"]

SCHEMA_VERSION = 1
JOURNAL_FILE = "search.sqlite"
BACKUP_FILE = "search.backup.sqlite"

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
_STAGES_SCHEMA = """
CREATE TABLE IF NOT EXISTS stages (
    candidate_id INTEGER NOT NULL REFERENCES candidates(id),
    stage INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    record_json TEXT NOT NULL,
    worker TEXT,
    advanced INTEGER NOT NULL,
    PRIMARY KEY (candidate_id, stage)
);
"""


class JournalError(RuntimeError):
    """A journal that cannot be opened or written as asked; the message names the file."""


class JournalWriteError(RuntimeError):
    """SQLite could not write the journal (a full disk, a read-only file); what was written before stays."""


@dataclass(frozen=True)
class CandidateRow:
    """One row of ``candidates``, with ``fitness`` and ``test_accuracy`` decoded (architecture -> accuracy)."""

    id: int
    role: Role
    name: Optional[str]
    graph_yaml: Optional[str]
    formula: Optional[str]
    structural_hash: Optional[str]
    fingerprint: Optional[str]
    batch_dependent: Optional[bool]
    parent_id: Optional[int]
    duplicate_of: Optional[int]
    status: State
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

    def __post_init__(self):  # rows built by hand (tests, tools) read as the journal's own do
        object.__setattr__(self, "status", State(self.status))
        object.__setattr__(self, "role", Role(self.role))

    @property
    def graph(self) -> Optional[LayerGraph]:
        """The candidate's graph (None for a reference layer that is not a graph, such as ``bn_relu``)."""
        return graph_from_yaml(self.graph_yaml, source=f"candidate {self.id}") if self.graph_yaml else None

    @property
    def finished(self) -> bool:
        return self.status.finished

    @property
    def passed(self) -> bool:
        """Whether the evaluation (the original's, for a duplicate) passed every check."""
        return self.status is State.OK or (self.status is State.DUPLICATE and self.reason is None)

    @property
    def is_reference(self) -> bool:
        return self.role is Role.REFERENCE

    @property
    def mean_fitness(self) -> Optional[float]:
        """The mean validation accuracy over architectures: the one-number summary used for "best"."""
        return sum(self.fitness.values()) / len(self.fitness) if self.fitness else None


@dataclass(frozen=True)
class StageRow:
    """One stage a candidate trained: ``record`` is that stage's result, ``advanced`` whether it cleared
    the hurdle (so the candidate trained the next stage)."""

    candidate_id: int
    stage: int
    seed: int
    record: EvalRecord
    worker: Optional[str]
    advanced: bool


@dataclass(frozen=True)
class Session:
    id: int
    started_at: float
    ended_at: Optional[float]
    stop_reason: Optional[str]
    host: Optional[str]


_JSON_COLUMNS = {"fitness": "fitness_json", "test_accuracy": "test_json"}
_COLUMNS = [_JSON_COLUMNS.get(f.name, f.name) for f in fields(CandidateRow)]
_ENUM_COLUMNS = {"status": State, "role": Role}


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
        elif column in _ENUM_COLUMNS and value is not None:
            try:
                value = _ENUM_COLUMNS[column](value).value
            except ValueError:
                known = ", ".join(v.value for v in _ENUM_COLUMNS[column])
                raise JournalError(f"unknown {column} {value!r}; {column}s: {known}") from None
        out[column] = value
    if out.get("reason") is not None and out["reason"] not in JOURNAL_REASONS:
        raise JournalError(f"unknown reason {out['reason']!r}; reasons: {', '.join(JOURNAL_REASONS)}")
    return out


def _stage_values(candidate_id: int, stage: int, seed: int, record: EvalRecord, worker: str,
                  advanced: bool) -> tuple:
    return candidate_id, stage, seed, json.dumps(record.to_dict(), sort_keys=True), worker, int(advanced)


_REUSABLE_OR_RUNNING = ", ".join(f"'{s}'" for s in State if s.reusable or s is State.RUNNING)


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
        journal = cls(path, _connect(path, readonly=False), readonly=False)
        with journal._transaction() as conn:
            conn.executescript(_SCHEMA + _STAGES_SCHEMA)
            rows = {"schema_version": SCHEMA_VERSION, "created_at": time.time(), **meta}
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in rows.items()])
        return journal

    @classmethod
    def open(cls, run_dir: str | os.PathLike, readonly: bool = False) -> "Journal":
        """Open an existing journal; ``readonly`` for readers of a run that may still be going."""
        path = Path(run_dir) / JOURNAL_FILE
        if not path.is_file():
            raise JournalError(f"no journal at {path}; is {os.fspath(run_dir)!r} a run directory?")
        conn = None
        try:
            conn = _connect(path, readonly)
            problem = _damage(conn)
        except sqlite3.OperationalError as err:  # permissions, a missing WAL file: not damage
            problem, access = None, err
        except sqlite3.DatabaseError as err:
            problem, access = str(err), None
        else:
            access = None
        if problem is not None or access is not None:
            if conn is not None:
                conn.close()
            if access is not None:
                raise JournalError(f"cannot open {path}{'' if readonly else ' for writing'} ({access})")
            raise JournalError(_damaged(path, problem))
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
        if not readonly:
            with journal._transaction() as c:
                c.executescript(_STAGES_SCHEMA)
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
            f"AND status IN ({_REUSABLE_OR_RUNNING}) ORDER BY status = '{State.RUNNING}', id LIMIT 1", (value,)
        ).fetchone()
        return _row(found) if found is not None else None

    def stages(self, candidate_id: Optional[int] = None) -> list[StageRow]:
        """The stages trained, by candidate and stage (one candidate's with ``candidate_id``)."""
        if not self._has_stages():
            return []
        where, params = ("WHERE candidate_id = ?", (candidate_id,)) if candidate_id is not None else ("", ())
        return [StageRow(r["candidate_id"], r["stage"], r["seed"], EvalRecord.from_dict(json.loads(r["record_json"])),
                         r["worker"], bool(r["advanced"]))
                for r in self._conn.execute(f"SELECT * FROM stages {where} ORDER BY candidate_id, stage", params)]

    def _has_stages(self) -> bool:  # a journal from before hurdles, opened read-only, has no such table
        return self._conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'stages'").fetchone() \
            is not None

    def next_told_seq(self) -> int:
        return self._conn.execute("SELECT COALESCE(MAX(told_seq), 0) + 1 FROM candidates").fetchone()[0]

    def sessions(self) -> list[Session]:
        return [Session(*r) for r in self._conn.execute("SELECT * FROM sessions ORDER BY id")]

    # --- writing (the driver only) --------------------------------------------------------------------
    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction: all of it is written, or none of it and :class:`JournalWriteError` says why."""
        if self.readonly:
            raise JournalError(f"{self.path} was opened read-only")
        try:
            with self._conn:
                yield self._conn
        except sqlite3.IntegrityError:
            raise
        except sqlite3.DatabaseError as err:
            raise JournalWriteError(f"cannot write the journal {self.path} ({err}). The run stops here; what "
                                    "was journaled before is kept. Free some space (or make the file writable) "
                                    f"and resume: --resume {self.path.parent}") from None

    def _write(self, sql: str, params: Iterable[Any]) -> sqlite3.Cursor:
        with self._transaction() as conn:
            return conn.execute(sql, tuple(params))

    def _insert(self, **columns: Any) -> None:
        cols = _encode(columns)
        self._write(f"INSERT INTO candidates ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    cols.values())

    def _update(self, candidate_id: int, *, stage: Optional[tuple] = None, **columns: Any) -> None:
        """Update a candidate's columns; with ``stage`` (a ``stages`` row's values), insert that row in the
        same transaction."""
        cols = _encode(columns)
        with self._transaction() as conn:
            if stage is not None:
                conn.execute("INSERT INTO stages (candidate_id, stage, seed, record_json, worker, advanced) "
                             "VALUES (?, ?, ?, ?, ?, ?)", stage)
            cursor = conn.execute(f"UPDATE candidates SET {', '.join(f'{k} = ?' for k in cols)} WHERE id = ?",
                                  [*cols.values(), candidate_id])
            if cursor.rowcount != 1:
                raise JournalError(f"{self.path} has no candidate {candidate_id} to update")

    def backup(self) -> Path:
        """Replace ``RUN_DIR/search.backup.sqlite`` by a consistent copy of the journal as it stands (one
        self-contained file), written beside it first so that a failure leaves the last backup whole."""
        dest = self.path.with_name(BACKUP_FILE)
        tmp = dest.with_name(f".{BACKUP_FILE}.tmp")
        try:
            tmp.unlink(missing_ok=True)
            out = sqlite3.connect(tmp)
            try:
                self._conn.backup(out)
                out.execute("PRAGMA journal_mode=DELETE")
            finally:
                out.close()
            os.replace(tmp, dest)
        except (sqlite3.Error, OSError) as err:
            tmp.unlink(missing_ok=True)
            raise JournalWriteError(f"cannot back up the journal {self.path} to {dest} ({err})") from None
        return dest

    # The transitions: every change of a candidate's state is one of these.
    def propose(self, candidate_id: int, role: Role, **columns: Any) -> None:
        """A new candidate, running from now (``columns``: its graph, hashes, parent, eval seed...)."""
        self._insert(id=candidate_id, role=role, status=State.RUNNING, proposed_at=time.time(), **columns)

    def mark_dispatched(self, candidate_id: int) -> None:
        """Its evaluation was sent to a worker."""
        self._update(candidate_id, started_at=time.time())

    def mark_running(self, candidate_id: int, **changes: Any) -> None:
        """Running again (resumed work, or a duplicate waiting again for its original); ``changes`` such as
        ``duplicate_of=None`` for a duplicate that must be evaluated itself."""
        self._update(candidate_id, status=State.RUNNING, reason=None, detail=None, finished_at=None, **changes)

    def record_stage(self, candidate_id: int, stage: int, seed: int, record: EvalRecord, worker: str) -> None:
        """A stage that cleared the hurdle: the candidate keeps running, to train stage ``stage + 1``."""
        self._update(candidate_id, stage=_stage_values(candidate_id, stage, seed, record, worker, True),
                     worker=worker)

    def record_result(self, candidate_id: int, record: EvalRecord, worker: str, attempts: int,
                      last_stage: Optional[tuple[int, int, EvalRecord]] = None) -> CandidateRow:
        """The evaluator's result, told to the algorithm next; the row as it now stands. With hurdles,
        ``record`` is the result over the stages and ``last_stage`` (stage, seed, record) the final one,
        journaled in the same transaction."""
        row = self.row(candidate_id)
        stage = _stage_values(candidate_id, *last_stage, worker, False) if last_stage is not None else None
        self._update(candidate_id, stage=stage, status=State(record.status.value), reason=record.reason,
                     detail=record.detail,
                     fitness=record.fitness or None, test_accuracy=record.test_accuracy or None,
                     steps=record.steps, wall_time=record.wall_time,
                     fingerprint=row.fingerprint or record.fingerprint, worker=worker, attempts=attempts,
                     finished_at=time.time(), told_seq=self.next_told_seq())
        return self.row(candidate_id)

    def mark_duplicate(self, candidate_id: int, original: CandidateRow) -> CandidateRow:
        """The same function as ``original``, which finished: its result reused, nothing trained."""
        self._update(candidate_id, status=State.DUPLICATE, reason=original.reason, fitness=original.fitness,
                     test_accuracy=original.test_accuracy, steps=0, detail=f"same function as candidate {original.id}",
                     finished_at=time.time(), told_seq=self.next_told_seq())
        return self.row(candidate_id)

    def mark_abandoned(self, candidate_id: int, detail: str) -> None:
        """In flight when the run stopped; a resumed run evaluates it again."""
        self._update(candidate_id, status=State.ABANDONED, reason=ABANDONED, detail=detail, finished_at=time.time())

    def start_session(self, host: str) -> int:
        return self._write("INSERT INTO sessions (started_at, host) VALUES (?, ?)", (time.time(), host)).lastrowid

    def end_session(self, session_id: int, stop_reason: str) -> None:
        self._write("UPDATE sessions SET ended_at = ?, stop_reason = ? WHERE id = ?",
                    (time.time(), stop_reason, session_id))


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    if readonly:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _damage(conn: sqlite3.Connection) -> Optional[str]:
    """SQLite's own check of every page (``quick_check``): None when the file is sound, else its first finding."""
    found = [r[0] for r in conn.execute("PRAGMA quick_check")]
    return None if found == ["ok"] else found[0]


def _backup_summary(backup: Path) -> Optional[str]:
    """What an intact backup holds (results, time written), or None when it is missing or damaged too."""
    if not backup.is_file():
        return None
    try:
        conn = sqlite3.connect(f"{backup.resolve().as_uri()}?mode=ro", uri=True)
        try:
            if _damage(conn) is not None:
                return None
            told = conn.execute("SELECT COUNT(told_seq) FROM candidates").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return None
    written = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(backup.stat().st_mtime))
    return f"{told} results, written {written}"


def _damaged(path: Path, problem: str) -> str:
    message = f"{path} is damaged: SQLite cannot read it ({problem})."
    backup = path.with_name(BACKUP_FILE)
    summary = _backup_summary(backup)
    if summary is None:
        return f"{message} There is no intact backup ({backup}) to resume from."
    return (f"{message} Its last backup, {backup} ({summary}), is intact: resume from it with "
            f"--resume {path.parent} --from-backup (the damaged file is kept beside it).")


def restore_backup(run_dir: str | os.PathLike) -> Path:
    """Put the last backup in the journal's place; the damaged journal (with its WAL files) is renamed
    ``search.sqlite.damaged-<time>``, which is returned. Results told after the backup are evaluated again."""
    run_dir = Path(run_dir)
    path, backup = run_dir / JOURNAL_FILE, run_dir / BACKUP_FILE
    if _backup_summary(backup) is None:
        raise JournalError(f"{backup} is missing or damaged too, so there is nothing to resume from")
    kept = path.with_name(f"{JOURNAL_FILE}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{path}{suffix}").exists():
            os.replace(f"{path}{suffix}", f"{kept}{suffix}")
    shutil.copyfile(backup, path)
    return kept
