"""CIFAR10: the standard python-version batch files, read without running pickle code.

`root` may be the extracted `cifar-10-batches-py` directory, its parent, or a directory
holding (or the path of) the original `cifar-10-python.tar.gz`, read in place. Each batch
file is a pickled dict {b"data": uint8 (N, 3072), b"labels": [N ints], ...}; it goes through
graphc.data.safe_pickle, which admits nothing but such plain data.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from graphc.data.dataset import ImageDataset
from graphc.data.safe_pickle import UnsafePickleError, loads_plain_data
from graphc.errors import DataError

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def how_to_get(root: str | os.PathLike) -> str:
    return (
        f"graphc never downloads data: get {ARCHIVE} (the 'CIFAR-10 python version' from "
        f"https://www.cs.toronto.edu/~kriz/cifar.html) and put it, or the {FOLDER} "
        f"directory extracted from it, in {root}"
    )


class CIFAR10(ImageDataset):
    """CIFAR-10: 50,000 training or 10,000 test images, 3x32x32, 10 classes."""

    classes = CLASSES
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)

    def __init__(
        self,
        root: str | os.PathLike,
        train: bool = True,
        transform=None,
        target_transform=None,
        download: bool = False,
    ):
        """torchvision's arguments: `transform` maps the images (graphc applies it to whole
        batches, see graphc.data.transforms), `target_transform` each label; download=True
        is accepted when the files are there already (graphc never downloads)."""
        self.transform, self.target_transform = transform, target_transform
        self.root = Path(root)
        self.train = train
        names = TRAIN_FILES if train else TEST_FILES
        read, where = _source(self.root, names)
        images, labels = [], []
        for name in names:
            data, lab = parse_batch(read(name), f"{where}/{name}", self.root)
            images.append(data)
            labels.append(lab)
        super().__init__(np.concatenate(images), np.concatenate(labels))


def _source(root: Path, names) -> tuple[Callable[[str], bytes], str]:
    """(read(name) -> bytes, description) for the batch files under root."""
    if root.is_file():
        return _tar_reader(root, names, root), str(root)
    for folder in (root / FOLDER, root):
        if any((folder / n).exists() for n in TRAIN_FILES + TEST_FILES):
            return _dir_reader(folder, root), str(folder)
    if (root / ARCHIVE).is_file():
        return _tar_reader(root / ARCHIVE, names, root), str(root / ARCHIVE)
    what = "does not exist" if not root.exists() else f"has no {FOLDER} directory or {ARCHIVE}"
    raise DataError(f"CIFAR-10 not found: {root} {what}. {how_to_get(root)}")


def _dir_reader(folder: Path, root: Path) -> Callable[[str], bytes]:
    def read(name: str) -> bytes:
        path = folder / name
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise DataError(
                f"CIFAR-10 batch file {path} is missing (expected {', '.join(TRAIN_FILES)} "
                f"and {TEST_FILES[0]}). {how_to_get(root)}"
            ) from None

    return read


def _tar_reader(archive: Path, names, root: Path) -> Callable[[str], bytes]:
    """Reads the wanted members in one sequential pass over the gzip stream."""
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for info in tar:
                base = info.name.rsplit("/", 1)[-1]
                if info.isfile() and base in names:
                    members[base] = tar.extractfile(info).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(
            f"{archive} is not a readable {ARCHIVE} ({e}); it may be truncated: download "
            f"it again. {how_to_get(root)}"
        ) from None

    def read(name: str) -> bytes:
        if name not in members:
            raise DataError(f"{archive} has no member {FOLDER}/{name}. {how_to_get(root)}")
        return members[name]

    return read


def parse_batch(raw: bytes, where: str, root: Path | str = ".") -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) from one batch file's bytes."""
    try:
        batch = loads_plain_data(raw)
    except UnsafePickleError as e:
        raise DataError(
            f"{where} was refused: {e}. It is not a genuine CIFAR-10 batch file: replace "
            f"it with the one from {ARCHIVE}"
        ) from None
    except Exception as e:  # a corrupt stream raises any of a dozen exception types
        raise DataError(
            f"{where} is truncated or corrupt ({type(e).__name__}: {e}); expected a CIFAR-10 "
            f"python batch (a pickled dict with b'data' and b'labels'). {how_to_get(root)}"
        ) from None
    if not isinstance(batch, dict):
        raise DataError(f"{where}: expected a pickled dict, found {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        found = f"{data.dtype}{list(data.shape)}" if isinstance(data, np.ndarray) else repr(data)
        raise DataError(
            f"{where}: 'data' should be a uint8 array of shape [N, 3072], found {found[:80]}"
        )
    if data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{where}: 'data' rows have {data.shape[1]} values, expected 3072")
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != len(data):
        count = len(labels) if isinstance(labels, (list, np.ndarray)) else "no"
        raise DataError(f"{where}: {count} labels for {len(data)} images")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: labels must be integers 0..9") from None
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{where}: labels must be in 0..9, found {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels
