"""The native thread pool (codegen/threads.py) and its Python side (graphc/threads.py).

Probe thunks from codegen/threads.py stand in for kernels: `cover` counts how often each unit
runs and records each chunk, `work` is a float kernel whose rows must not depend on the split.
Hangs would be the typical failure of a pool, so the riskiest scenarios (exit, Ctrl-C) run in
a subprocess with a timeout. No timing is asserted.
"""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import graphc
from graphc import threads
from graphc.codegen import threads as native

pytestmark = pytest.mark.skipif(
    native.futex_syscall() is None, reason="the pool needs Linux futexes"
)

_REPEAT = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 4, ctypes.c_int64, ctypes.c_int64)


@pytest.fixture(scope="module")
def probes():
    lib = native.build_probes()
    return {name: lib.address(name) for name in native.PROBE_SYMBOLS}


@pytest.fixture
def make_pool():
    made = []

    def make(n, **kw):
        made.append(threads.Pool(n, **kw))
        return made[-1]

    yield make
    for pool in made:
        assert pool.close(timeout=10.0)


class Cover:
    """counts[u]: how many times unit u ran; bounds[lo] = hi for each chunk [lo, hi)."""

    def __init__(self, extent: int):
        self.extent = extent
        self.counts = np.zeros(max(extent, 1), np.int64)
        self.bounds = np.full(max(extent, 1), -1, np.int64)
        self.ctx = np.array([self.counts.ctypes.data, self.bounds.ctypes.data], np.int64)

    @property
    def address(self) -> int:
        return self.ctx.ctypes.data

    def chunks(self) -> set[tuple[int, int]]:
        return {(lo, int(hi)) for lo, hi in enumerate(self.bounds) if hi >= 0}


def expected_chunks(extent: int, n: int) -> set[tuple[int, int]]:
    k = min(n, extent) if extent >= 2 else 1
    return {(c * extent // k, (c + 1) * extent // k) for c in range(k)}


def repeat(pool_address: int, thunk: int, ctx: int, extent: int, reps: int) -> None:
    """`reps` regions back to back from native code (no Python between them)."""
    fn = _REPEAT(native.build_probes().address(native.PROBE_REPEAT))
    fn(threads._natives().parallel_for_address, pool_address, thunk, ctx, extent, reps)


# ---- every unit exactly once, in the documented chunks ----------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("extent", [0, 1, 2, 3, 5, 7, 64, 1001])
def test_every_unit_runs_once_per_region(make_pool, probes, n, extent):
    pool = make_pool(n)
    cover = Cover(extent)
    for _ in range(20):
        pool.parallel_for(probes[native.PROBE_COVER], cover.address, extent)
    assert (cover.counts[:extent] == 20).all()
    assert cover.chunks() == expected_chunks(extent, n)


def wait_until_asleep(pool, workers: int) -> None:
    """Until every worker sleeps in FUTEX_WAIT. The count goes up just before the syscall,
    which returns at once if a region was published meanwhile, so require the same counters
    twice, 20 ms apart, with nothing published in between."""
    deadline = time.monotonic() + 20.0
    last = None
    while time.monotonic() < deadline:
        stats = pool.stats()
        if stats["sleeping"] == workers and stats == last:
            return
        last = stats
        time.sleep(0.02)
    raise AssertionError(f"workers did not go to sleep: {pool.stats()}")


@pytest.mark.parametrize("n, spin_us", [(2, 0.0), (3, 0.0), (2, 50.0), (3, 50.0)])
def test_many_regions_lose_no_wake_up(make_pool, probes, n, spin_us):
    # spin_us=0: every idle moment goes through the futex path, where wake-ups get lost.
    pool = make_pool(n, spin_us=spin_us)
    cover = Cover(n)
    wait_until_asleep(pool, n - 1)
    repeat(pool.address, probes[native.PROBE_COVER], cover.address, n, 20_000)
    assert (cover.counts == 20_000).all()
    assert pool.stats()["wake_calls"] > 0  # the first region found the workers asleep
    for _ in range(200):  # with Python in between: workers often asleep when a region starts
        pool.parallel_for(probes[native.PROBE_COVER], cover.address, n)
    assert (cover.counts == 20_200).all()


def test_results_are_bitwise_identical_for_1_2_3_threads(make_pool, probes, rng):
    rows, cols = 67, 131  # not multiples of the vector width or of the thread counts
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    results = []
    for n in (1, 2, 3):
        pool = make_pool(n)
        for _ in range(3):
            out = np.full(rows, np.nan, np.float32)
            ctx = np.array([x.ctypes.data, out.ctypes.data, cols], np.int64)
            pool.parallel_for(probes[native.PROBE_WORK], ctx.ctypes.data, rows)
            results.append(out.view(np.uint32).copy())
    assert not np.isnan(results[0].view(np.float32)).any()
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


@pytest.mark.skipif(platform.machine() != "x86_64", reason="MXCSR is x86-64's")
def test_workers_take_the_callers_floating_point_control(make_pool, probes):
    # A caller with flush-to-zero on (as after torch.set_flush_denormal(True)) must get the
    # same denormal handling from the workers, or results would depend on the thread count.
    pool = make_pool(3)
    ftz_daz = 0x1F80 | 0x8000 | 0x0040
    fn = _REPEAT(probes[native.PROBE_WITH_FP_ENV])
    pf = threads._natives().parallel_for_address
    for _ in range(200):
        out = np.zeros(3, np.int64)
        ctx = np.array([out.ctypes.data], np.int64)
        fn(pf, pool.address, probes[native.PROBE_FP_ENV], ctx.ctypes.data, 3, ftz_daz)
        assert (out == ftz_daz & 0xFFC0).all()  # control bits only, not the status flags
        repeat(pool.address, probes[native.PROBE_FP_ENV], ctx.ctypes.data, 3, 1)
        assert (out == 0x1F80).all()  # back to the default with the next caller


# ---- callers that meet the pool busy ----------------------------------------------------


def test_nested_parallel_for_runs_serially(make_pool, probes):
    pool = make_pool(3)
    inner = Cover(10)
    pf = threads._natives().parallel_for_address
    ctx = np.array([pf, pool.address, probes[native.PROBE_COVER], inner.address, 10], np.int64)
    pool.parallel_for(probes[native.PROBE_NESTED], ctx.ctypes.data, 6)
    assert (inner.counts == 6).all()  # once per outer unit, whichever thread ran it


def test_concurrent_callers_share_one_pool(make_pool, probes):
    pool = make_pool(2)
    covers = [Cover(37) for _ in range(3)]

    def call(cover):
        repeat(pool.address, probes[native.PROBE_COVER], cover.address, 37, 3000)

    ts = [threading.Thread(target=call, args=(c,)) for c in covers]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for c in covers:
        assert (c.counts == 3000).all()


# ---- lifecycle ------------------------------------------------------------------------------


def test_close_stops_workers_then_regions_run_serially(make_pool, probes):
    pool = make_pool(3)
    workers = list(pool._threads)
    assert len(workers) == 2 and all(t.is_alive() for t in workers)
    assert pool.close(timeout=10.0)
    assert not any(t.is_alive() for t in workers)
    cover = Cover(9)
    pool.parallel_for(probes[native.PROBE_COVER], cover.address, 9)
    assert (cover.counts == 1).all() and cover.chunks() == {(0, 9)}
    pool.resize(2)
    cover = Cover(9)
    pool.parallel_for(probes[native.PROBE_COVER], cover.address, 9)
    assert cover.chunks() == expected_chunks(9, 2)


def test_idle_workers_sleep(make_pool, probes):
    pool = make_pool(2, spin_us=20.0)
    cover = Cover(2)
    pool.parallel_for(probes[native.PROBE_COVER], cover.address, 2)
    wait_until_asleep(pool, 1)
    (tid,) = pool.worker_native_ids()

    def state_and_ticks():
        with open(f"/proc/self/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[11]) + int(fields[12])  # state, utime + stime

    deadline = time.monotonic() + 20.0  # the counter goes up just before the syscall
    while state_and_ticks()[0] != "S" and time.monotonic() < deadline:
        time.sleep(0.005)
    state, ticks = state_and_ticks()
    assert state == "S"
    time.sleep(0.3)
    assert state_and_ticks() == ("S", ticks)  # still asleep in the kernel, using no CPU


def test_set_and_get_num_threads(probes):
    before = graphc.get_num_threads()
    rt = threads.runtime()
    try:
        for n in (3, 1, 2):
            graphc.set_num_threads(n)
            assert graphc.get_num_threads() == n
            assert threads.process_pool().num_threads == n
            assert threads.runtime() == rt  # the addresses survive a resize
            cover = Cover(12)
            repeat(rt.pool_address, probes[native.PROBE_COVER], cover.address, 12, 50)
            assert (cover.counts == 50).all()
            assert cover.chunks() == expected_chunks(12, n)
        for bad in (0, -1, threads.MAX_THREADS + 1):
            with pytest.raises(ValueError, match="number of threads"):
                graphc.set_num_threads(bad)
        for bad in (1.5, "2", True, None):
            with pytest.raises(TypeError):
                graphc.set_num_threads(bad)
    finally:
        graphc.set_num_threads(before)


@pytest.mark.parametrize(
    "value, expected",
    [("3", 3), (" 1 ", 1), ("", None), (None, None)],
)
def test_num_threads_from_environment(monkeypatch, value, expected):
    monkeypatch.setattr(threads, "_REQUESTED", None)
    if value is None:
        monkeypatch.delenv(threads.ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(threads.ENV_VAR, value)
    assert graphc.get_num_threads() == (expected or len(os.sched_getaffinity(0)))


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5", "5000"])
def test_bad_environment_value_is_a_clear_error(monkeypatch, value):
    monkeypatch.setattr(threads, "_REQUESTED", None)
    monkeypatch.setenv(threads.ENV_VAR, value)
    with pytest.raises(ValueError, match=threads.ENV_VAR):
        graphc.get_num_threads()


def test_fork_child_gets_its_own_workers(make_pool, probes):
    rt = threads.runtime()
    pool = make_pool(2)
    pid = os.fork()
    if pid == 0:  # child: no threads were copied; both pools must work and restart workers
        code = 1
        try:
            cover = Cover(8)
            pool.parallel_for(probes[native.PROBE_COVER], cover.address, 8)
            ok = cover.chunks() == expected_chunks(8, 2) and len(pool._threads) == 1
            ok &= threads.runtime() == rt and all(t.is_alive() for t in pool._threads)
            cover = Cover(8)
            repeat(rt.pool_address, probes[native.PROBE_COVER], cover.address, 8, 100)
            ok &= bool((cover.counts == 100).all())
            code = 0 if ok else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    cover = Cover(8)  # the parent's pool is untouched
    pool.parallel_for(probes[native.PROBE_COVER], cover.address, 8)
    assert cover.chunks() == expected_chunks(8, 2)


_CTRL_C_SCRIPT = """
import ctypes, os, signal, threading
import numpy as np
from graphc import threads
from graphc.codegen import threads as native

rt = threads.runtime()
lib = native.build_probes()
repeat = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 4, ctypes.c_int64, ctypes.c_int64)(
    lib.address(native.PROBE_REPEAT))
counts, bounds = np.zeros(64, np.int64), np.zeros(64, np.int64)
ctx = np.array([counts.ctypes.data, bounds.ctypes.data], np.int64)
cover = lib.address(native.PROBE_COVER)
threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
try:
    for _ in range(1000):
        repeat(rt.parallel_for_address, rt.pool_address, cover, ctx.ctypes.data, 64, 20000)
    raise SystemExit("no KeyboardInterrupt")
except KeyboardInterrupt:
    pass
done = int(counts[0])
assert done > 0 and (counts == done).all(), counts  # no region was left half done
repeat(rt.parallel_for_address, rt.pool_address, cover, ctx.ctypes.data, 64, 1000)
assert (counts == done + 1000).all()
print("ok", done)
"""


def test_ctrl_c_between_regions_leaves_the_pool_working():
    env = dict(os.environ, GRAPHC_NUM_THREADS="2")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_CTRL_C_SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok")


def test_interpreter_exit_stops_the_workers():
    script = textwrap.dedent(
        """
        import atexit, threading

        def count_workers():  # registered before graphc's hook, so it runs after it
            alive = [t for t in threading.enumerate() if t.name.startswith("graphc-worker")]
            print("workers after exit:", len(alive))

        atexit.register(count_workers)
        import graphc
        from graphc import threads
        graphc.set_num_threads(3)
        threads.runtime()
        threads.Pool(2)  # never closed by its user
        alive = [t for t in threading.enumerate() if t.name.startswith("graphc-worker")]
        print("workers:", len(alive))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["workers: 3", "workers after exit: 0"]
    assert proc.stderr == ""


_CHURN_SCRIPT = """
import numpy as np
from graphc import threads
from graphc.codegen import threads as native

cover = native.build_probes().address(native.PROBE_COVER)
counts, bounds = np.zeros(8, np.int64), np.zeros(8, np.int64)
ctx = np.array([counts.ctypes.data, bounds.ctypes.data], np.int64)
total = 0
for it in range(2000):
    pool = threads.Pool(2 + it % 3, spin_us=[0, 5, 100][it % 3])
    for _ in range(it % 7):
        pool.parallel_for(cover, ctx.ctypes.data, 8)
        total += 1
    if it % 5 == 0:
        pool.resize(1 + it % 4)
        pool.parallel_for(cover, ctx.ctypes.data, 8)
        total += 1
    assert pool.close(timeout=60)
assert (counts == total).all(), (counts, total)
print("ok")
"""


def test_starting_and_stopping_pools_never_hangs():
    # A worker whose last claim lands on the shutdown region once slept through it, and
    # close() waited forever (a few times in 10k stops under load).
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_CHURN_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ok\n"
