"""SyntheticCIFAR: the built-in data set, procedurally generated so nothing is downloaded.

CIFAR-shaped (3x32x32 images stored as uint8, 10 classes). Each image is one of ten shapes
(disk, ring, square, frame, plus, cross, triangle, horizontal stripes, vertical stripes,
checkerboard) drawn at a random position, size and tilt, in a random colour on a random
background with a brightness gradient and pixel noise. Colour and position carry no
information about the class; only shape does, so a model has to learn spatial features,
which a small ConvNet does within an epoch (and a linear model does not).

Deterministic from (seed, split): the train and test splits are drawn from different
streams of the same seed, so they never share images. Rendering is vectorised per class;
10,000 images take well under a second.
"""

from __future__ import annotations

import numpy as np

from graphc.data.dataset import ImageDataset

CLASSES = (
    "disk",
    "ring",
    "square",
    "frame",
    "plus",
    "cross",
    "triangle",
    "hstripes",
    "vstripes",
    "checker",
)
DEFAULT_TRAIN_SIZE = 10_000
DEFAULT_TEST_SIZE = 2_000
_CHUNK = 2048  # images rendered at a time: bounds the float32 scratch memory to ~50 MB


class SyntheticCIFAR(ImageDataset):
    """The built-in 10-class data set: `SyntheticCIFAR(train=True, size=None, seed=0)`."""

    classes = CLASSES
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)

    def __init__(self, train: bool = True, size: int | None = None, seed: int = 0) -> None:
        if size is None:
            size = DEFAULT_TRAIN_SIZE if train else DEFAULT_TEST_SIZE
        if size < 0:
            raise ValueError(f"SyntheticCIFAR: size must be >= 0, got {size}")
        self.train = train
        self.seed = seed
        images, labels = generate(size, seed, split=0 if train else 1)
        super().__init__(images, labels)


def generate(n: int, seed: int, split: int = 0, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """n images (uint8, N x 3 x size x size) and their labels, a pure function of the args."""
    rng = np.random.default_rng([seed, split, 0x5EED])
    labels = rng.permutation(np.arange(n) % len(CLASSES))  # balanced classes, shuffled
    images = np.empty((n, 3, size, size), np.uint8)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        images[start:stop] = _render(labels[start:stop], rng, size)
    return images, labels.astype(np.int64)


def _render(labels: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    n = len(labels)
    # pixel centres in [-1, 1]; y grows downwards as in an image
    axis = ((np.arange(size) + 0.5) / size * 2 - 1).astype(np.float32)
    y, x = axis[None, :, None], axis[None, None, :]
    cx, cy = _uniform(rng, -0.3, 0.3, (2, n, 1, 1))
    scale = _uniform(rng, 0.4, 0.7, (n, 1, 1))
    tilt = _uniform(rng, -0.35, 0.35, (n, 1, 1))
    dx, dy = (x - cx) / scale, (y - cy) / scale
    u = np.cos(tilt) * dx + np.sin(tilt) * dy  # shape-local coordinates
    v = -np.sin(tilt) * dx + np.cos(tilt) * dy

    mask = np.zeros((n, size, size), bool)
    for c in range(len(CLASSES)):
        sel = labels == c
        if sel.any():
            mask[sel] = _SHAPES[c](u[sel], v[sel])

    background = _uniform(rng, 0, 1, (n, 3, 1, 1))
    # the shape's colour differs from the background by 0.35..0.65 in every channel
    foreground = (background + _uniform(rng, 0.35, 0.65, (n, 3, 1, 1))) % 1.0
    gx, gy = _uniform(rng, -0.15, 0.15, (2, n, 1, 1, 1))
    img = np.where(mask[:, None], foreground, background)
    img += gx * x[:, None] + gy * y[:, None]  # a brightness gradient
    img += _uniform(rng, -0.1, 0.1, img.shape)  # pixel noise (uniform: 8x cheaper than normal)
    img *= 255
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _uniform(rng: np.random.Generator, low: float, high: float, shape) -> np.ndarray:
    r = rng.random(shape, dtype=np.float32)
    r *= high - low
    r += low
    return r


def _box(u, v, half=0.85):
    return np.maximum(np.abs(u), np.abs(v)) < half


def _plus(u, v):
    return ((np.abs(u) < 0.25) & (np.abs(v) < 0.95)) | ((np.abs(v) < 0.25) & (np.abs(u) < 0.95))


_SQRT_HALF = np.sqrt(0.5)
_SHAPES = (
    lambda u, v: u * u + v * v < 0.9,  # disk
    lambda u, v: (u * u + v * v < 0.95) & (u * u + v * v > 0.4),  # ring
    _box,  # square
    lambda u, v: _box(u, v, 0.9) & ~_box(u, v, 0.55),  # frame
    _plus,  # plus
    lambda u, v: _plus((u + v) * _SQRT_HALF, (v - u) * _SQRT_HALF),  # cross: plus at 45°
    lambda u, v: (v < 0.75) & (np.abs(u) < (v + 0.85) * 0.55),  # triangle, apex up
    lambda u, v: _box(u, v, 0.9) & (np.sin(v * 2.5 * np.pi) > 0),  # horizontal stripes
    lambda u, v: _box(u, v, 0.9) & (np.sin(u * 2.5 * np.pi) > 0),  # vertical stripes
    lambda u, v: _box(u, v, 0.9) & ((np.floor(u * 2.2) + np.floor(v * 2.2)) % 2 == 0),
)
