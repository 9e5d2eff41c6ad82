"""Map-style data sets: the Dataset protocol, TensorDataset, Subset and ImageDataset.

A data set may define `get_batch(indices) -> tuple of Tensors`, the whole batch gathered with
one fancy-indexing operation. DataLoader uses it instead of `len(batch)` calls to
`__getitem__` plus stacking whenever no custom collate_fn is given: for image data held in
one array that is the difference between a gather and a Python loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from graphc import dispatch
from graphc.errors import ShapeError
from graphc.tensor import Tensor


class Dataset:
    """A map from an index in [0, len) to a sample, as torch.utils.data.Dataset."""

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define __len__")


def _array_of(t: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(t, np.ndarray):
        return t
    if isinstance(t, Tensor):
        return t.detach().numpy()
    raise TypeError(f"TensorDataset expects tensors or numpy arrays, got {type(t).__name__}")


class TensorDataset(Dataset):
    """Samples are the i-th rows of each tensor: (images[i], labels[i])."""

    def __init__(self, *tensors: Tensor | np.ndarray) -> None:
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor")
        self._arrays = [_array_of(t) for t in tensors]
        sizes = {a.shape[0] if a.ndim else None for a in self._arrays}
        if len(sizes) != 1 or None in sizes:
            shapes = ", ".join(str(list(a.shape)) for a in self._arrays)
            raise dispatch.user_error(
                ShapeError,
                f"TensorDataset: size mismatch between tensors ({shapes}); every tensor needs "
                "one entry per sample along its first dimension",
            )
        self.tensors = tuple(t if isinstance(t, Tensor) else Tensor._wrap(t) for t in tensors)

    def __len__(self) -> int:
        return self._arrays[0].shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        return tuple(Tensor._wrap(np.asarray(a[index])) for a in self._arrays)

    def get_batch(self, indices: np.ndarray) -> tuple[Tensor, ...]:
        return tuple(Tensor._wrap(a[indices]) for a in self._arrays)


class Subset(Dataset):
    """The samples of `dataset` at `indices`, in that order."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[int(self.indices[index])]

    @property
    def get_batch(self):
        # a batch gather exists only when the wrapped data set has one (hasattr says so)
        inner = getattr(self.dataset, "get_batch", None)
        if inner is None:
            raise AttributeError(f"{type(self.dataset).__name__} has no get_batch")
        return lambda indices: inner(self.indices[np.asarray(indices)])


class ImageDataset(Dataset):
    """Images held as one uint8 array (N, C, H, W) with int64 labels (N,).

    Samples come out as torchvision's ToTensor makes them: float32 in [0, 1], CHW. Keeping
    uint8 in memory costs a quarter of float32 (CIFAR-10: 150 MB instead of 600 MB); the
    conversion happens per batch. `mean` and `std` are the per-channel statistics that
    transforms.Normalize wants for this data.
    """

    classes: Sequence[str] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    # torchvision's per-sample transforms, applied here to whole batches (get_batch) or to a
    # batch of one (__getitem__): graphc's transforms map batches (graphc.data.transforms)
    transform = None
    target_transform = None

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype}{images.shape}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"{len(labels)} labels for {len(images)} images")
        self.images = images
        self.labels = labels.astype(np.int64, copy=False)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes else int(self.labels.max()) + 1

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = np.divide(self.images[index], 255, dtype=np.float32)
        label = int(self.labels[index])
        if self.transform is not None:
            image = np.asarray(self.transform(image[None]))[0]
        if self.target_transform is not None:
            label = self.target_transform(label)
        return Tensor._wrap(image), label

    def get_batch(self, indices: np.ndarray) -> tuple[Tensor, Tensor]:
        images = np.divide(self.images[indices], 255, dtype=np.float32)
        labels = self.labels[indices]
        if self.transform is not None:
            images = np.asarray(self.transform(images))
        if self.target_transform is not None:
            labels = np.asarray([self.target_transform(int(v)) for v in labels])
        return Tensor._wrap(images), Tensor._wrap(labels)

    def __repr__(self) -> str:
        c, h, w = self.sample_shape
        return (
            f"{type(self).__name__}({len(self)} images of {c}x{h}x{w}, {self.num_classes} classes)"
        )
