import csv

import depthwise
from evaluator.config import load_config

from tests.evaluator.conftest import REPO


def test_shapes_are_the_networks_depthwise_convolutions_at_the_training_batch():
    cfg = load_config(REPO / "configs" / "quick.yaml", foreign_sections=True)
    found = depthwise.shapes(cfg, "mobilenetv2")
    assert found and all(n == cfg["train"]["batch_size"] and k == 3 for n, _, _, _, k, _ in found)
    assert {s for *_, s in found} == {1, 2} and len(set(found)) == len(found)


def test_main_times_every_job_for_every_shape_and_sums_them(tmp_path, capsys):
    assert depthwise.main(["--archs", "mobilenetv2", "--repeats", "1", "--calls", "1", "--out", str(tmp_path),
                           "--set", "train.batch_size=2"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "depthwise.csv")))
    shapes = {r["shape"] for r in rows} - {"all"}
    assert len(rows) == 3 * (len(shapes) + 1)
    assert all(float(r["onednn_us"]) > 0 and float(r["ours_us"]) > 0 for r in rows)
    assert "| mobilenetv2 | all |" in capsys.readouterr().out
