"""Shared fixtures: a tiny synthetic config, fake CIFAR-10 folders, and the real subset."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from evaluator.config import load_config

REPO = Path(__file__).resolve().parents[2]

# Small enough that an evaluation on two tiny networks takes about a second on one thread.
TINY = [
    "data.synthetic=true", "data.synthetic_size=640", "data.val_size=160",
    "model.archs=[resnet, mobilenetv2]", "model.groups=4",
    "model.resnet.width=0.5", "model.resnet.depth=0.33", "model.resnet.stem_stride=2",
    "model.mobilenetv2.width=0.5", "model.mobilenetv2.depth=0.2", "model.mobilenetv2.stem_stride=2",
    "model.efficientnet.width=0.25", "model.efficientnet.depth=0.2", "model.efficientnet.stem_stride=2",
    "train.steps=40", "train.batch_size=32", "train.lr=0.1", "train.eval_batch_size=256",
    "quality.steps=20", "quality.min_accuracy=0.2",
    "stability.batch_size=16", "stability.ascent_steps=2",
]


@pytest.fixture
def tiny_cfg():
    """``tiny_cfg(*overrides)``: the tiny synthetic config with dotted overrides."""
    return lambda *overrides: load_config(None, TINY + list(overrides))


@pytest.fixture
def fake_cifar():
    """``fake_cifar(root, train_sizes, test_size)``: write a CIFAR-10 folder in the genuine format."""
    return _write_cifar


def _write_cifar(root: Path, train_sizes=(7, 5, 6, 3, 4), test_size=9, seed=0) -> Path:
    """A CIFAR-10 folder in the genuine pickle format with the given batch sizes; returns the folder."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, n in zip(names, list(train_sizes) + [test_size]):
        doc = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, n).tolist(),
               b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}
        with open(folder / name, "wb") as f:
            pickle.dump(doc, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"c%d" % i for i in range(10)]}, f)
    return folder


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The shared CIFAR-10 subset: $EVONORM_DATA, else ../shared/data beside the repo (fails under CI=true)."""
    root = Path(os.environ.get("EVONORM_DATA") or REPO.parent / "shared" / "data")
    if not (root / "cifar-10-batches-py" / "data_batch_1").is_file():
        message = f"the real CIFAR-10 subset is not at {root} (set EVONORM_DATA)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return root
