"""Batch transforms: to-tensor, normalize, random crop with padding, random horizontal flip.

A transform maps a whole batch of images (B, C, H, W) at once, vectorised in numpy, and
takes its randomness from the `rng` it is handed. DataLoader(transform=...) hands it a
generator seeded with (loader seed, epoch, batch index), so a batch's augmentation depends on
nothing else: not on worker scheduling, not on where a resumed run restarted.
Transforms accept numpy arrays or Tensors and return the same kind.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from graphc.tensor import Tensor


class Transform:
    random = True  # draws from its rng (a DataLoader makes none for deterministic transforms)

    def __call__(self, images, rng: np.random.Generator | None = None):
        if rng is None and self.random:
            rng = np.random.default_rng()
        if isinstance(images, Tensor):
            return Tensor._wrap(self.apply(images.detach().numpy(), rng))
        return self.apply(np.asarray(images), rng)

    def apply(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def _check_batch(images: np.ndarray, who: str) -> None:
    if images.ndim != 4:
        raise ValueError(f"{who}: expected a batch of images (B, C, H, W), got {images.shape}")


class Compose(Transform):
    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)
        self.random = any(t.random for t in self.transforms)

    def apply(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for t in self.transforms:
            images = t.apply(images, rng)
        return images


class ToTensor(Transform):
    """torchvision's ToTensor for batches: uint8 images become float32 in [0, 1]; images that
    are float already (what graphc's data sets yield) pass through unchanged."""

    random = False

    def __init__(self) -> None:
        pass

    def apply(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if images.dtype == np.uint8:
            return np.divide(images, 255, dtype=np.float32)
        return images


class Normalize(Transform):
    """(x - mean[c]) / std[c] per channel, as torchvision's Normalize.

    inplace=True overwrites a float32 input instead of allocating: use it where the batch is
    a fresh array nobody else holds (a DataLoader batch gathered from an ImageDataset is).
    Fresh allocations cost more than the arithmetic here (page faults on ~0.8 MB per batch).
    """

    random = False

    def __init__(self, mean: Sequence[float], std: Sequence[float], inplace: bool = False):
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.inplace = inplace
        if len(self.mean) != len(self.std):
            raise ValueError(f"Normalize: {len(self.mean)} means but {len(self.std)} stds")
        if any(s == 0 for s in self.std):
            raise ValueError(f"Normalize: std evaluated to zero ({self.std}), division by zero")
        self._mean = np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1)
        self._inv_std = (1.0 / np.asarray(self.std, np.float32)).reshape(1, -1, 1, 1)

    def apply(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check_batch(images, "Normalize")
        if images.shape[1] != self._mean.shape[1] and self._mean.shape[1] != 1:
            raise ValueError(
                f"Normalize: {self._mean.shape[1]} channel statistics for images with "
                f"{images.shape[1]} channels"
            )
        if self.inplace and images.dtype == np.float32 and images.flags.writeable:
            out = images
            out -= self._mean
        else:
            out = np.subtract(images, self._mean, dtype=np.float32)
        out *= self._inv_std
        return out


class RandomCrop(Transform):
    """Pads each image by `padding` (with `fill`), then crops a random size x size window."""

    def __init__(self, size: int | tuple[int, int], padding: int = 0, fill: float = 0.0) -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.padding = int(padding)
        self.fill = fill

    def apply(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check_batch(images, "RandomCrop")
        p = self.padding
        if p:
            pad = ((0, 0), (0, 0), (p, p), (p, p))
            images = np.pad(images, pad, mode="constant", constant_values=self.fill)
        b, _, h, w = images.shape
        th, tw = self.size
        if th > h or tw > w:
            raise ValueError(
                f"RandomCrop: crop size {self.size} is larger than the padded image ({h}, {w})"
            )
        top = rng.integers(0, h - th + 1, b)
        left = rng.integers(0, w - tw + 1, b)
        # every (th, tw) window as a view; then one gather picks each image's window
        windows = sliding_window_view(images, (th, tw), axis=(2, 3))
        return np.ascontiguousarray(windows[np.arange(b), :, top, left])


class RandomHorizontalFlip(Transform):
    """Mirrors each image left-right with probability p."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = float(p)

    def apply(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check_batch(images, "RandomHorizontalFlip")
        flip = rng.random(images.shape[0]) < self.p
        if not flip.any():
            return images
        out = np.array(images, copy=True)
        out[flip] = images[flip][..., ::-1]
        return out
