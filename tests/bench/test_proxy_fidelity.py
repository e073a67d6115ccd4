"""bench/proxy_fidelity.py: the panel, its seeds and schedule, and what a resumed run skips."""
import csv

import pytest

from bench.proxy_fidelity import (CHANCE, FIELDS, _done, fidelity, fidelity_rows, load_panel, panel_seeds,
                                  read_scores, truth_overrides)
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


def _write(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(FIELDS)
        for proxy, layer, seed_index, arch, score, status in rows:
            writer.writerow([proxy, layer, seed_index, 7, arch, score, status, "" if status == "ok" else "quality",
                             10, 2.0, 100, ""])


def test_scores_average_the_architectures_and_a_rejected_evaluation_scores_chance(tmp_path):
    path = tmp_path / "p.csv"
    _write(path, [("q", "a", 0, "resnet", 0.5, "ok"), ("q", "a", 0, "mobilenetv2", 0.3, "ok"),
                  ("q", "b", 0, "resnet", 0.6, "rejected"), ("q", "b", 0, "mobilenetv2", "", "rejected")])
    scores, seconds = read_scores(path)["q"]
    assert scores["a"][0] == pytest.approx(0.4) and scores["b"][0] == CHANCE and seconds == 2.0


def test_fidelity_averages_every_k_subset_of_the_proxy_seeds():
    truth = {"a": {0: 0.6, 1: 0.6}, "b": {0: 0.5, 1: 0.5}, "c": {0: 0.4, 1: 0.4}}
    # seed 0 ranks a > b > c (rho 1); seed 1 ranks c > b > a (rho -1); their mean ties a and c with b between
    proxy = {"a": {0: 0.3, 1: 0.1}, "b": {0: 0.2, 1: 0.2}, "c": {0: 0.1, 1: 0.3}}
    assert fidelity(truth, proxy, 1)[:2] == pytest.approx((0.0, 0.0))
    rho, tau, interval = fidelity(truth, proxy, 2)
    assert rho == 0.0 and tau == 0.0  # a constant guess correlates with nothing
    assert fidelity(truth, proxy, 3) is None
    proxy["c"][1] = 0.05  # now seed 1 ranks b > a > c
    assert fidelity(truth, proxy, 1)[0] == pytest.approx((1.0 + 0.5) / 2)


def test_fidelity_rows_include_the_truth_ceiling_and_scale_the_cost_by_the_seeds():
    truth = {"a": {0: 0.6, 1: 0.58}, "b": {0: 0.5, 1: 0.52}, "c": {0: 0.4, 1: 0.3}}
    proxies = {"q": ({"a": {0: 0.3, 1: 0.31}, "b": {0: 0.2, 1: 0.21}, "c": {0: 0.1, 1: 0.11}}, 10.0)}
    rows = fidelity_rows(truth, proxies, 500.0)
    assert rows[0]["proxy"].startswith("truth") and rows[0]["spearman"] == 1.0
    assert [(r["proxy"], r["seeds"], r["core_seconds"], r["spearman"]) for r in rows[1:]] == [
        ("q", 1, 10.0, 1.0), ("q", 2, 20.0, 1.0)]
