"""The thread pool in LLVM IR: `parallel_for` over workers that spin briefly, then sleep.

No OpenMP: libgomp is absent from a pip-only install (../shared/notes/llvmlite-facts.md §3),
so the pool is ours. Worker threads are started by graphc/threads.py (Python threads, each
inside one ctypes call of `graphc_worker_main` for its whole life, GIL released); everything a
region does is here, in native code.

    void graphc_parallel_for(ptr pool, ptr thunk, ptr ctx, i64 extent)
    void thunk(ptr ctx, i64 lo, i64 hi)

Chunking: with N threads, [0, extent) is cut into k = min(N, extent) chunks, chunk c being
[c*extent/k, (c+1)*extent/k) (floor division): sizes differ by at most one and depend only on
extent and N. Chunks are claimed, not assigned: workers take them from the front, the caller
from the back, each claim one atomic add, so the caller runs at least one chunk and takes over
any that no worker has claimed yet. A worker that is asleep, or off the CPU because the core is
shared, never holds a region up unless it already started a chunk: that is what keeps a busy
machine from collapsing the way spinning barriers did. Which thread runs a chunk varies; the
boundaries and the code do not, and a worker runs its chunks under the caller's floating-point
control (MXCSR: rounding, flush-to-zero), so results are bitwise the same on every run.

One region:
  caller: take BUSY (a concurrent or nested caller that cannot runs its region serially);
          write thunk/ctx/extent; publish JOB = (gen+1, k, no claims); bump WAKE's sequence and,
          if its waiter bit was set, FUTEX_WAKE the sleepers; claim and run chunks; wait for
          DONE == k (bounded spin, then FUTEX_WAIT on DONE); release BUSY.
  worker: wait until JOB's gen changes (bounded spin, then set WAKE's waiter bit, re-check
          JOB, FUTEX_WAIT on WAKE); claim and run chunks until none is left; whoever finishes
          the last chunk wakes the caller if it sleeps.
A claim is one `fetch_add` on JOB; its result says which region (gen), how many chunks (k)
and how many were claimed from each end, so a late worker either claims a chunk of the region
in progress or learns there is none. thunk/ctx/extent are read only after a successful claim,
when they cannot change (no new region is published before that chunk is counted in DONE).
No lost wake-up: a sleeper sets the waiter bit then re-reads JOB, a publisher writes JOB then
swaps WAKE (all seq_cst), so one of them sees the other; FUTEX_WAIT re-checks WAKE in the
kernel. The bit is cleared by the swap, so a worker that was woken but is not running yet costs
later regions no further syscalls.
Spinning threads call sched_yield every few microseconds: when the other core is taken by
another process, the scheduler may put a worker on the caller's core, and a spinner that never
yields would keep the caller (which has the work) off it for the whole spin.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import platform
from enum import IntEnum

import llvmlite.binding as llvm
from llvmlite import ir

from graphc.codegen import cache, jit
from graphc.codegen.irutil import I32, I64, PTR, VOID, FunctionPointer, entry_alloca, i64
from graphc.codegen.target import Target, host_target

PARALLEL_FOR = "graphc_parallel_for"
WORKER_MAIN = "graphc_worker_main"  # void (ptr pool, i64 first_gen)
POOL_INIT = "graphc_pool_init"  # void (ptr pool, i64 threads, i64 spin, i64 yield_mask)
POOL_TRY_LOCK = "graphc_pool_try_lock"  # i64 (ptr pool): 1 if it took BUSY
POOL_UNLOCK = "graphc_pool_unlock"  # void (ptr pool)
POOL_SHUTDOWN = "graphc_pool_shutdown"  # void (ptr pool): workers return; call owning BUSY
POOL_READ = "graphc_pool_read"  # i64 (ptr pool, i64 slot): one i64 field, for statistics
PAUSE_LOOP = "graphc_pause_loop"  # void (ptr pool, i64 n): n spin rounds, to calibrate
SYMBOLS = (
    PARALLEL_FOR,
    WORKER_MAIN,
    POOL_INIT,
    POOL_TRY_LOCK,
    POOL_UNLOCK,
    POOL_SHUTDOWN,
    POOL_READ,
    PAUSE_LOOP,
)
LIBC_SYMBOLS = ("syscall", "sched_yield")

MAX_CHUNKS = 512  # k is a 10-bit field of JOB, the claim counts 11-bit ones (see Slot.JOB)
_FRONT, _BACK, _K, _GEN = 0, 11, 22, 32  # bit offsets of JOB's fields


class Slot(IntEnum):
    """Fields of the pool, as 8-byte slots. Fields written by different sides sit on separate
    64-byte cache lines, so a worker polling JOB does not steal the line the caller writes.
    DONE and WAKE are futex words (i32 in the low half of their slot); the rest are i64."""

    # gen << 32 | k << 22 | back << 11 | front: the current region, its chunk count, and the
    # claims made from each end (failed ones included: at most one per thread, so
    # front <= k + threads and back <= k + 1 stay below 2**11).
    JOB = 0
    THUNK = 8  # written by the caller before it publishes a region; read after a claim
    CTX = 9
    EXTENT = 10
    SPIN = 11  # spin rounds before sleeping (set by init)
    YIELD_MASK = 12  # sched_yield when (round & mask) == mask (set by init)
    FP_ENV = 13  # the caller's MXCSR (x86-64): workers run its chunks with the same
    DONE = 16  # i32: chunks finished in the current region
    CALLER_WAITING = 17  # 1 while the caller sleeps on DONE
    WAKE = 24  # i32: sequence << 1 | waiter bit; idle workers sleep on it
    SHUTDOWN = 25  # 1: workers return from graphc_worker_main
    BUSY = 32  # 1 while a caller (or Python reconfiguring the pool) owns the pool
    THREADS = 33  # threads that take part in a region, the caller included
    SLEEPING = 40  # statistics: workers inside FUTEX_WAIT now,
    WORKER_SLEEPS = 41  # FUTEX_WAITs by workers,
    WAKE_CALLS = 42  # FUTEX_WAKEs of workers,
    CALLER_SLEEPS = 43  # FUTEX_WAITs by callers


POOL_BYTES = 6 * 64

_FUTEX_WAIT_PRIVATE = 0 | 128  # FUTEX_WAIT | FUTEX_PRIVATE_FLAG: the pool is per process
_FUTEX_WAKE_PRIVATE = 1 | 128
_SYS_FUTEX = {"x86_64": 202, "aarch64": 98}  # from the kernel's syscall tables
_ALL = 0x7FFFFFFF  # FUTEX_WAKE count: every sleeper
_MXCSR_CONTROL = 0xFFC0  # DAZ, exception masks, rounding, FTZ; not the sticky status flags


def futex_syscall() -> int | None:
    """The futex syscall number here, or None where the pool cannot sleep (graphc/threads.py
    then runs everything serially)."""
    if platform.system() != "Linux":
        return None
    return _SYS_FUTEX.get(platform.machine())


# ---- IR helpers -----------------------------------------------------------------------------

THUNK_TYPE = ir.FunctionType(VOID, [PTR, I64, I64])
PARALLEL_FOR_TYPE = ir.FunctionType(VOID, [PTR, PTR, PTR, I64])


def _function(module: ir.Module, name: str, ret, args: list, names: list[str]) -> ir.Function:
    fn = ir.Function(module, ir.FunctionType(ret, args), name)
    for arg, arg_name in zip(fn.args, names, strict=True):
        arg.name = arg_name
    return fn


def _slot(b: ir.IRBuilder, pool: ir.Value, slot: Slot) -> ir.Value:
    return b.gep(pool, [i64(int(slot))], inbounds=True, source_etype=I64, name=slot.name.lower())


def _load(b: ir.IRBuilder, pool: ir.Value, slot: Slot, order: str, ty=I64, name: str = ""):
    align = 4 if ty == I32 else 8
    return b.load_atomic(_slot(b, pool, slot), order, align, typ=ty, name=name)


def _store(b: ir.IRBuilder, pool: ir.Value, slot: Slot, value, order: str, ty=I64) -> None:
    value = ir.Constant(ty, value) if isinstance(value, int) else value
    # Not IRBuilder.store_atomic: it asks an opaque pointer for its pointee type and fails.
    store = ir.instructions.StoreAtomicInstr(
        b.block, value, _slot(b, pool, slot), order, 4 if ty == I32 else 8
    )
    b._insert(store)


def _rmw(b: ir.IRBuilder, op: str, pool: ir.Value, slot: Slot, value, order: str, ty=I64):
    value = ir.Constant(ty, value) if isinstance(value, int) else value
    return b.atomic_rmw(op, _slot(b, pool, slot), value, order)


def _count(b: ir.IRBuilder, pool: ir.Value, slot: Slot, delta: int = 1) -> None:
    _rmw(b, "add", pool, slot, delta, "monotonic")


def _gen(b: ir.IRBuilder, job: ir.Value, name: str = "gen") -> ir.Value:
    return b.lshr(job, i64(32), name=name)


class _Natives:
    """What the pool's functions call: futex, sched_yield and the spin-wait hint."""

    def __init__(self, module: ir.Module, target: Target):
        self.sys_futex = futex_syscall() or 0
        # long syscall(long number, ...): every argument is passed as a 64-bit value.
        self.syscall = ir.Function(module, ir.FunctionType(I64, [I64], var_arg=True), "syscall")
        self.sched_yield = ir.Function(module, ir.FunctionType(I32, []), "sched_yield")
        arch = target.triple.split("-")[0]
        self.hint, self.hint_args = None, []
        self.mxcsr = None
        if arch == "x86_64":
            self.hint = ir.Function(module, ir.FunctionType(VOID, []), "llvm.x86.sse2.pause")
            rw = ir.FunctionType(VOID, [PTR])
            self.mxcsr = (
                ir.Function(module, rw, "llvm.x86.sse.stmxcsr"),
                ir.Function(module, rw, "llvm.x86.sse.ldmxcsr"),
            )
        elif arch == "aarch64":
            self.hint = ir.Function(module, ir.FunctionType(VOID, [I32]), "llvm.aarch64.hint")
            self.hint_args = [ir.Constant(I32, 1)]  # YIELD

    def _mxcsr(self, b: ir.IRBuilder) -> ir.Value:
        slot = entry_alloca(b, I32, "mxcsr")
        b.call(self.mxcsr[0], [slot])
        return b.load(slot, typ=I32, name="mxcsr")

    def read_fp_env(self, b: ir.IRBuilder) -> ir.Value:
        """This thread's floating-point control (rounding, flush-to-zero, exception masks) as
        an i64; the sticky exception flags (MXCSR bits 0-5) are not part of it."""
        if self.mxcsr is None:
            return i64(0)
        control = b.and_(self._mxcsr(b), ir.Constant(I32, _MXCSR_CONTROL))
        return b.zext(control, I64, name="fp_env")

    def adopt_fp_env(self, b: ir.IRBuilder, wanted: ir.Value) -> None:
        """Switch this thread to the floating-point control `wanted` (from read_fp_env) if it
        differs: a unit must round and flush the same whichever thread runs it."""
        if self.mxcsr is None:
            return
        current = self._mxcsr(b)
        control = b.zext(b.and_(current, ir.Constant(I32, _MXCSR_CONTROL)), I64)
        with b.if_then(b.icmp_unsigned("!=", control, wanted, name="fp_env.differs")):
            flags = b.and_(current, ir.Constant(I32, ~_MXCSR_CONTROL & 0xFFFFFFFF))
            slot = entry_alloca(b, I32, "mxcsr.wanted")
            b.store(b.or_(b.trunc(wanted, I32), flags), slot)
            b.call(self.mxcsr[1], [slot])

    def spin_round(self, b: ir.IRBuilder, pool: ir.Value, round_: ir.Value) -> None:
        """One round of a spin: the pause hint (saves power, frees a sibling hyperthread), and
        every YIELD_MASK + 1 rounds a sched_yield (see the module docstring)."""
        if self.hint is not None:
            b.call(self.hint, self.hint_args)
        mask = _load(b, pool, Slot.YIELD_MASK, "monotonic", name="yield_mask")
        due = b.icmp_unsigned("==", b.and_(round_, mask), mask, name="yield_due")
        with b.if_then(due, likely=False):
            b.call(self.sched_yield, [], name="yield.rc")

    def futex(self, b: ir.IRBuilder, word: ir.Value, op: int, value: ir.Value) -> None:
        null = ir.Constant(PTR, None)
        args = [i64(self.sys_futex), word, i64(op), value, null, null, i64(0)]
        b.call(self.syscall, args, name="futex.rc")

    def wait(self, b: ir.IRBuilder, word: ir.Value, expected: ir.Value) -> None:
        """Sleep while *word == expected (no timeout); returns on a wake, a signal or a
        mismatch, so every caller re-checks its condition afterwards."""
        self.futex(b, word, _FUTEX_WAIT_PRIVATE, b.zext(expected, I64))

    def wake(self, b: ir.IRBuilder, word: ir.Value, count: int) -> None:
        self.futex(b, word, _FUTEX_WAKE_PRIVATE, i64(count))


def _publish(b: ir.IRBuilder, pool: ir.Value, nat: _Natives, job: ir.Value) -> None:
    """Make `job` the current region and wake the workers that sleep (called owning BUSY)."""
    _store(b, pool, Slot.JOB, job, "seq_cst")
    # Only owners of BUSY change WAKE's sequence and workers only set bit 0, so the swap
    # below loses nothing: (old | 1) + 1 is the next sequence with the waiter bit clear.
    old = _load(b, pool, Slot.WAKE, "monotonic", ty=I32, name="wake.old")
    new = b.add(b.or_(old, ir.Constant(I32, 1)), ir.Constant(I32, 1), name="wake.new")
    prev = _rmw(b, "xchg", pool, Slot.WAKE, new, "seq_cst", ty=I32)
    waiters = b.trunc(prev, ir.IntType(1), name="waiters")
    with b.if_then(waiters, likely=False):
        nat.wake(b, _slot(b, pool, Slot.WAKE), _ALL)
        _count(b, pool, Slot.WAKE_CALLS)


# ---- claiming and running chunks ------------------------------------------------------------


def _emit_run_chunks(module: ir.Module, nat: _Natives, from_back: bool) -> ir.Function:
    """`i64 run_chunks(pool)`: claim and run chunks until none is left; returns the generation
    of the region whose chunks ran out. Workers claim from the front (0, 1, ...), the caller
    from the back (k-1, k-2, ...): with two threads each keeps the same half of every region
    whatever the timing, so data a kernel leaves in a core's cache is found there by the next
    kernel over the same range."""
    name = "graphc_run_chunks_" + ("back" if from_back else "front")
    fn = _function(module, name, I64, [PTR], ["pool"])
    fn.linkage = "internal"
    pool = fn.args[0]
    blk = {n: fn.append_basic_block(n) for n in ("entry", "claim", "run", "last", "out")}
    b = ir.IRBuilder(blk["entry"])
    b.branch(blk["claim"])

    # A claim is valid if, when it lands, the claims from both ends have not met: front +
    # back < k. Every claim is one atomic add on JOB, so each chunk is claimed exactly once.
    b.position_at_end(blk["claim"])
    ticket = _rmw(b, "add", pool, Slot.JOB, 1 << (_BACK if from_back else _FRONT), "acq_rel")
    front = b.and_(ticket, i64(0x7FF), name="front")
    back = b.and_(b.lshr(ticket, i64(_BACK)), i64(0x7FF), name="back")
    k = b.and_(b.lshr(ticket, i64(_K)), i64(0x3FF), name="k")
    taken = b.add(front, back, name="taken")
    chunk = b.sub(b.sub(k, i64(1)), back, name="chunk") if from_back else front
    b.cbranch(b.icmp_unsigned("<", taken, k, name="claimed"), blk["run"], blk["out"])

    b.position_at_end(blk["run"])
    thunk = b.load(_slot(b, pool, Slot.THUNK), typ=PTR, name="thunk")
    ctx = b.load(_slot(b, pool, Slot.CTX), typ=PTR, name="ctx")
    extent = b.load(_slot(b, pool, Slot.EXTENT), typ=I64, name="extent")
    lo = b.udiv(b.mul(chunk, extent), k, name="lo")
    hi = b.udiv(b.mul(b.add(chunk, i64(1)), extent), k, name="hi")
    nat.adopt_fp_env(b, b.load(_slot(b, pool, Slot.FP_ENV), typ=I64, name="fp_env.wanted"))
    b.call(FunctionPointer(thunk, THUNK_TYPE), [ctx, lo, hi])
    before = _rmw(b, "add", pool, Slot.DONE, 1, "seq_cst", ty=I32)
    finished = b.add(before, ir.Constant(I32, 1), name="finished")
    is_last = b.icmp_unsigned("==", finished, b.trunc(k, I32), name="is_last")
    b.cbranch(is_last, blk["last"], blk["claim"])

    # Seq_cst on both sides, as for WAKE: the caller sets CALLER_WAITING then re-reads DONE.
    b.position_at_end(blk["last"])
    waiting = _load(b, pool, Slot.CALLER_WAITING, "seq_cst", name="caller_waiting")
    with b.if_then(b.icmp_unsigned("!=", waiting, i64(0)), likely=False):
        nat.wake(b, _slot(b, pool, Slot.DONE), 1)
    b.branch(blk["claim"])

    b.position_at_end(blk["out"])
    b.ret(_gen(b, ticket))
    return fn


# ---- the caller's side ----------------------------------------------------------------------


def _emit_parallel_for(module: ir.Module, nat: _Natives, run_chunks: ir.Function) -> None:
    fn = _function(
        module, PARALLEL_FOR, VOID, [PTR, PTR, PTR, I64], ["pool", "thunk", "ctx", "extent"]
    )
    pool, thunk, ctx, extent = fn.args
    names = ["entry", "serial", "lock", "locked", "unlock_serial", "publish"]
    names += ["wait", "wait.spin", "wait.sleep", "wait.futex", "wait.woken", "finish"]
    blk = {n: fn.append_basic_block(n) for n in names}
    b = ir.IRBuilder(blk["entry"])
    n = _load(b, pool, Slot.THREADS, "monotonic", name="n")
    one = b.or_(b.icmp_signed("<", n, i64(2)), b.icmp_signed("<", extent, i64(2)), name="one")
    b.cbranch(one, blk["serial"], blk["lock"])

    b.position_at_end(blk["serial"])
    b.call(FunctionPointer(thunk, THUNK_TYPE), [ctx, i64(0), extent])
    b.ret_void()

    # A caller that finds the pool taken (another thread's region, a thunk calling
    # parallel_for, a reconfiguration) runs serially rather than wait: never a deadlock.
    b.position_at_end(blk["lock"])
    pair = b.cmpxchg(_slot(b, pool, Slot.BUSY), i64(0), i64(1), "acquire", "monotonic")
    b.cbranch(b.extract_value(pair, 1, name="took"), blk["locked"], blk["serial"])

    b.position_at_end(blk["locked"])
    n = _load(b, pool, Slot.THREADS, "monotonic", name="n.owned")  # may have changed
    k = b.select(b.icmp_signed("<", n, extent), n, extent)
    k = b.select(b.icmp_signed("<", k, i64(MAX_CHUNKS)), k, i64(MAX_CHUNKS), name="k")
    b.cbranch(b.icmp_signed("<", k, i64(2)), blk["unlock_serial"], blk["publish"])

    b.position_at_end(blk["unlock_serial"])
    _store(b, pool, Slot.BUSY, 0, "release")
    b.branch(blk["serial"])

    b.position_at_end(blk["publish"])
    b.store(thunk, _slot(b, pool, Slot.THUNK))
    b.store(ctx, _slot(b, pool, Slot.CTX))
    b.store(extent, _slot(b, pool, Slot.EXTENT))
    b.store(nat.read_fp_env(b), _slot(b, pool, Slot.FP_ENV))
    _store(b, pool, Slot.DONE, 0, "monotonic", ty=I32)
    old = _load(b, pool, Slot.JOB, "monotonic", name="job.old")
    gen = b.add(b.and_(old, i64(-(1 << 32))), i64(1 << 32), name="gen.next")
    _publish(b, pool, nat, b.or_(gen, b.shl(k, i64(_K)), name="job"))
    b.call(run_chunks, [pool])
    spin = _load(b, pool, Slot.SPIN, "monotonic", name="spin")
    k32 = b.trunc(k, I32, name="k32")
    pre_wait = b.block
    b.branch(blk["wait"])

    # Wait for chunks that workers are still running: spin, then sleep on DONE.
    b.position_at_end(blk["wait"])
    i = b.phi(I64, name="wait.i")
    i.add_incoming(i64(0), pre_wait)
    done = _load(b, pool, Slot.DONE, "acquire", ty=I32, name="done")
    all_done = b.icmp_unsigned("==", done, k32, name="all_done")
    b.cbranch(all_done, blk["finish"], blk["wait.spin"])

    b.position_at_end(blk["wait.spin"])
    with b.if_then(b.icmp_signed(">=", i, spin, name="spun")):
        b.branch(blk["wait.sleep"])
    nat.spin_round(b, pool, i)
    i.add_incoming(b.add(i, i64(1), name="wait.i.next"), b.block)
    b.branch(blk["wait"])

    b.position_at_end(blk["wait.sleep"])
    _store(b, pool, Slot.CALLER_WAITING, 1, "seq_cst")
    done = _load(b, pool, Slot.DONE, "seq_cst", ty=I32, name="done.recheck")
    b.cbranch(b.icmp_unsigned("==", done, k32), blk["wait.woken"], blk["wait.futex"])

    b.position_at_end(blk["wait.futex"])
    _count(b, pool, Slot.CALLER_SLEEPS)
    nat.wait(b, _slot(b, pool, Slot.DONE), done)
    b.branch(blk["wait.woken"])

    b.position_at_end(blk["wait.woken"])
    _store(b, pool, Slot.CALLER_WAITING, 0, "monotonic")
    i.add_incoming(spin, blk["wait.woken"])  # no second spin: re-check, else sleep again
    b.branch(blk["wait"])

    b.position_at_end(blk["finish"])
    _store(b, pool, Slot.BUSY, 0, "release")
    b.ret_void()


# ---- the workers' side ----------------------------------------------------------------------


def _emit_worker_main(module: ir.Module, nat: _Natives, run_chunks: ir.Function) -> None:
    """`void worker_main(pool, first_gen)`: take part in every region published after
    `first_gen` until SHUTDOWN; when idle, spin SPIN rounds on JOB, then sleep on WAKE."""
    fn = _function(module, WORKER_MAIN, VOID, [PTR, I64], ["pool", "first_gen"])
    pool, first_gen = fn.args
    names = ("entry", "top", "spin", "spin.next", "sleep", "futex", "claim", "run", "exit")
    blk = {n: fn.append_basic_block(n) for n in names}
    b = ir.IRBuilder(blk["entry"])
    spin = _load(b, pool, Slot.SPIN, "monotonic", name="spin")
    b.branch(blk["top"])

    b.position_at_end(blk["top"])
    seen = b.phi(I64, name="seen")  # the last generation this worker has taken part in
    seen.add_incoming(first_gen, blk["entry"])
    i = b.phi(I64, name="spin.i")
    i.add_incoming(i64(0), blk["entry"])
    gen = _gen(b, _load(b, pool, Slot.JOB, "acquire", name="job"))
    b.cbranch(b.icmp_unsigned("!=", gen, seen, name="new"), blk["claim"], blk["spin"])

    b.position_at_end(blk["spin"])
    b.cbranch(b.icmp_signed(">=", i, spin, name="spun"), blk["sleep"], blk["spin.next"])

    b.position_at_end(blk["spin.next"])
    nat.spin_round(b, pool, i)
    seen.add_incoming(seen, b.block)
    i.add_incoming(b.add(i, i64(1), name="spin.i.next"), b.block)
    b.branch(blk["top"])

    b.position_at_end(blk["sleep"])
    wake = _rmw(b, "or", pool, Slot.WAKE, 1, "seq_cst", ty=I32)
    gen = _gen(b, _load(b, pool, Slot.JOB, "seq_cst", name="job.recheck"))
    seen.add_incoming(seen, blk["sleep"])
    i.add_incoming(spin, blk["sleep"])  # published meanwhile: no spin before sleeping again
    b.cbranch(b.icmp_unsigned("!=", gen, seen), blk["top"], blk["futex"])

    b.position_at_end(blk["futex"])
    _count(b, pool, Slot.WORKER_SLEEPS)
    _count(b, pool, Slot.SLEEPING)
    nat.wait(b, _slot(b, pool, Slot.WAKE), b.or_(wake, ir.Constant(I32, 1)))
    _count(b, pool, Slot.SLEEPING, -1)
    seen.add_incoming(seen, blk["futex"])
    i.add_incoming(spin, blk["futex"])  # a spurious wake-up sleeps again at once
    b.branch(blk["top"])

    b.position_at_end(blk["claim"])
    stop = _load(b, pool, Slot.SHUTDOWN, "acquire", name="shutdown")
    b.cbranch(b.icmp_unsigned("!=", stop, i64(0)), blk["exit"], blk["run"])

    b.position_at_end(blk["run"])
    ran_out = b.call(run_chunks, [pool], name="ran_out")
    # Check again: if the last (failed) claim landed on the shutdown region, `seen` is now
    # its generation and the test at `top` would never fire for it.
    stop = _load(b, pool, Slot.SHUTDOWN, "acquire", name="shutdown.after")
    seen.add_incoming(ran_out, blk["run"])
    i.add_incoming(i64(0), blk["run"])
    b.cbranch(b.icmp_unsigned("!=", stop, i64(0)), blk["exit"], blk["top"])

    b.position_at_end(blk["exit"])
    b.ret_void()


# ---- control (called from Python) -----------------------------------------------------------


def _emit_control(module: ir.Module, nat: _Natives) -> None:
    # init: every field but JOB's generation (kept, so that it never repeats) and the
    # statistics. It leaves the pool owned (BUSY = 1): Python starts workers, then unlocks.
    args, names = [PTR, I64, I64, I64], ["pool", "threads", "spin", "yield_mask"]
    fn = _function(module, POOL_INIT, VOID, args, names)
    pool, threads, spin, yield_mask = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    old = _load(b, pool, Slot.JOB, "monotonic", name="job.old")
    _store(b, pool, Slot.JOB, b.and_(old, i64(-(1 << 32))), "monotonic")
    for slot in (Slot.THUNK, Slot.CTX, Slot.EXTENT, Slot.CALLER_WAITING, Slot.SHUTDOWN):
        _store(b, pool, slot, 0, "monotonic")
    _store(b, pool, Slot.SLEEPING, 0, "monotonic")
    _store(b, pool, Slot.DONE, 0, "monotonic", ty=I32)
    _store(b, pool, Slot.WAKE, 0, "monotonic", ty=I32)
    _store(b, pool, Slot.SPIN, spin, "monotonic")
    _store(b, pool, Slot.YIELD_MASK, yield_mask, "monotonic")
    _store(b, pool, Slot.THREADS, threads, "monotonic")
    _store(b, pool, Slot.BUSY, 1, "seq_cst")
    b.ret_void()

    fn = _function(module, POOL_TRY_LOCK, I64, [PTR], ["pool"])
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    pair = b.cmpxchg(_slot(b, fn.args[0], Slot.BUSY), i64(0), i64(1), "acquire", "monotonic")
    b.ret(b.zext(b.extract_value(pair, 1, name="took"), I64))

    fn = _function(module, POOL_UNLOCK, VOID, [PTR], ["pool"])
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    _store(b, fn.args[0], Slot.BUSY, 0, "release")
    b.ret_void()

    # shutdown: an empty region (k = 0) with SHUTDOWN set; every worker, spinning or asleep,
    # sees the new generation, reads SHUTDOWN and returns.
    fn = _function(module, POOL_SHUTDOWN, VOID, [PTR], ["pool"])
    pool = fn.args[0]
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    _store(b, pool, Slot.SHUTDOWN, 1, "seq_cst")
    old = _load(b, pool, Slot.JOB, "monotonic", name="job.old")
    _publish(b, pool, nat, b.add(b.and_(old, i64(-(1 << 32))), i64(1 << 32), name="job"))
    b.ret_void()

    fn = _function(module, POOL_READ, I64, [PTR, I64], ["pool", "slot"])
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    field = b.gep(fn.args[0], [fn.args[1]], inbounds=True, source_etype=I64, name="field")
    b.ret(b.load_atomic(field, "monotonic", 8, typ=I64, name="value"))

    # pause_loop: n rounds of exactly what a spinning worker does, to calibrate SPIN.
    fn = _function(module, PAUSE_LOOP, VOID, [PTR, I64], ["pool", "n"])
    pool, n = fn.args
    blk = {name: fn.append_basic_block(name) for name in ("entry", "loop", "end")}
    b = ir.IRBuilder(blk["entry"])
    b.cbranch(b.icmp_signed(">", n, i64(0)), blk["loop"], blk["end"])
    b.position_at_end(blk["loop"])
    i = b.phi(I64, name="i")
    i.add_incoming(i64(0), blk["entry"])
    _load(b, pool, Slot.JOB, "acquire", name="job")
    nat.spin_round(b, pool, i)
    i_next = b.add(i, i64(1), name="i.next")
    i.add_incoming(i_next, b.block)
    b.cbranch(b.icmp_signed("<", i_next, n), blk["loop"], blk["end"])
    b.position_at_end(blk["end"])
    b.ret_void()


# ---- building -------------------------------------------------------------------------------


def emit_module(target: Target) -> ir.Module:
    """The pool's functions (see SYMBOLS) as one LLVM module."""
    module = ir.Module(name="graphc.threads")
    module.triple = target.triple
    nat = _Natives(module, target)
    _emit_parallel_for(module, nat, _emit_run_chunks(module, nat, from_back=True))
    _emit_worker_main(module, nat, _emit_run_chunks(module, nat, from_back=False))
    _emit_control(module, nat)
    return module


def _make_libc_resolvable() -> None:
    """libc is in the process, but LLVM's symbol search only sees libraries loaded through
    it: register the addresses the dynamic linker gives ctypes."""
    libc = ctypes.CDLL(None)
    for name in LIBC_SYMBOLS:
        if not llvm.address_of_symbol(name):
            llvm.add_symbol(name, ctypes.cast(getattr(libc, name), ctypes.c_void_p).value)


def _object(module: ir.Module, target: Target) -> bytes:
    """`module`'s object code, from the on-disk cache or compiled (and cached) now."""
    text = str(module)
    key = cache.cache_key(hashlib.sha256(text.encode()).hexdigest(), target.cache_key())
    obj = cache.load(key)
    if obj is None:
        obj = jit.emit_object(text, target, opt=2)
        cache.store(key, obj)
    return obj


def _load_cached(module: ir.Module, target: Target, symbols) -> jit.JitLibrary:
    """Compile `module` (or take its object code from the on-disk cache) and load it."""
    return jit.load_object(_object(module, target), symbols)


def pool_object(target: Target) -> bytes:
    """The pool's functions (SYMBOLS) as position-independent object code for `target`, for
    a library that starts its own workers (graphc export); it calls libc's syscall and
    sched_yield."""
    return _object(emit_module(target), target)


@functools.cache
def build() -> jit.JitLibrary:
    """The pool's machine code, loaded once per process and never unloaded (workers run it).
    Its cache entry is named without emitting the module (30 ms of every process start):
    the pool's IR is a function of the target and of this source, which the key covers."""
    target = host_target()
    _make_libc_resolvable()
    key = cache.cache_key("thread pool|" + ",".join(SYMBOLS), target.cache_key())
    obj = cache.load(key)
    if obj is None:
        obj = jit.emit_object(str(emit_module(target)), target, opt=2)
        cache.store(key, obj)
    return jit.load_object(obj, SYMBOLS)


# ---- probes: thunks for tests and benchmarks of the pool ------------------------------------

PROBE_EMPTY = "graphc_probe_empty"  # thunk doing nothing: the cost of a region
PROBE_COVER = "graphc_probe_cover"  # ctx = [i64* counts, i64* bounds]
PROBE_WORK = "graphc_probe_work"  # ctx = [f32* x, f32* out, i64 cols]
PROBE_NESTED = "graphc_probe_nested"  # ctx = [parallel_for, pool, thunk, ctx, extent]
PROBE_REPEAT = "graphc_probe_repeat"  # void (parallel_for, pool, thunk, ctx, extent, reps)
PROBE_FP_ENV = "graphc_probe_fp_env"  # ctx = [i64* out]: out[lo] = the running thread's MXCSR
PROBE_WITH_FP_ENV = "graphc_probe_with_fp_env"  # as REPEAT, `reps` = the caller's MXCSR
PROBE_SYMBOLS = (
    PROBE_EMPTY,
    PROBE_COVER,
    PROBE_WORK,
    PROBE_NESTED,
    PROBE_REPEAT,
    PROBE_FP_ENV,
    PROBE_WITH_FP_ENV,
)
WORK_FMAS = 32  # dependent FMAs per element in PROBE_WORK


def _thunk(module: ir.Module, name: str) -> tuple[ir.Function, ir.IRBuilder, list]:
    fn = _function(module, name, VOID, [PTR, I64, I64], ["ctx", "lo", "hi"])
    return fn, ir.IRBuilder(fn.append_basic_block("entry")), list(fn.args)


def _ctx_field(b: ir.IRBuilder, ctx: ir.Value, index: int, ty, name: str) -> ir.Value:
    slot = b.gep(ctx, [i64(index)], inbounds=True, source_etype=I64)
    return b.load(slot, typ=ty, name=name)


def emit_probes(target: Target) -> ir.Module:
    from graphc.codegen.irutil import F32, entry_alloca, for_range

    module = ir.Module(name="graphc.threads.probes")
    module.triple = target.triple

    _, b, _ = _thunk(module, PROBE_EMPTY)
    b.ret_void()

    # cover: counts[u] += 1 for every unit (atomically: a unit run twice, even concurrently,
    # shows as 2), bounds[lo] = hi records the chunk.
    _, b, (ctx, lo, hi) = _thunk(module, PROBE_COVER)
    counts = _ctx_field(b, ctx, 0, PTR, "counts")
    bounds = _ctx_field(b, ctx, 1, PTR, "bounds")
    with for_range(b, lo, hi, name="u") as u:
        cell = b.gep(counts, [u], inbounds=True, source_etype=I64, name="count")
        b.atomic_rmw("add", cell, i64(1), "monotonic")
    b.store(hi, b.gep(bounds, [lo], inbounds=True, source_etype=I64, name="bound"))
    b.ret_void()

    # work: out[r] = sum_j f(x[r, j]) with f = WORK_FMAS dependent FMAs; the j loop
    # vectorises (reassoc), the same way for every row, so rows do not depend on the split.
    _, b, (ctx, lo, hi) = _thunk(module, PROBE_WORK)
    x = _ctx_field(b, ctx, 0, PTR, "x")
    out = _ctx_field(b, ctx, 1, PTR, "out")
    cols = _ctx_field(b, ctx, 2, I64, "cols")
    acc = entry_alloca(b, F32, "acc")
    flags = ("reassoc", "contract")
    with for_range(b, lo, hi, name="row") as row:
        b.store(ir.Constant(F32, 0.0), acc)
        base = b.mul(row, cols, name="base")
        with for_range(b, 0, cols, name="col") as col:
            at = b.gep(x, [b.add(base, col)], inbounds=True, source_etype=F32)
            v = b.load(at, typ=F32, name="v")
            for _ in range(WORK_FMAS):
                v = b.fadd(
                    b.fmul(v, ir.Constant(F32, 0.999), flags=flags),
                    ir.Constant(F32, 1e-3),
                    flags=flags,
                )
            b.store(b.fadd(b.load(acc, typ=F32), v, flags=flags), acc)
        b.store(b.load(acc, typ=F32), b.gep(out, [row], inbounds=True, source_etype=F32))
    b.ret_void()

    # nested: each unit calls parallel_for again (from the caller or a worker).
    _, b, (ctx, lo, hi) = _thunk(module, PROBE_NESTED)
    inner = [
        _ctx_field(b, ctx, i, ty, nm)
        for i, (ty, nm) in enumerate(
            [(PTR, "pf"), (PTR, "pool"), (PTR, "thunk"), (PTR, "inner_ctx"), (I64, "extent")]
        )
    ]
    with for_range(b, lo, hi, name="u"):
        b.call(FunctionPointer(inner[0], PARALLEL_FOR_TYPE), inner[1:])
    b.ret_void()

    fn = _function(
        module,
        PROBE_REPEAT,
        VOID,
        [PTR, PTR, PTR, PTR, I64, I64],
        ["pf", "pool", "thunk", "ctx", "extent", "reps"],
    )
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    pf, pool, thunk, ctx, extent, reps = fn.args
    with for_range(b, 0, reps, name="rep"):
        b.call(FunctionPointer(pf, PARALLEL_FOR_TYPE), [pool, thunk, ctx, extent])
    b.ret_void()

    nat = _Natives(module, target)
    _, b, (ctx, lo, hi) = _thunk(module, PROBE_FP_ENV)
    out = _ctx_field(b, ctx, 0, PTR, "out")
    b.store(nat.read_fp_env(b), b.gep(out, [lo], inbounds=True, source_etype=I64))
    b.ret_void()

    # with_fp_env: one region with the caller's MXCSR set to `fp_env`, restored afterwards.
    args = ["pf", "pool", "thunk", "ctx", "extent", "fp_env"]
    fn = _function(module, PROBE_WITH_FP_ENV, VOID, [PTR, PTR, PTR, PTR, I64, I64], args)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    pf, pool, thunk, ctx, extent, fp_env = fn.args
    saved = nat.read_fp_env(b)
    nat.adopt_fp_env(b, fp_env)
    b.call(FunctionPointer(pf, PARALLEL_FOR_TYPE), [pool, thunk, ctx, extent])
    nat.adopt_fp_env(b, saved)
    b.ret_void()
    return module


@functools.cache
def build_probes() -> jit.JitLibrary:
    target = host_target()
    return _load_cached(emit_probes(target), target, PROBE_SYMBOLS)
