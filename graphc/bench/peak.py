"""The machine's achievable fp32 peak, measured in the same run: a large numpy sgemm on the
benchmark's thread count (set through OPENBLAS_NUM_THREADS by the parent before numpy loads).

The peak is the best of several repetitions: a maximum is what "peak" means, and on a shared
machine the best repetition is the one least disturbed by other processes. The median is
reported next to it to show how disturbed the others were.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

SGEMM_N = 2048  # 17.2 GFLOP per product: ~0.1 s on 2 AVX-512 cores, large enough for BLAS peak


def measure_peak(n: int = SGEMM_N, repeats: int = 7) -> dict:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)  # warm-up: threads started, pages touched
    flops = 2.0 * n**3
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        rates.append(flops / (time.perf_counter() - t0) / 1e9)
    return {
        "gflops": max(rates),
        "median_gflops": statistics.median(rates),
        "sgemm_n": n,
        "repeats": repeats,
    }
