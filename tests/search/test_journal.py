"""The SQLite journal: schema, versions, WAL, read-only access, lookups."""
import sqlite3
import time

import pytest

from evonorm import seeds
from primitives import graph_to_yaml
from evaluator.evaluate import EvalRecord
from search.journal import JOURNAL_FILE, SCHEMA_VERSION, Journal, JournalError
from search.states import State


def _add(journal, cid, role="initial", **cols):
    journal.propose(cid, role, **cols)


def test_rows_round_trip_with_decoded_fitness(tmp_path):
    graph = seeds.get("evonorm_s0")
    with Journal.create(tmp_path, {"seed": 3}) as j:
        _add(j, 1, role="seed", name="evonorm_s0", graph_yaml=graph_to_yaml(graph), structural_hash="h1")
        row = j.record_result(1, EvalRecord("ok", fitness={"resnet": 0.5, "mobilenetv2": 0.25}, steps=60), "w", 1)
        assert row.told_seq == 1 and row.status is State.OK and row.worker == "w"
        row = j.row(1)
        assert j.meta() == {"schema_version": SCHEMA_VERSION, "created_at": pytest.approx(time.time(), abs=60),
                            "seed": 3}
    assert row.graph == graph and row.fitness == {"resnet": 0.5, "mobilenetv2": 0.25}
    assert row.mean_fitness == 0.375 and row.passed and row.finished


def test_wal_mode_and_a_live_read_only_reader(tmp_path):
    writer = Journal.create(tmp_path, {})
    reader = Journal.open(tmp_path, readonly=True)
    _add(writer, 1)
    assert [r.id for r in reader.rows()] == [1]  # sees the writer's committed rows while it is open
    assert reader._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(JournalError, match="read-only"):
        _add(reader, 2)
    writer.close(), reader.close()


def test_schema_version_is_checked_on_open(tmp_path):
    Journal.create(tmp_path, {}).close()
    conn = sqlite3.connect(tmp_path / JOURNAL_FILE)
    with conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(JournalError, match=f"version 99.*version {SCHEMA_VERSION}"):
        Journal.open(tmp_path)


def test_create_refuses_an_existing_journal_and_open_a_missing_one(tmp_path):
    Journal.create(tmp_path, {}).close()
    with pytest.raises(JournalError, match="already exists"):
        Journal.create(tmp_path, {})
    with pytest.raises(JournalError, match="no journal"):
        Journal.open(tmp_path / "elsewhere")


def test_find_original_prefers_finished_results_and_skips_failures_and_duplicates(tmp_path):
    with Journal.create(tmp_path, {}) as j:
        _add(j, 1, fingerprint="f")
        j.record_result(1, EvalRecord.for_reason("worker_lost", "lost"), "w", 3)
        _add(j, 2, fingerprint="f")  # still running
        assert j.find_original("fingerprint", "f").id == 2
        _add(j, 3, fingerprint="f")
        original = j.record_result(3, EvalRecord.for_reason("quality", "low"), "w", 1)
        _add(j, 4, fingerprint="f", duplicate_of=3)
        assert j.mark_duplicate(4, original).status is State.DUPLICATE
        assert j.find_original("fingerprint", "f").id == 3
        assert j.find_original("structural_hash", "f") is None
        with pytest.raises(JournalError, match="structural_hash or fingerprint"):
            j.find_original("formula", "x")


def test_bad_writes_name_the_problem(tmp_path):
    with Journal.create(tmp_path, {}) as j:
        with pytest.raises(JournalError, match="unknown role 'parent'"):
            _add(j, 1, role="parent")
        with pytest.raises(JournalError, match="unknown candidates column 'colour'"):
            _add(j, 1, colour="red")
        with pytest.raises(JournalError, match="no candidate 5"):
            j.mark_dispatched(5)
        _add(j, 1)
        with pytest.raises(JournalError, match="unknown reason 'bored'"):  # a failure the search never names
            j.record_result(1, EvalRecord("failed", "bored"), "w", 1)
