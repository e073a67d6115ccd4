"""Callbacks see every result in the journal's order, and the TensorBoard logger writes what a user watches."""
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import search
from search.journal import Journal
from search.tensorboard import TENSORBOARD_DIR
from tests.search.fakes import FakeEvaluator, journal_table, small_config


class Recorder(search.Callback):
    def __init__(self, fail_at=None):
        self.events, self.fail_at = [], fail_at

    def on_start(self, run_dir, cfg, rows):
        self.events.append(("start", len(rows)))

    def on_result(self, row):
        self.events.append(("result", row.id, row.told_seq))
        if row.told_seq == self.fail_at:
            raise RuntimeError("a callback's own bug")

    def on_new_best(self, row):
        self.events.append(("best", row.id, row.mean_fitness))

    def on_stop(self, stop_reason):
        self.events.append(("stop", stop_reason))


def _told(run_dir):
    with Journal.open(run_dir, readonly=True) as j:
        return sorted((r.told_seq, r.id) for r in j.rows() if r.told_seq is not None)


def test_hooks_follow_the_journal(tmp_path):
    recorder = Recorder()
    result = search.run(small_config("search.max_evaluations=20"), tmp_path / "run", evaluator_factory=FakeEvaluator,
                        callbacks=[recorder])
    kinds = [e[0] for e in recorder.events]
    assert kinds[0] == "start" and recorder.events[0] == ("start", 0) and recorder.events[-1] == ("stop",
                                                                                                   "max_evaluations")
    results = [(seq, cid) for kind, cid, seq in (e for e in recorder.events if e[0] == "result")]
    assert results == _told(result.run_dir)  # every result once, in told order, references included
    bests = [e for e in recorder.events if e[0] == "best"]
    assert [b[2] for b in bests] == sorted({b[2] for b in bests}) and bests[-1][1] == result.best.id
    for best in bests:  # each new best comes right after its own result
        i = recorder.events.index(best)
        assert recorder.events[i - 1][:2] == ("result", best[1])


def test_a_resumed_run_starts_its_callbacks_with_the_rows_so_far(tmp_path):
    search.run(small_config("search.max_evaluations=10"), tmp_path / "run", evaluator_factory=FakeEvaluator)
    recorder = Recorder()
    search.resume(tmp_path / "run", ["search.max_evaluations=20"], evaluator_factory=FakeEvaluator,
                  callbacks=[recorder])
    with Journal.open(tmp_path / "run", readonly=True) as j:
        before = sum(1 for r in j.rows() if r.told_seq is not None and r.told_seq <= 12)
    assert recorder.events[0][0] == "start" and recorder.events[0][1] >= before


def test_a_callback_that_raises_stops_the_run_and_loses_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="a callback's own bug"):
        search.run(small_config("search.max_evaluations=20"), tmp_path / "run", evaluator_factory=FakeEvaluator,
                   callbacks=[Recorder(fail_at=8)])
    search.resume(tmp_path / "run", evaluator_factory=FakeEvaluator)
    straight = search.run(small_config("search.max_evaluations=20"), tmp_path / "straight",
                          evaluator_factory=FakeEvaluator)
    assert journal_table(tmp_path / "run") == journal_table(straight.run_dir)


def test_an_object_without_hooks_is_refused(tmp_path):
    with pytest.raises(TypeError, match="has none of the callback hooks"):
        search.run(small_config(), tmp_path / "run", evaluator_factory=FakeEvaluator, callbacks=[object()])


def _events(run_dir) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir / TENSORBOARD_DIR), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    acc.Reload()
    return acc


def test_tensorboard_events_hold_the_best_the_pass_rate_the_rejections_and_the_best_graph(tmp_path):
    run_dir = tmp_path / "run"
    result = search.run(small_config("search.max_evaluations=20", "logging.tensorboard=true"), run_dir,
                        evaluator_factory=FakeEvaluator)
    acc = _events(run_dir)
    tags = acc.Tags()
    best = acc.Scalars("search/best_fitness")
    assert best[-1].value == pytest.approx(result.best.mean_fitness)
    assert [b.value for b in best] == sorted(b.value for b in best)  # best so far never falls
    summary = result.summary
    assert acc.Scalars("search/pass_rate")[-1].value == pytest.approx(summary.completed / summary.evaluated)
    assert acc.Scalars("search/evaluations_per_hour")[-1].value > 0
    for reason, count in summary.rejected.items():
        assert acc.Scalars(f"rejected/{reason}")[-1].value == count
    passed = {f"reference/{name}" for name, row in result.references.items() if row.passed}
    assert {tag for tag in tags["scalars"] if tag.startswith("reference/")} == passed
    assert "best/graph" in tags["images"]
    texts = [t.tensor_proto.string_val[0].decode() for t in acc.Tensors("best/formula/text_summary")]
    assert result.best.formula in texts[-1]

    search.resume(run_dir, ["search.max_evaluations=30"], evaluator_factory=FakeEvaluator)
    steps = [s.step for s in _events(run_dir).Scalars("search/pass_rate")]
    assert steps == sorted(steps) and steps[-1] > best[-1].step  # the resumed session continues the curves


def test_tensorboard_can_be_switched_on_at_resume(tmp_path):
    search.run(small_config("search.max_evaluations=5"), tmp_path / "run", evaluator_factory=FakeEvaluator)
    assert not (tmp_path / "run" / TENSORBOARD_DIR).exists()
    search.resume(tmp_path / "run", ["search.max_evaluations=10", "logging.tensorboard=true"],
                  evaluator_factory=FakeEvaluator)
    assert _events(tmp_path / "run").Scalars("search/pass_rate")
