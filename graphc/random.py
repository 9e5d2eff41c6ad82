"""Counter-based random numbers: value i of a draw is a pure function of (seed, offset + i).

Being a pure function of its counter, the same stream can be produced by the numpy reference,
by generated native code and by any number of threads, in any order. The mixing function is
splitmix64's finalizer; a uniform float takes the top 24 bits, so it is exact in float32.
"""

from __future__ import annotations

import threading

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix64(seed: int, counters: np.ndarray) -> np.ndarray:
    """splitmix64 of seed * golden + counter, elementwise (uint64, wrapping)."""
    z = np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * _GOLDEN + counters.astype(np.uint64) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def uniform(seed: int, offset: int, n: int, dtype=np.float32) -> np.ndarray:
    """n floats in [0, 1) from counters offset .. offset+n-1."""
    counters = np.arange(n, dtype=np.uint64) + np.uint64(offset & 0xFFFFFFFFFFFFFFFF)
    bits = mix64(seed, counters) >> np.uint64(40)
    return (bits.astype(np.float64) * (1.0 / (1 << 24))).astype(dtype)


def normal(seed: int, offset: int, n: int, dtype=np.float32) -> np.ndarray:
    """n standard normal floats by Box-Muller over counters offset .. offset+2n-1."""
    u = uniform(seed, offset, 2 * n, np.float64)
    u1 = 1.0 - u[0::2]  # (0, 1]: log is finite
    u2 = u[1::2]
    return (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)).astype(dtype)


class Generator:
    """A seed plus a counter offset that advances by what each draw consumed."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self.manual_seed(seed)

    def manual_seed(self, seed: int) -> Generator:
        with self._lock:
            self.seed = int(seed)
            self.offset = 0
        return self

    def take(self, n: int) -> tuple[int, int]:
        """Reserves n counters; returns (seed, first counter)."""
        with self._lock:
            start = self.offset
            self.offset += int(n)
            return self.seed, start

    def get_state(self) -> np.ndarray:
        return np.array([self.seed, self.offset], dtype=np.int64)

    def set_state(self, state) -> None:
        seed, offset = (int(v) for v in np.asarray(state).reshape(-1)[:2])
        with self._lock:
            self.seed, self.offset = seed, offset


default_generator = Generator(0)


def manual_seed(seed: int) -> Generator:
    """Seeds the default generator (weights initialisation, dropout, randn, shuffling)."""
    return default_generator.manual_seed(seed)
