"""The driver with the serial executor and the fake evaluator: journal contents, dedup, budgets, Ctrl-C."""
from collections import Counter

import pytest

import search
import search.driver as search_run
from evaluator.evaluate import EvalRecord
from search.executor import Outcome, run_job
from search.states import State
from tests.search.fakes import FakeEvaluator, journal_table, small_config


def _run(tmp_path, *overrides, name="run", fake=None, **kw):
    fake = fake or FakeEvaluator(small_config(*overrides))
    result = search.run(small_config(*overrides), tmp_path / name, evaluator_factory=lambda cfg: fake, **kw)
    return result, fake


def test_serial_run_journals_every_candidate(tmp_path):
    result, fake = _run(tmp_path, "search.max_evaluations=25")
    assert result.stop_reason == "max_evaluations"
    with search.open_run(result.run_dir) as view:
        rows = view.candidates()
        population = view.population()
        assert view.config == small_config("search.max_evaluations=25")
        assert view.sessions()[0].stop_reason == "max_evaluations"
    assert [(r.role, r.name) for r in rows[:3]] == [("reference", "bn_relu"), ("reference", "evonorm_s0"),
                                                    ("seed", "evonorm_s0")]
    assert all(isinstance(r.status, State) and r.finished for r in rows)
    assert sorted(r.told_seq for r in rows) == list(range(1, len(rows) + 1))
    evaluated = [r for r in rows if r.duplicate_of is None and r.role != "reference"]
    assert len(evaluated) == 25 == result.summary.evaluated
    assert len(fake.calls) == 25 + 2  # every evaluation and the two references, nothing else
    assert {r.status for r in rows} >= {"ok", "rejected", "duplicate"}
    assert all(r.passed for r in rows if r.id in {m.id for m in population})  # rejected never join
    assert 0 < len(population) <= 6
    children = [r for r in rows if r.role == "child"]
    assert children and all(r.parent_id < r.id for r in children)
    s = result.summary
    assert s.candidates == len(rows) - 2 and s.duplicates == sum(r.status == "duplicate" for r in rows)
    assert s.completed + sum(s.rejected.values()) + sum(s.failed.values()) == s.evaluated
    assert result.best.mean_fitness == max(r.mean_fitness for r in rows if r.status == "ok" and r.role != "reference")


def test_equivalent_children_reuse_the_stored_result(tmp_path):
    result, fake = _run(tmp_path, "search.max_evaluations=30")
    rows = {r.id: r for r in search.open_run(result.run_dir).candidates()}
    dups = [r for r in rows.values() if r.status == "duplicate"]
    assert rows[3].duplicate_of == 2  # the seed evonorm_s0 is the reference already evaluated
    assert dups and result.summary.dedup_hit_rate > 0
    for dup in dups:
        original = rows[dup.duplicate_of]
        assert original.status in ("ok", "rejected") and original.duplicate_of is None
        assert (dup.fitness, dup.reason, dup.fingerprint, dup.steps) == (original.fitness, original.reason,
                                                                         original.fingerprint, 0)
    # by function, not only by structure: some duplicates differ structurally from their original
    assert any(d.structural_hash != rows[d.duplicate_of].structural_hash for d in dups)
    # and no function was trained twice
    assert max(Counter(fake.calls).values()) == 1


def test_same_seed_same_journal_other_seed_other_journal(tmp_path):
    a, _ = _run(tmp_path, "search.max_evaluations=15", name="a")
    b, _ = _run(tmp_path, "search.max_evaluations=15", name="b")
    c, _ = _run(tmp_path, "search.max_evaluations=15", "seed=1", name="c")
    assert journal_table(a.run_dir) == journal_table(b.run_dir) != journal_table(c.run_dir)


def test_random_search_uses_the_same_journal(tmp_path):
    result, _ = _run(tmp_path, "search.algorithm=random", "search.max_evaluations=12")
    roles = Counter(r.role for r in search.open_run(result.run_dir).candidates())
    assert roles["reference"] == 2 and roles["seed"] == 1 and roles["random"] >= 11 and not roles["child"]


def test_step_and_time_budgets_stop_the_run(tmp_path):
    steps, _ = _run(tmp_path, "search.max_evaluations=0", "search.max_steps=200", name="steps")
    assert steps.stop_reason == "max_steps" and 200 <= steps.summary.steps < 200 + 60
    cfg = ("search.max_evaluations=0", "search.max_time=1.0")
    timed, _ = _run(tmp_path, *cfg, name="time", fake=FakeEvaluator(small_config(*cfg), sleep=0.1))
    assert timed.stop_reason == "max_time" and 1 <= timed.summary.evaluated < 12


def test_exhausted_op_space_stops(tmp_path, monkeypatch):
    monkeypatch.setattr(search_run, "EXHAUSTED_AFTER", 30)
    result, _ = _run(tmp_path, "search.ops=[neg, abs]", "search.num_nodes=1", "search.seeds=[]",
                     "search.max_evaluations=50")
    assert result.stop_reason == "exhausted" and result.summary.evaluated < 10


def test_ctrl_c_abandons_in_flight_work_and_resume_finishes_the_same_journal(tmp_path):
    cfg = ("search.max_evaluations=20",)
    straight, _ = _run(tmp_path, *cfg, name="straight")
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, *cfg, name="cut", fake=FakeEvaluator(small_config(*cfg), interrupt_at=9))
    rows = search.open_run(tmp_path / "cut").candidates()
    assert [r.status for r in rows if r.status in ("running", "abandoned")] == ["abandoned"]
    assert search.open_run(tmp_path / "cut").sessions()[0].stop_reason == "interrupted"
    fake = FakeEvaluator(small_config(*cfg))
    resumed = search.resume(tmp_path / "cut", evaluator_factory=lambda c: fake)
    assert resumed.stop_reason == "max_evaluations"
    assert journal_table(straight.run_dir) == journal_table(tmp_path / "cut")
    assert len(fake.calls) == 20 + 2 - 8  # nothing finished before the interrupt ran again


def test_resume_extends_a_finished_run_like_a_longer_one(tmp_path):
    longer, _ = _run(tmp_path, "search.max_evaluations=18", name="long")
    _run(tmp_path, "search.max_evaluations=10", name="short")
    search.resume(tmp_path / "short", ["search.max_evaluations=18"],
                  evaluator_factory=lambda c: FakeEvaluator(c))
    assert journal_table(longer.run_dir) == journal_table(tmp_path / "short")
    assert search.open_run(tmp_path / "short").config["search"]["max_evaluations"] == 18


class _LastInFirstOut:
    """An asynchronous executor double: two slots, results returned newest first."""

    slots = 2

    def __init__(self, cfg, factory):
        self.evaluator = factory(cfg)
        self.jobs = []

    @property
    def in_flight(self):
        return len(self.jobs)

    def submit(self, job):
        self.jobs.append(job)

    def wait(self, timeout=None):
        job = self.jobs.pop()
        return [Outcome(job, EvalRecord.from_dict(run_job(self.evaluator, job)), "lifo", 1)]

    def abandon(self):
        jobs, self.jobs = self.jobs, []
        return jobs

    def close(self):
        pass


def test_a_duplicate_of_an_evaluation_in_flight_waits_for_its_result(tmp_path, monkeypatch):
    monkeypatch.setattr(search_run, "make_executor", _LastInFirstOut)
    result, fake = _run(tmp_path, "search.references=[evonorm_s0]", "search.max_evaluations=12")
    rows = {r.id: r for r in search.open_run(result.run_dir).candidates()}
    # the reference evonorm_s0 (1) is in flight when the seed evonorm_s0 (2) is proposed
    assert rows[2].duplicate_of == 1 and rows[2].status == "duplicate" and rows[2].told_seq > rows[1].told_seq
    assert rows[2].fitness == rows[1].fitness
    assert max(Counter(fake.calls).values()) == 1
    assert all(r.finished for r in rows.values())


def test_the_population_holds_distinct_functions_and_no_duplicate_rows(tmp_path):
    # the paper's operator on small graphs proposes many clones: they are journaled, never members
    result, _ = _run(tmp_path, "search.max_evaluations=40", "search.mutation=paper", "search.prior=uniform")
    with search.open_run(result.run_dir) as view:
        rows = {r.id: r for r in view.candidates()}
        population = view.population()
    assert sum(r.status == "duplicate" for r in rows.values()) > 5
    members = [rows[m.id] for m in population]
    assert len({r.fingerprint for r in members}) == len(members) == len(population)
    assert all(r.duplicate_of is None or rows[r.duplicate_of].role == "reference" for r in members)


def test_common_random_numbers_give_every_candidate_one_seed(tmp_path):
    result, _ = _run(tmp_path, "search.max_evaluations=8", "search.common_random_numbers=true", name="crn")
    other, _ = _run(tmp_path, "search.max_evaluations=8", name="own")
    crn = {r.eval_seed for r in search.open_run(result.run_dir).candidates()}
    own = [r.eval_seed for r in search.open_run(other.run_dir).candidates()]
    assert len(crn) == 1 and len(set(own)) == len(own) > 8


def test_a_validation_split_that_leaves_nothing_to_train_on_stops_before_the_run(tmp_path):
    from evaluator.data import DataError

    with pytest.raises(DataError, match="data.val_size=2000 leaves none of the 2000 training images"):
        _run(tmp_path, "data.val_size=2000", "data.synthetic_size=2000")
    assert not (tmp_path / "run").exists()
