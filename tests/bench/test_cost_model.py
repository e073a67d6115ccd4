"""bench/cost_model.py on three graphs and a tiny input: the table's columns and the model's column (no timed
assertions: the times are whatever this machine gives)."""
import csv

from bench import cost_model
from primitives import seeds
from primitives.cost import relative_cost


def test_cost_model_writes_the_table_and_the_scatter(tmp_path):
    argv = ["--random", "1", "--seeds", "evonorm_s0,evonorm_s2", "--repeats", "2", "--iters", "1",
            "--shape", "2,8,4,4", "--groups", "4", "--out", str(tmp_path)]
    assert cost_model.main(argv) == 0
    with open(tmp_path / "cost_model.csv") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == cost_model.FIELDS
    assert [r["kind"] for r in rows] == ["reference", "seed", "seed", "random"]
    assert float(rows[1]["model_cost"]) == round(relative_cost(seeds.get("evonorm_s0")), 3)
    assert all(float(r["measured_cost"]) > 0 and float(r["ms"]) > 0 for r in rows)
    assert (tmp_path / "cost_model.png").stat().st_size > 5000
