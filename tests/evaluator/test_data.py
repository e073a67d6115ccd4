"""Data loading: the genuine format (real subset and written files), root order, download, split, augmentation."""
from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import urllib.error
from pathlib import Path

import pytest
import torch

from evaluator import data as data_mod
from evaluator.config import DEFAULTS
from evaluator.data import (BatchOrder, DataError, load_dataset, normalize, read_cifar10, resolve_root,
                            synthetic_cifar10)


def data_cfg(**kw) -> dict:
    return {**DEFAULTS["data"], **kw}


def test_real_subset_reads_every_batch(real_root):
    (train_x, train_y), (test_x, test_y) = read_cifar10(real_root)
    folder = real_root / "cifar-10-batches-py"
    expected = 0
    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "rb") as f:
            expected += len(pickle.load(f, encoding="bytes")[b"labels"])
    assert train_x.shape == (expected, 3, 32, 32) and train_x.dtype == torch.uint8
    assert train_y.shape == (expected,) and set(train_y.unique().tolist()) == set(range(10))
    assert test_x.shape[1:] == (3, 32, 32) and len(test_x) == len(test_y)
    # rows of the genuine format are R, G, B planes of 1024 pixels each
    with open(folder / "data_batch_1", "rb") as f:
        first = pickle.load(f, encoding="bytes")[b"data"][0]
    assert torch.equal(train_x[0].reshape(-1), torch.as_tensor(first))


def test_real_subset_split_and_normalisation(real_root):
    ds = load_dataset(data_cfg(root=str(real_root), val_size=1000), seed=3)
    assert len(ds.val_y) == 1000
    # per-channel normalisation with the CIFAR-10 statistics gives roughly zero mean, unit std
    assert ds.val_x.mean((0, 2, 3)).abs().max() < 0.2
    assert (ds.val_x.std((0, 2, 3)) - 1).abs().max() < 0.2


def test_batches_of_any_size(tmp_path, fake_cifar):
    fake_cifar(tmp_path, train_sizes=(7, 5, 6, 3, 4), test_size=9)
    (train_x, train_y), (test_x, _) = read_cifar10(tmp_path)
    assert len(train_x) == len(train_y) == 25 and len(test_x) == 9


def test_root_may_be_the_batch_folder_itself(tmp_path, fake_cifar):
    folder = fake_cifar(tmp_path)
    assert len(read_cifar10(folder)[0][0]) == 25


def test_root_order(tmp_path, monkeypatch):
    monkeypatch.setenv("EVONORM_DATA", str(tmp_path / "env"))
    assert resolve_root(str(tmp_path / "cfg")) == tmp_path / "cfg"
    assert resolve_root(None) == tmp_path / "env"
    monkeypatch.delenv("EVONORM_DATA")
    assert resolve_root(None) == Path("data")


def test_missing_files_without_download_say_what_to_do(tmp_path):
    with pytest.raises(DataError) as err:
        read_cifar10(tmp_path / "nowhere", download=False)
    message = str(err.value)
    assert "nowhere" in message and "data.download" in message and "cifar-10-python.tar.gz" in message


def test_offline_download_says_where_to_put_the_files(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(data_mod.urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as err:
        read_cifar10(tmp_path, download=True)
    message = str(err.value)
    assert "downloading" in message and str(tmp_path / "cifar-10-batches-py") in message
    assert "data.root" in message


def _fake_archive(tmp_path: Path, fake_cifar) -> bytes:
    folder = fake_cifar(tmp_path / "src")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return buf.getvalue()


def _serve(monkeypatch, payload: bytes):
    monkeypatch.setattr(data_mod.urllib.request, "urlopen", lambda *a, **k: io.BytesIO(payload))


def test_download_checks_md5_and_extracts(tmp_path, monkeypatch, fake_cifar):
    payload = _fake_archive(tmp_path, fake_cifar)
    _serve(monkeypatch, payload)
    with pytest.raises(DataError, match="MD5"):
        read_cifar10(tmp_path / "root", download=True)
    assert not (tmp_path / "root" / "cifar-10-batches-py").exists()
    monkeypatch.setattr(data_mod, "CIFAR_MD5", hashlib.md5(payload).hexdigest())
    (train_x, _), _ = read_cifar10(tmp_path / "root", download=True)
    assert len(train_x) == 25


def test_corrupt_batch_names_the_file(tmp_path, fake_cifar):
    folder = fake_cifar(tmp_path)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3"):
        read_cifar10(tmp_path)


def test_synthetic_is_deterministic_and_shaped_like_cifar():
    (a, ya), (t, yt) = synthetic_cifar10(200, seed=1)
    (b, yb), _ = synthetic_cifar10(200, seed=1)
    assert a.shape == (200, 3, 32, 32) and a.dtype == torch.uint8 and t.shape == (40, 3, 32, 32)
    assert torch.equal(a, b) and torch.equal(ya, yb)
    assert not torch.equal(a, synthetic_cifar10(200, seed=2)[0][0])


def test_val_split_fixed_by_seed_and_disjoint():
    cfg = data_cfg(synthetic=True, synthetic_size=300, val_size=60)
    a, b, c = load_dataset(cfg, seed=0), load_dataset(cfg, seed=0), load_dataset(cfg, seed=1)
    assert len(a.val_y) == 60 and len(a.train_y) == 240
    assert torch.equal(a.val_x, b.val_x) and not torch.equal(a.val_x, c.val_x)
    train_rows = {tuple(r) for r in normalize(a.train_x).flatten(1)[:, :64].tolist()}
    assert not any(tuple(r) in train_rows for r in a.val_x.flatten(1)[:, :64].tolist())


def test_val_size_0_trains_on_every_image():
    ds = load_dataset(data_cfg(synthetic=True, synthetic_size=300, val_size=0), seed=0)
    assert len(ds.train_y) == 300 and len(ds.val_y) == 0 and ds.val_x.shape == (0, 3, 32, 32)


def test_val_size_is_a_count_whatever_the_dataset_size():
    small = load_dataset(data_cfg(synthetic=True, synthetic_size=300, val_size=50), seed=0)
    large = load_dataset(data_cfg(synthetic=True, synthetic_size=900, val_size=50), seed=0)
    assert len(small.val_y) == len(large.val_y) == 50
    assert (len(small.train_y), len(large.train_y)) == (250, 850)
    with pytest.raises(DataError, match="data.val_size=300 leaves none of the 300 training images"):
        load_dataset(data_cfg(synthetic=True, synthetic_size=300, val_size=300), seed=0)


def test_max_train_caps_the_training_images():
    ds = load_dataset(data_cfg(synthetic=True, synthetic_size=300, val_size=30, max_train=50), seed=0)
    assert len(ds.train_y) == 50


def test_augmentation_is_a_crop_of_the_padded_image_or_its_mirror():
    ds = load_dataset(data_cfg(synthetic=True, synthetic_size=100, val_size=20), seed=0)
    index = torch.arange(16)
    x, y = ds.train_batch(index, torch.Generator().manual_seed(0))
    assert x.shape == (16, 3, 32, 32) and torch.equal(y, ds.train_y[:16])
    padded = torch.nn.functional.pad(normalize(ds.train_x[:16]), (4,) * 4)
    for i in range(16):
        windows = [padded[i, :, r:r + 32, c:c + 32] for r in range(9) for c in range(9)]
        assert any(torch.equal(x[i], w) or torch.equal(x[i], w.flip(2)) for w in windows)
    again, _ = ds.train_batch(index, torch.Generator().manual_seed(0))
    assert torch.equal(x, again)
    ds.augment = False
    plain, _ = ds.train_batch(index, torch.Generator())
    assert torch.equal(plain, normalize(ds.train_x[:16]))


def test_batch_order_covers_each_epoch_once():
    order = BatchOrder(10, 3, torch.Generator().manual_seed(0))
    seen = torch.cat([order.next() for _ in range(3)])
    assert len(set(seen.tolist())) == 9
    with pytest.raises(ValueError, match="batch_size=20"):
        BatchOrder(10, 20, torch.Generator())
