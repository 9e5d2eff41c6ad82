"""Shared test fixtures. PyTorch is the numerical oracle: tests that need it skip without it."""

from __future__ import annotations

import os

# One BLAS thread: the references then run the same on a loaded machine as on an idle one
# (OpenBLAS's own threads collapse when the cores are oversubscribed). Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import graphc  # noqa: E402

os.environ.setdefault("GRAPHC_CACHE_DIR", os.path.join(os.path.dirname(__file__), ".cache"))


def torch_or_skip():
    """The torch module, or a clean skip when PyTorch is not installed."""
    return pytest.importorskip("torch", reason="PyTorch (the numerical oracle) is not installed")


@pytest.fixture
def torch():
    t = torch_or_skip()
    t.manual_seed(0)
    t.set_num_threads(1)
    return t


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seed():
    graphc.manual_seed(0)
    yield
