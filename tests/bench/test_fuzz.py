"""The fuzz: a thousand random, mutated and malformed graphs through bench/fuzz.py's pipeline, and corrupt files
given to the graph and config loaders, which must end in a value or their own error, never another exception."""
import csv
import random
from pathlib import Path

import pytest

from bench import fuzz
from evaluator.config import ConfigError, load_config as load_evaluator_config
from primitives import GraphFormatError, LayerGraph, graph_from_dict, graph_from_yaml, graph_to_yaml, load_graph
from primitives import save_graph, seeds
from search.config import load_config as load_search_config

QUICK = Path(__file__).resolve().parents[2] / "configs" / "quick.yaml"
YAML_CHARS = "{}[]:-,#&*!|>'\"%@`? \n\t\\abcxn01.e"


def test_a_thousand_graphs_end_in_a_value_or_a_named_rejection():
    counts = fuzz.tally(fuzz.cases(random.Random(0), 1000), seed=0)
    assert sum(counts.values()) == 1000 and set(counts) <= set(fuzz.outcomes())
    assert all(counts[o] for o in ("ok", "invalid", "prefilter_constant", "prefilter_nonfinite")), counts


def test_an_unexpected_exception_is_raised_with_the_case_to_replay(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(fuzz, "prefilter", broken)
    with pytest.raises(RuntimeError, match="boom") as err:
        fuzz.tally(fuzz.cases(random.Random(0), 20), seed=7)
    assert "of seed 7" in "".join(err.value.__notes__)


@pytest.mark.parametrize("doc", [
    {"nodes": [{"id": 5, "op": "neg", "inputs": ["x"]}, {"id": "a: b", "op": "abs", "inputs": ["5"]}]},
    {"nodes": [{"id": "#c", "op": "neg", "inputs": ["x"]}, {"id": "-", "op": "max", "inputs": ["x", "#c"]}]},
    {"name": "null", "nodes": [{"id": "line\nbreak", "op": "neg", "inputs": ["x"]}]},
])
def test_graphs_with_ids_yaml_would_misread_survive_the_round_trip(doc):
    graph = graph_from_dict(doc)
    assert fuzz.outcome(fuzz.Case(graph, 4, (2, 8, 3, 3))) in fuzz.outcomes()
    assert graph_from_yaml(graph_to_yaml(graph)) == graph


def test_unknown_keys_of_mixed_types_are_named():
    with pytest.raises(GraphFormatError, match=r"unknown key\(s\) \[1, None, 'extra'\]"):
        graph_from_dict({"nodes": [{"op": "neg", "inputs": ["x"]}], "extra": 1, 1: 2, None: 3})


def test_main_prints_and_saves_the_count_of_each_outcome(tmp_path, capsys):
    assert fuzz.main(["--graphs", "30", "--nodes", "4", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "fuzz.csv")))
    assert [r["outcome"] for r in rows] == list(fuzz.outcomes())
    assert sum(int(r["count"]) for r in rows) == 30 and abs(sum(float(r["share"]) for r in rows) - 1) < 1e-9
    assert "prefilter_constant" in capsys.readouterr().out


def corruptions(data: bytes, rng: random.Random, step: int) -> list[bytes]:
    """``data`` cut after every ``step`` bytes and with a few bytes overwritten, random bytes, YAML-like noise,
    and invalid UTF-8."""
    cut = [data[:n] for n in range(0, len(data), step)]
    overwritten = []
    for _ in range(100):
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        overwritten.append(bytes(b))
    binary = [rng.randbytes(rng.randrange(1, 200)) for _ in range(100)]
    noise = ["".join(rng.choices(YAML_CHARS, k=rng.randrange(1, 80))).encode() for _ in range(100)]
    invalid_utf8 = [b"\xff\xfe", b"\x80" + data, data[:40] + b"\xc3\x28" + data[40:], data + b"\xed\xa0\x80"]
    return cut + overwritten + binary + noise + invalid_utf8


def test_corrupt_graph_files_end_in_a_graph_format_error(tmp_path):
    save_graph(seeds.get("evonorm_b0"), tmp_path / "b0.yaml")
    path, loaded = tmp_path / "corrupt.yaml", 0
    for data in corruptions((tmp_path / "b0.yaml").read_bytes(), random.Random(0), step=1):
        path.write_bytes(data)
        try:
            loaded += isinstance(load_graph(path), LayerGraph)
        except GraphFormatError as err:
            assert str(path) in str(err), data
    assert loaded  # a cut at the end of a node's line is a shorter graph


@pytest.mark.parametrize("load", [
    lambda path: load_evaluator_config(path, foreign_sections=True),  # as the evaluator's command line reads it
    load_search_config,
], ids=["evaluator", "search"])
def test_corrupt_config_files_end_in_a_config_error(tmp_path, load):
    path, loaded = tmp_path / "corrupt.yaml", 0
    for data in corruptions(QUICK.read_bytes(), random.Random(0), step=7):
        path.write_bytes(data)
        try:
            loaded += isinstance(load(path), dict)
        except ConfigError as err:
            assert str(path) in str(err), data
    assert loaded  # a cut between sections is a smaller config
