"""CIFAR-10 in its genuine python format, a synthetic stand-in, the validation split and augmentation.

The search spends nearly all its time in short proxy trainings, so the data path does no per-image Python
work: the images are read once into uint8 tensors (``Dataset``), and every training batch is gathered,
normalised, randomly cropped (padding 4) and flipped as whole-batch tensor ops (``Dataset.train_batch``).

The data root is looked up in this order: the configured ``data.root``, ``$EVONORM_DATA``, ``./data``. It
may hold ``cifar-10-batches-py/`` or be that folder itself. Batches may hold any number of images.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F

__all__ = ["DataError", "Dataset", "load_dataset", "check_val_size", "resolve_root", "read_cifar10",
           "synthetic_cifar10", "CIFAR_URL", "CIFAR_MD5", "FOLDER", "TRAIN_FILES", "TEST_FILE"]

log = logging.getLogger(__name__)

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
# per-channel statistics of the CIFAR-10 training set, on [0, 1] pixels
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
PAD = 4


class DataError(RuntimeError):
    """The dataset cannot be found, fetched or read; the message says where to put the files."""


Arrays = tuple[torch.Tensor, torch.Tensor]  # uint8 images (N, 3, 32, 32), int64 labels (N,)


def resolve_root(root: str | os.PathLike | None) -> Path:
    """The configured root, else ``$EVONORM_DATA``, else ``./data``."""
    if root:
        return Path(root).expanduser()
    env = os.environ.get("EVONORM_DATA")
    return Path(env).expanduser() if env else Path("data")


def _batch_folder(root: Path) -> Path | None:
    for folder in (root / FOLDER, root):
        if all((folder / name).is_file() for name in TRAIN_FILES + (TEST_FILE,)):
            return folder
    return None


def _read_batch(path: Path) -> Arrays:
    try:
        with open(path, "rb") as f:
            doc = pickle.load(f, encoding="bytes")
        data, labels = doc[b"data"], doc[b"labels"]
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError) as err:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {err!r}") from None
    images = torch.as_tensor(data, dtype=torch.uint8)
    if images.dim() != 2 or images.shape[1] != 3 * 32 * 32 or images.shape[0] != len(labels):
        raise DataError(f"{path}: expected data of shape (N, 3072) and N labels, "
                        f"got data {tuple(images.shape)} and {len(labels)} labels")
    return images.reshape(-1, 3, 32, 32), torch.as_tensor(labels, dtype=torch.int64)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(root: Path) -> None:
    """Fetch the official archive, check its MD5 and extract it under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        archive = Path(tmp) / "cifar-10-python.tar.gz"
        log.info("downloading %s to %s", CIFAR_URL, root)
        with urllib.request.urlopen(CIFAR_URL, timeout=60) as response, open(archive, "wb") as f:
            shutil.copyfileobj(response, f)
        md5 = _md5(archive)
        if md5 != CIFAR_MD5:
            raise DataError(f"downloaded {CIFAR_URL} has MD5 {md5}, expected {CIFAR_MD5}; "
                            f"delete it and try again")
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(root, filter="data")


def read_cifar10(root: str | os.PathLike | None = None, download: bool = False) -> tuple[Arrays, Arrays]:
    """The training files concatenated, and the test batch, as uint8 tensors."""
    path = resolve_root(root)
    folder = _batch_folder(path)
    if folder is None and download:
        try:
            _download(path)
        except DataError:
            raise
        except Exception as err:  # no network, proxy, disk full: say what to do instead
            raise DataError(
                f"CIFAR-10 is not in {path.resolve()} and downloading {CIFAR_URL} failed ({err!r}). "
                f"Download and extract it by hand so that {path / FOLDER}/data_batch_1 exists, "
                f"or point data.root (or $EVONORM_DATA) at a folder holding {FOLDER}/") from None
        folder = _batch_folder(path)
    if folder is None:
        raise DataError(
            f"CIFAR-10 not found: {path.resolve()} holds no {FOLDER}/ with {', '.join(TRAIN_FILES)} and "
            f"{TEST_FILE}. Set data.download: true to fetch it, or extract {CIFAR_URL} there, or point "
            f"data.root (or $EVONORM_DATA) at the folder that holds it")
    parts = [_read_batch(folder / name) for name in TRAIN_FILES]
    train = torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])
    return train, _read_batch(folder / TEST_FILE)


def synthetic_cifar10(num_train: int, seed: int = 0) -> tuple[Arrays, Arrays]:
    """A learnable stand-in with CIFAR-10's shapes: each class is a smooth random colour pattern.

    Every image is its class's pattern, randomly shifted by up to 4 pixels, plus pixel noise, so small
    networks learn it within tens of steps while a layer that discards its input stays at chance.
    """
    g = torch.Generator().manual_seed(seed)
    templates = F.interpolate(torch.rand(10, 3, 4, 4, generator=g), size=40, mode="bicubic", align_corners=False)

    def draw(n: int) -> Arrays:
        labels = torch.randint(0, 10, (n,), generator=g)
        dx, dy = torch.randint(0, 2 * PAD + 1, (2, n), generator=g)
        images = _crop(templates[labels], dy, dx)
        images = images + 0.15 * torch.randn(images.shape, generator=g)
        return (images.clamp(0, 1) * 255).round().to(torch.uint8), labels

    return draw(num_train), draw(max(10, num_train // 5))


def _crop(padded: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor | None = None):
    """32x32 windows of (N, C, 40, 40) images at per-image offsets, optionally mirrored, in one gather."""
    n, c = padded.shape[:2]
    span = torch.arange(32, device=padded.device)
    rows = dy.to(padded.device)[:, None] + span
    cols = dx.to(padded.device)[:, None] + span
    if flip is not None:
        cols = torch.where(flip.to(padded.device)[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=padded.device)[:, None, None, None]
    chans = torch.arange(c, device=padded.device)[None, :, None, None]
    return padded[batch, chans, rows[:, None, :, None], cols[:, None, None, :]]


@dataclass
class Dataset:
    """Training images (uint8) for batches, and normalised float validation and test images."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    augment: bool = True

    def to(self, device: torch.device | str) -> "Dataset":
        return Dataset(*(getattr(self, k).to(device) for k in ("train_x", "train_y", "val_x", "val_y",
                                                               "test_x", "test_y")), augment=self.augment)

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def train_batch(self, index: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised, augmented float images and labels for the training images at ``index``."""
        x = normalize(self.train_x[index.to(self.device)])
        if self.augment:
            n = x.shape[0]
            dy, dx = torch.randint(0, 2 * PAD + 1, (2, n), generator=generator)
            flip = torch.rand(n, generator=generator) < 0.5
            x = _crop(F.pad(x, (PAD,) * 4), dy, dx, flip)
        return x, self.train_y[index.to(self.device)]


class BatchOrder:
    """Shuffled epochs of training indices, drawn from its own generator (reproducible per seed)."""

    def __init__(self, num_images: int, batch_size: int, generator: torch.Generator):
        if num_images < batch_size:
            raise ValueError(f"batch_size={batch_size} exceeds the {num_images} training images")
        self.num_images, self.batch_size, self.generator = num_images, batch_size, generator
        self._order = torch.empty(0, dtype=torch.int64)
        self._pos = 0

    def next(self) -> torch.Tensor:
        if self._pos + self.batch_size > len(self._order):
            self._order = torch.randperm(self.num_images, generator=self.generator)
            self._pos = 0
        index = self._order[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        return index


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float32, per-channel standardised with the CIFAR-10 statistics."""
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def check_val_size(data_cfg: Mapping[str, Any], num_images: int) -> int:
    """``data.val_size``, if it leaves some of the ``num_images`` training images to train on."""
    if data_cfg["val_size"] >= num_images:
        raise DataError(f"data.val_size={data_cfg['val_size']} leaves none of the {num_images} training images "
                        "to train on; lower it")
    return data_cfg["val_size"]


def load_dataset(data_cfg: Mapping[str, Any], seed: int = 0) -> Dataset:
    """Read (or generate) the images and hold out ``val_size`` of the training images, fixed by ``seed``
    (none when it is 0: final retraining uses every training image and scores on the test batch). A fixed
    count, not a fraction, so that a validation costs the same on any dataset."""
    if data_cfg["synthetic"]:
        (train_x, train_y), (test_x, test_y) = synthetic_cifar10(data_cfg["synthetic_size"], seed)
    else:
        (train_x, train_y), (test_x, test_y) = read_cifar10(data_cfg["root"], data_cfg["download"])
    order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed))
    num_val = check_val_size(data_cfg, len(order))
    val, train = order[:num_val], order[num_val:]
    if data_cfg["max_train"]:
        train = train[:data_cfg["max_train"]]
    log.info("dataset: %d training, %d validation, %d test images", len(train), len(val), len(test_y))
    return Dataset(train_x[train].contiguous(), train_y[train], normalize(train_x[val]), train_y[val],
                   normalize(test_x), test_y, augment=data_cfg["augment"])
