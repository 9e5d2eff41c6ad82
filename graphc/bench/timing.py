"""Interleaved timing rounds (run in the timing child) and their statistics (in the parent).

Each round runs `steps` calls of every contender in turn, the order rotating by one each round
so no contender always follows the same neighbour. Every call is timed on its own with
perf_counter_ns. The garbage collector is collected before and disabled during each block of
calls, as timeit does, so a collection triggered by one contender's garbage is not charged to
another.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence


def interleave(
    calls: dict[str, Callable[[], object]], warmup: int, rounds: int, steps: int
) -> dict[str, list[list[int]]]:
    """name -> one list of per-call nanoseconds per round."""
    names = list(calls)
    for name in names:
        for _ in range(warmup):
            calls[name]()
    samples: dict[str, list[list[int]]] = {name: [] for name in names}
    clock = time.perf_counter_ns
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            call = calls[name]
            times = []
            gc.collect()
            gc.disable()
            try:
                for _ in range(steps):
                    t0 = clock()
                    call()
                    times.append(clock() - t0)
            finally:
                gc.enable()
            samples[name].append(times)
    return samples


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(rounds_ns: list[list[int]]) -> dict:
    """Milliseconds per call: median, quartiles and min over every timed call; the median of
    each round and their range (how much the machine moved during the run)."""
    all_ms = sorted(t / 1e6 for r in rounds_ns for t in r)
    round_medians = [statistics.median(r) / 1e6 for r in rounds_ns]
    return {
        "median_ms": statistics.median(all_ms),
        "q1_ms": _quantile(all_ms, 0.25),
        "q3_ms": _quantile(all_ms, 0.75),
        "min_ms": all_ms[0],
        "max_ms": all_ms[-1],
        "round_medians_ms": round_medians,
        "round_median_range_ms": [min(round_medians), max(round_medians)],
        "timed_calls": len(all_ms),
    }


def round_ratios(baseline_ns: list[list[int]], subject_ns: list[list[int]]) -> list[float]:
    """Per round: baseline median / subject median (> 1: the subject is faster). Both ran in
    the same round, close in time, so these ratios are less noisy than either time alone."""
    return [
        statistics.median(b) / statistics.median(s)
        for b, s in zip(baseline_ns, subject_ns, strict=True)
    ]
