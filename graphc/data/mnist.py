"""MNIST: the IDX files, gzipped or not, as distributed (and as torchvision lays them out).

IDX: two zero bytes, a type code (0x08 = uint8), the number of dimensions, each dimension as
a big-endian int32, then the data. Images are idx3 (N, 28, 28), labels idx1 (N,). The same
reader serves Fashion-MNIST, which uses the same file names and format.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from graphc.data.dataset import ImageDataset
from graphc.errors import DataError

FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def how_to_get(root: str | os.PathLike) -> str:
    return (
        "graphc never downloads data: get the four MNIST files (train-images-idx3-ubyte.gz, "
        "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) "
        f"and put them, gzipped or not, in {root}"
    )


class MNIST(ImageDataset):
    """MNIST: 60,000 training or 10,000 test images, 1x28x28, 10 classes."""

    classes = tuple(str(d) for d in range(10))
    mean = (0.1307,)
    std = (0.3081,)

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
        image_name, label_name = FILES[train]
        image_path = find_file(self.root, image_name)
        label_path = find_file(self.root, label_name)
        images = read_idx(image_path, ndim=3, root=self.root)
        labels = read_idx(label_path, ndim=1, root=self.root)
        if images.dtype != np.uint8 or labels.dtype != np.uint8:
            raise DataError(f"{image_path} / {label_path}: MNIST files hold uint8 (type 0x08)")
        if len(images) != len(labels):
            raise DataError(
                f"{image_path} has {len(images)} images but {label_path} has {len(labels)} "
                f"labels; one of them is from another data set or truncated. {how_to_get(root)}"
            )
        if len(labels) and labels.max() > 9:
            raise DataError(f"{label_path}: labels must be in 0..9, found {labels.max()}")
        super().__init__(images[:, None], labels.astype(np.int64))


def find_file(root: Path, name: str) -> Path:
    """root/name, name.gz, the dotted variant (train-images.idx3-ubyte), or the same under
    torchvision's MNIST/raw layout."""
    names = [name, name + ".gz"]
    dotted = name.replace("-idx", ".idx")
    names += [dotted, dotted + ".gz"]
    for folder in (root, root / "MNIST" / "raw", root / "raw"):
        for n in names:
            if (folder / n).is_file():
                return folder / n
    where = "does not exist" if not root.exists() else f"has no {name}[.gz]"
    raise DataError(f"MNIST not found: {root} {where}. {how_to_get(root)}")


def read_idx(path: Path, ndim: int | None = None, root: Path | str = ".") -> np.ndarray:
    """An IDX file (gzipped or not; told by its first bytes, not its name) as an array."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"{path} could not be read or decompressed ({e}); it may be truncated: download "
            f"it again. {how_to_get(root)}"
        ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(
            f"{path} is not an IDX file (its first bytes are {raw[:4].hex()}, expected 0000 "
            f"then a type code such as 08). {how_to_get(root)}"
        )
    dims_count = raw[3]
    if ndim is not None and dims_count != ndim:
        raise DataError(f"{path}: expected an IDX file with {ndim} dimensions, found {dims_count}")
    header = 4 + 4 * dims_count
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its header. {how_to_get(root)}")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", dims_count, 4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(
            f"{path} is {state}: the header promises {list(dims)} values of {dtype.name} "
            f"({expected} bytes), the file has {len(raw)} bytes. {how_to_get(root)}"
        )
    data = np.frombuffer(raw, dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=True)
