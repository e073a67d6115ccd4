"""Config loading: defaults, overrides, and errors that name the key and the file."""
from __future__ import annotations

from pathlib import Path

import pytest

from evaluator.config import DEFAULTS, ConfigError, dump_config, load_config, merge, quality_step

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, key", [
    ("model:\n  widht: 2\n", "model.widht"),
    ("train:\n  steps: many\n", "train.steps"),
    ("train:\n  schedule: linear\n", "train.schedule"),
    ("model:\n  archs: [resnet, vgg]\n", "model.archs"),
    ("model:\n  resnet: {block: wide}\n", "model.resnet.block"),
    ("data:\n  val_size: -1\n", "data.val_size"),
    ("quality:\n  min_accuracy: -0.1\n", "quality.min_accuracy"),
    ("bogus: 1\n", "bogus"),
])
def test_bad_key_or_value_names_key_and_file(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"'{key}'" in str(err.value) and str(path) in str(err.value)


def test_override_errors_name_the_override():
    with pytest.raises(ConfigError, match=r"train\.lr.*--set train\.lr=fast|--set train\.lr=fast.*train\.lr"):
        load_config(None, ["train.lr=fast"])


def test_overrides_and_numbers_written_without_a_dot(tmp_path):
    path = write(tmp_path, "stability:\n  max_grad_norm: 1e6\n")
    cfg = load_config(path, ["train.steps=7", "model.resnet.width=0.5", "data.root=/x"])
    assert cfg["stability"]["max_grad_norm"] == 1e6
    assert cfg["train"]["steps"] == 7 and cfg["model"]["resnet"]["width"] == 0.5 and cfg["data"]["root"] == "/x"
    assert cfg["model"]["mobilenetv2"] == DEFAULTS["model"]["mobilenetv2"]
    assert load_config(None, ["seed=3"])["seed"] == 3


def test_foreign_sections_are_kept_only_when_asked(tmp_path):
    path = write(tmp_path, "search:\n  population: 8\ntrain:\n  steps: 5\n")
    with pytest.raises(ConfigError, match="'search'"):
        load_config(path)
    cfg = load_config(path, foreign_sections=True)
    assert cfg["search"] == {"population": 8} and cfg["train"]["steps"] == 5


def test_merged_defaults_validate_added_sections(tmp_path):
    defaults = merge(DEFAULTS, {"search": {"population": 10}})
    assert load_config(write(tmp_path, "search:\n  population: 4\n"), defaults=defaults)["search"]["population"] == 4
    with pytest.raises(ConfigError, match="search.popul"):
        load_config(write(tmp_path, "search:\n  popul: 4\n"), defaults=defaults)


@pytest.mark.parametrize("name", ["quick", "paper_b", "paper_s"])
def test_shipped_configs_load_and_round_trip(name, tmp_path):
    cfg = load_config(REPO / "configs" / f"{name}.yaml", foreign_sections=True)
    again = load_config(write(tmp_path, dump_config(cfg)), foreign_sections=True)
    assert again == cfg


@pytest.mark.parametrize("steps,train,expected", [(100, 2000, 100), (0.5, 200, 100), (0.5, 800, 400), (0.001, 200, 1)])
def test_quality_step_is_a_count_or_a_fraction_of_the_schedule(steps, train, expected):
    cfg = load_config(None, [f"quality.steps={steps}", f"train.steps={train}"])
    assert quality_step(cfg) == expected


@pytest.mark.parametrize("bad", ["0", "-0.5", "1.5", "100.5"])
def test_quality_steps_refuses_what_is_neither(bad):
    with pytest.raises(ConfigError, match="quality.steps"):
        load_config(None, [f"quality.steps={bad}"])
