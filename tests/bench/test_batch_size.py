"""bench/batch_size.py: linear learning-rate scaling, equal epochs per batch size, the cells and the table."""
import math

import pytest

from bench.batch_size import EXPERIMENT, epoch_steps, make_cells, scaled_lr, table
from evaluator.config import load_config


def test_learning_rate_scales_linearly_with_the_batch():
    assert scaled_lr(0.2, 64, 64) == 0.2
    assert scaled_lr(0.2, 64, 128) == pytest.approx(0.4)
    assert scaled_lr(0.2, 64, 2) == pytest.approx(0.00625)


def test_every_batch_size_sees_the_same_number_of_images():
    assert epoch_steps(1, 9000, 2) == 4500
    assert epoch_steps(12, 9000, 128) == 844  # 843.75 rounded
    assert epoch_steps(0.001, 9000, 128) == 1


def test_cells_run_smallest_batches_first_with_their_own_training_section():
    cfg = load_config(None, EXPERIMENT)
    cells = make_cells(cfg, ["bn_relu", "evonorm_s0"], [128, 2, 32], seeds=2, epochs=3, num_train=9000)
    assert [c.batch_size for c in cells] == [2] * 4 + [32] * 4 + [128] * 4
    assert {(c.layer, c.seed) for c in cells if c.batch_size == 2} == {(l, s) for l in ("bn_relu", "evonorm_s0")
                                                                       for s in (0, 1)}
    for cell in cells:
        train = cell.cfg["train"]
        assert train["batch_size"] == cell.batch_size
        assert train["lr"] == pytest.approx(cfg["train"]["lr"] * cell.batch_size / cfg["train"]["batch_size"])
        assert math.isclose(train["steps"] * cell.batch_size, 27000, rel_tol=0.01)
        assert not cell.cfg["quality"]["enabled"] and cell.cfg["train"]["test"]
    assert cfg["train"]["batch_size"] == 64, "the base config must stay untouched"


def test_a_batch_larger_than_the_training_set_is_refused():
    with pytest.raises(ValueError, match="batch size 512 exceeds the 300 training images"):
        make_cells(load_config(None, EXPERIMENT), ["bn_relu"], [512], 1, 1.0, 300)


def row(layer, batch, acc, status="ok"):
    return {"layer": layer, "batch_size": batch, "seed": 0, "status": status, "test_accuracy": acc}


def test_table_means_over_seeds_marks_failed_cells_and_compares_s0_with_bn_at_the_smallest_batch():
    rows = [row("bn_relu", 128, 0.6), row("bn_relu", 2, 0.4), {**row("bn_relu", 2, 0.5), "seed": 1},
            row("evonorm_s0", 128, 0.55), row("evonorm_s0", 2, float("nan"), status="failed")]
    lines = table(rows, ["bn_relu", "evonorm_s0"], [128, 2])
    assert lines[1].split() == ["bn_relu", "0.600", "0.450", "-15.0"]
    assert lines[2].split() == ["evonorm_s0", "0.550", "-", "-"]
    assert len(lines) == 3, "no S0-BN comparison without an S0 result at batch 2"
    rows[-1] = row("evonorm_s0", 2, 0.5)
    assert table(rows, ["bn_relu", "evonorm_s0"], [128, 2])[-1] == "at batch 2: evonorm_s0 - bn_relu = +5.0 points"
