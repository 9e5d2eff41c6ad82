"""Threads for compiled code: the process's worker pool and the thread-count knob.

    graphc.set_num_threads(n)     # like torch.set_num_threads; 1 runs everything serially
    graphc.get_num_threads()      # default: $GRAPHC_NUM_THREADS, else the usable cores
    graphc.threads.runtime()      # what compiled code needs to call parallel_for

The parallel regions themselves are native code (codegen/threads.py). This module owns the
pool's memory and its worker threads: Python threads, each spending its whole life inside one
ctypes call of the native worker loop (ctypes releases the GIL, so they never contend for it),
sleeping on a futex when there is nothing to do. It starts them lazily (the first `runtime()`),
restarts them with another count (`set_num_threads`), stops them at interpreter exit, and after
fork() — which leaves the child with none of them — starts new ones in the child on its first
`runtime()`; until then, and whenever the pool has one thread, parallel_for runs serially.

$GRAPHC_SPIN_US (default 100) is how long an idle worker, or a caller waiting for a worker,
spins before it sleeps: long enough to bridge the gap between two kernels of a step, short
enough that a waiting thread does not burn a core another process needs. With more threads
than usable cores there is no spin at all.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import operator
import os
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from graphc import dispatch
from graphc.errors import OptionError

ENV_VAR = "GRAPHC_NUM_THREADS"
SPIN_ENV_VAR = "GRAPHC_SPIN_US"
MAX_THREADS = 512  # codegen/threads.py's MAX_CHUNKS
DEFAULT_SPIN_US = 100.0
YIELD_US = 4.0  # a spinning thread calls sched_yield about this often
_NEVER = -1  # a yield mask that never matches a round count in practice


@dataclass(frozen=True)
class Runtime:
    """Addresses for compiled code: call `parallel_for(pool, thunk, ctx, extent)` with
    `pool = pool_address`. Both stay the same for the life of the process (set_num_threads
    and fork keep them), but differ between processes: pass them in at run time, never bake
    them into cached object code."""

    parallel_for_address: int
    pool_address: int


# ---- native entry points ----------------------------------------------------------------------

_VP, _I64 = ctypes.c_void_p, ctypes.c_int64


@dataclass(frozen=True)
class _Natives:
    parallel_for_address: int
    parallel_for: ctypes._CFuncPtr
    worker_main: ctypes._CFuncPtr
    init: ctypes._CFuncPtr
    try_lock: ctypes._CFuncPtr
    unlock: ctypes._CFuncPtr
    shutdown: ctypes._CFuncPtr
    read: ctypes._CFuncPtr
    pause_loop: ctypes._CFuncPtr
    pool_bytes: int
    slots: type
    library: object  # keeps the machine code loaded


@functools.cache
def _natives() -> _Natives:
    from graphc.codegen import threads as native

    lib = native.build()
    fn = ctypes.CFUNCTYPE
    a = lib.address
    return _Natives(
        parallel_for_address=a(native.PARALLEL_FOR),
        parallel_for=fn(None, _VP, _VP, _VP, _I64)(a(native.PARALLEL_FOR)),
        worker_main=fn(None, _VP, _I64)(a(native.WORKER_MAIN)),
        init=fn(None, _VP, _I64, _I64, _I64)(a(native.POOL_INIT)),
        try_lock=fn(_I64, _VP)(a(native.POOL_TRY_LOCK)),
        unlock=fn(None, _VP)(a(native.POOL_UNLOCK)),
        shutdown=fn(None, _VP)(a(native.POOL_SHUTDOWN)),
        read=fn(_I64, _VP, _I64)(a(native.POOL_READ)),
        pause_loop=fn(None, _VP, _I64)(a(native.PAUSE_LOOP)),
        pool_bytes=native.POOL_BYTES,
        slots=native.Slot,
        library=lib,
    )


@functools.cache
def _can_sleep() -> bool:
    from graphc.codegen.threads import futex_syscall

    return futex_syscall() is not None


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), as os.sched_getaffinity says."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _check_count(n: object, what: str = "set_num_threads") -> int:
    if isinstance(n, bool):
        raise TypeError(f"{what}: expected an int number of threads, got {n!r}")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"{what}: expected an int number of threads, got {n!r}") from None
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"{what}: the number of threads must be 1..{MAX_THREADS}, got {n}")
    return n


def _spin_us() -> float:
    raw = os.environ.get(SPIN_ENV_VAR, "").strip()
    if not raw:
        return DEFAULT_SPIN_US
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1e6:
        raise ValueError(f"{SPIN_ENV_VAR}={raw!r}: expected microseconds, a number >= 0")
    return value


_ROUNDS_PER_US: float | None = None


def _spin_rounds(address: int, spin_us: float) -> tuple[int, int]:
    """(spin rounds, yield mask) for a spin of about `spin_us` yielding every YIELD_US.

    A pause costs 10 to 150 cycles depending on the CPU, so the rate is measured here once per
    process (the fastest of three runs of 20k rounds, ~1 ms in all), on a pool that is owned
    and set never to yield.
    """
    global _ROUNDS_PER_US
    if _ROUNDS_PER_US is None:
        nat, rounds, best = _natives(), 20_000, float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            nat.pause_loop(address, rounds)
            best = min(best, time.perf_counter() - t0)
        _ROUNDS_PER_US = rounds / max(best * 1e6, 1e-3)
    every = max(int(YIELD_US * _ROUNDS_PER_US), 1)
    return int(spin_us * _ROUNDS_PER_US), (1 << (every - 1).bit_length()) - 1


# ---- pools ----------------------------------------------------------------------------------

_LIVE: set[Pool] = set()  # pools with workers (or that will start them): for exit and fork


def _worker(main: ctypes._CFuncPtr, address: int, first_gen: int, memory: object) -> None:
    # `memory` rides along so the pool's memory outlives every thread that uses it.
    main(address, first_gen)


class Pool:
    """A native thread pool: the calling thread plus `num_threads - 1` workers.

    Tests and tools create their own; compiled code uses the process's (see `runtime`).
    Call `close()` when done: it stops the workers; the pool then runs regions serially.
    """

    def __init__(self, num_threads: int, *, spin_us: float | None = None):
        self._nat = _natives()
        self._memory = ctypes.create_string_buffer(self._nat.pool_bytes + 64)
        base = ctypes.addressof(self._memory)
        self.address = base + (-base) % 64  # fields are laid out on 64-byte cache lines
        self._spin_us = _spin_us() if spin_us is None else float(spin_us)
        self._threads: list[threading.Thread] = []
        self._wanted = _check_count(num_threads, "Pool")
        self._started = False
        self._closed = False
        self._lock = threading.Lock()  # one reconfiguration at a time
        self._nat.init(self.address, 1, 0, _NEVER)
        self._nat.unlock(self.address)
        _LIVE.add(self)
        self._ensure_started()

    @property
    def num_threads(self) -> int:
        """Threads that take part in a region, the caller included."""
        return self._wanted if _can_sleep() else 1

    def parallel_for(self, thunk: int, ctx: int, extent: int) -> None:
        """Run `thunk(ctx, lo, hi)` over [0, extent) on the pool (addresses as ints)."""
        self._ensure_started()
        self._nat.parallel_for(self.address, thunk, ctx, extent)

    def resize(self, num_threads: int) -> None:
        """Restart the workers for `num_threads` threads (the pool's address is kept)."""
        self._wanted = _check_count(num_threads)
        self._closed = False
        _LIVE.add(self)
        self._restart()

    def close(self, timeout: float | None = None) -> bool:
        """Stop the workers; regions run serially afterwards. False if the pool stayed busy
        (another thread inside a region) for longer than `timeout` seconds."""
        with self._lock:
            self._closed = True
            _LIVE.discard(self)
            return self._reconfigure(1, timeout)

    def stats(self) -> dict[str, int]:
        """Counters of the native pool, for tests and benchmarks."""
        s, read = self._nat.slots, self._nat.read
        return {
            "generation": read(self.address, s.JOB) >> 32,
            "threads": read(self.address, s.THREADS),
            "spin_rounds": read(self.address, s.SPIN),
            "yield_mask": read(self.address, s.YIELD_MASK),
            "sleeping": read(self.address, s.SLEEPING),
            "worker_sleeps": read(self.address, s.WORKER_SLEEPS),
            "wake_calls": read(self.address, s.WAKE_CALLS),
            "caller_sleeps": read(self.address, s.CALLER_SLEEPS),
        }

    def worker_native_ids(self) -> list[int]:
        """Kernel thread ids of the workers (for /proc/self/task/<id>/stat)."""
        return [t.native_id for t in self._threads if t.native_id is not None]

    # -- internals --

    def _ensure_started(self) -> None:
        if not self._started and not self._closed:
            self._restart()

    def _restart(self) -> None:
        with self._lock:
            self._reconfigure(self.num_threads, None)
            self._started = True

    @contextlib.contextmanager
    def _owned(self, timeout: float | None) -> Iterator[bool]:
        """Own the pool (its native `busy` flag): no region runs while we hold it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        owned = False
        try:
            while not owned:
                owned = bool(self._nat.try_lock(self.address))
                if not owned:
                    if deadline is not None and time.monotonic() > deadline:
                        break
                    time.sleep(20e-6)  # a region lasts a kernel: microseconds to milliseconds
            yield owned
        finally:
            if owned:
                self._nat.unlock(self.address)

    def _reconfigure(self, n: int, timeout: float | None) -> bool:
        nat = self._nat
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._owned(timeout) as owned:
            if not owned:
                return False
            if self._threads:
                nat.shutdown(self.address)
                for t in self._threads:
                    t.join(None if deadline is None else max(deadline - time.monotonic(), 0))
                if any(t.is_alive() for t in self._threads):
                    return False  # only with a timeout (at exit): leave them, they are daemons
                self._threads = []
            nat.init(self.address, 1, 0, _NEVER)  # no workers now: calibrate on it
            spin, yield_mask = _spin_rounds(self.address, self._spin_us)
            if n > usable_cores():  # then a spinning thread takes time from a working one
                spin = 0
            nat.init(self.address, n, spin, yield_mask)  # leaves the pool owned, as we are
            first_gen = nat.read(self.address, nat.slots.JOB) >> 32
            for i in range(1, n):
                t = threading.Thread(
                    target=_worker,
                    args=(nat.worker_main, self.address, first_gen, self._memory),
                    name=f"graphc-worker-{i}",
                    daemon=True,  # stopped by the atexit hook; daemon so exit never waits
                )
                t.start()
                self._threads.append(t)
        return True

    def _after_fork_in_child(self) -> None:
        # The workers were not copied into this process; their Thread objects are dead.
        self._threads = []
        self._lock = threading.Lock()
        self._started = False
        self._nat.init(self.address, 1, 0, _NEVER)  # serial until restarted, unowned
        self._nat.unlock(self.address)


# ---- the process's pool and the thread-count knob -------------------------------------------

_LOCK = threading.Lock()
_REQUESTED: int | None = None
_PROCESS_POOL: Pool | None = None
_RUNTIME: Runtime | None = None


def _from_environment() -> int:
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return usable_cores()
    try:
        return _check_count(int(raw), ENV_VAR)
    except (TypeError, ValueError):
        raise dispatch.user_error(
            OptionError,
            f"{ENV_VAR}={raw!r}: expected a number of threads, 1..{MAX_THREADS} "
            "(1 runs compiled code serially); set it to one, or unset it to use every core",
        ) from None


def get_num_threads() -> int:
    """Threads used by compiled code: set_num_threads's value, else $GRAPHC_NUM_THREADS, else
    the cores this process may use."""
    global _REQUESTED
    if _REQUESTED is None:
        _REQUESTED = _from_environment()
    return _REQUESTED if _can_sleep() else 1


def set_num_threads(n: int) -> None:
    """Use `n` threads for compiled code from now on (1: serial). Takes effect at once."""
    global _REQUESTED
    n = _check_count(n)
    if n > 1 and not _can_sleep():
        warnings.warn(
            "graphc's thread pool needs Linux futexes; running compiled code serially",
            RuntimeWarning,
            stacklevel=2,
        )
    with _LOCK:
        _REQUESTED = n
        if _PROCESS_POOL is not None and _PROCESS_POOL._started:
            _PROCESS_POOL.resize(get_num_threads())


def runtime() -> Runtime:
    """The process's pool, started on first use. Cheap after that (one global read), so call
    it before each compiled step: after a fork it restarts the workers in the child."""
    rt = _RUNTIME
    if rt is not None:
        return rt
    return _start_runtime()


def _start_runtime() -> Runtime:
    global _PROCESS_POOL, _RUNTIME
    with _LOCK:
        if _PROCESS_POOL is None:
            _PROCESS_POOL = Pool(get_num_threads())
        else:
            _PROCESS_POOL.resize(get_num_threads())
        _RUNTIME = Runtime(_natives().parallel_for_address, _PROCESS_POOL.address)
        return _RUNTIME


def process_pool() -> Pool:
    """The pool behind `runtime()` (started if needed)."""
    runtime()
    assert _PROCESS_POOL is not None
    return _PROCESS_POOL


def _close_all() -> None:
    """At interpreter exit: stop every pool's workers (regions still run, serially)."""
    for pool in list(_LIVE):
        pool.close(timeout=2.0)


def _after_fork_in_child() -> None:
    global _LOCK, _RUNTIME
    _LOCK = threading.Lock()
    _RUNTIME = None  # the next runtime() starts workers in this process
    for pool in list(_LIVE):
        pool._after_fork_in_child()


atexit.register(_close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
