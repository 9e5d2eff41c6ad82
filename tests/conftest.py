"""Shared test fixtures. PyTorch is the numerical oracle: tests that need it skip without it."""

from __future__ import annotations

import os

import numpy as np
import pytest

import graphc

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
