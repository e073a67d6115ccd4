"""bench/proxy_fidelity.py: the panel, its seeds and schedule, and what a resumed run skips."""
import csv

from bench.proxy_fidelity import FIELDS, _done, load_panel, panel_seeds, truth_overrides
from primitives import graph_from_yaml
from primitives.classify import layer_class


def test_the_panel_holds_references_every_evonorm_and_found_layers_of_every_class():
    panel = load_panel()
    names = [layer.name for layer in panel]
    assert len(panel) >= 16 and len(set(names)) == len(names)
    assert {"bn_relu", "gn_relu"} <= set(names) and all(layer.graph_yaml is None for layer in panel[:2])
    assert {f"evonorm_{v}" for v in ("b0", "b1", "b2", "s0", "s1", "s2")} <= set(names)
    found = [graph_from_yaml(layer.graph_yaml) for layer in panel if layer.name.startswith("found_")]
    assert len(found) >= 8
    assert {"gated normalizer", "normalizer", "pointwise", "other statistic"} <= {layer_class(g) for g in found}
    assert panel[0].job(0, 5).name == "bn_relu" and panel[-1].job(3, 5).name is None  # a graph travels as YAML


def test_seeds_and_schedule_do_not_depend_on_anything_else():
    assert panel_seeds(3)[:2] == panel_seeds(2) and len(set(panel_seeds(3))) == 3
    assert "train.steps=3125" in truth_overrides(10, 10_000, 32)   # 10 epochs of 10k images at batch 32
    assert "train.steps=15625" in truth_overrides(10, 50_000, 32)  # the same epochs on the full training set


def test_a_resumed_run_skips_what_the_csv_holds_for_that_proxy(tmp_path):
    path = tmp_path / "p.csv"
    assert _done(path, "truth") == set()
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(FIELDS)
        writer.writerow(["truth", "bn_relu", 0, 1, "resnet", 0.5, "ok", "", 10, 1.0, 100, ""])
        writer.writerow(["quick", "gn_relu", 1, 2, "resnet", 0.4, "ok", "", 10, 1.0, 100, ""])
    assert _done(path, "truth") == {("bn_relu", 0)} and _done(path, "quick") == {("gn_relu", 1)}
