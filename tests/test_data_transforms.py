"""Batch transforms against per-image loops, seeded reproducibility, and their use in a loader."""

import numpy as np
import pytest

import graphc
from graphc.data import DataLoader, TensorDataset
from graphc.data import transforms as T


@pytest.fixture
def batch():
    return np.random.default_rng(0).random((9, 3, 6, 5), dtype=np.float32)


def test_normalize_matches_formula(batch):
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    out = T.Normalize(mean, std)(batch)
    expected = (batch - np.reshape(mean, (1, 3, 1, 1))) / np.reshape(std, (1, 3, 1, 1))
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    assert out.dtype == np.float32
    copy = batch.copy()
    same = T.Normalize(mean, std, inplace=True)(copy)
    assert same is copy
    np.testing.assert_array_equal(same, out)
    with pytest.raises(ValueError, match="2 channel statistics for images with 3 channels"):
        T.Normalize((0.5, 0.5), (1, 1))(batch)
    with pytest.raises(ValueError, match="division by zero"):
        T.Normalize((0.5,), (0.0,))


def test_random_crop_matches_a_per_image_loop(batch):
    crop = T.RandomCrop((4, 3), padding=2, fill=-1.0)
    out = crop(batch, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    padded = np.pad(batch, ((0, 0), (0, 0), (2, 2), (2, 2)), constant_values=-1.0)
    top = rng.integers(0, 10 - 4 + 1, 9)
    left = rng.integers(0, 9 - 3 + 1, 9)
    for i in range(9):
        np.testing.assert_array_equal(
            out[i], padded[i, :, top[i] : top[i] + 4, left[i] : left[i] + 3]
        )
    assert out.shape == (9, 3, 4, 3) and out.flags.c_contiguous
    with pytest.raises(ValueError, match="larger than the padded image"):
        T.RandomCrop(20)(batch)


def test_random_horizontal_flip_matches_a_per_image_loop(batch):
    out = T.RandomHorizontalFlip(0.5)(batch, np.random.default_rng(3))
    flips = np.random.default_rng(3).random(9) < 0.5
    assert 0 < flips.sum() < 9
    for i in range(9):
        np.testing.assert_array_equal(out[i], batch[i, :, :, ::-1] if flips[i] else batch[i])
    np.testing.assert_array_equal(T.RandomHorizontalFlip(0.0)(batch), batch)
    np.testing.assert_array_equal(T.RandomHorizontalFlip(1.0)(batch), batch[..., ::-1])


def test_compose_and_tensors(batch):
    t = T.Compose([T.RandomCrop(5, padding=1), T.RandomHorizontalFlip(), T.Normalize([0.5], [2])])
    a = t(graphc.from_numpy(batch), np.random.default_rng(1))
    b = t(batch, np.random.default_rng(1))
    assert isinstance(a, graphc.Tensor)
    np.testing.assert_array_equal(a.numpy(), b)
    assert "RandomCrop" in repr(t)


def test_loader_augmentation_is_keyed_by_seed_epoch_and_batch():
    images = np.random.default_rng(1).random((20, 1, 4, 4), dtype=np.float32)
    ds = TensorDataset(images, np.arange(20))
    aug = T.Compose([T.RandomCrop(4, padding=1), T.RandomHorizontalFlip()])

    def epochs(loader, n=2):
        return [[x.numpy() for x, _ in loader] for _ in range(n)]

    a = epochs(DataLoader(ds, batch_size=6, seed=3, transform=aug))
    b = epochs(DataLoader(ds, batch_size=6, seed=3, transform=aug, num_workers=2))
    c = epochs(DataLoader(ds, batch_size=6, seed=4, transform=aug))
    for x, y in zip(a[0] + a[1], b[0] + b[1], strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a[0], a[1], strict=True))  # new epoch
    assert any(not np.array_equal(x, y) for x, y in zip(a[0], c[0], strict=True))  # new seed
