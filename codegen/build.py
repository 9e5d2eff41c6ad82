"""A cold compile of a step: the kernel bundles the cache lacks are lowered and compiled, by
this process and by forked parts (codegen/parts.py) when there is enough work, and the entry
is written to call every code, wherever it was compiled.

    look up bundles in the cache -> fork parts -> lower our share -> parts' records
        -> write the entry -> compile the entry and our share -> parts' objects

A part that fails at any point only means its share is lowered and compiled here.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from graphc import status
from graphc.codegen import cache, jit, parts
from graphc.codegen.lower import Bundle, Emitted, KernelModule, emit_bundles, link_entry, prepare
from graphc.codegen.target import Target
from graphc.distributed.group import launched_size
from graphc.ir import Graph
from graphc.threads import get_num_threads, usable_cores

# Bundles of kernel codes are lowered and compiled in forked processes only when there is
# this much work, in LLVM instructions as emitted (about 25 us each here): a fork costs
# little, but below this one process is done before a second one would help. The work of a
# bundle is estimated before it is emitted, from its kernels' kinds.
SPLIT_MIN_INSTRUCTIONS = 4_000
# Measured per code on ResNet-20 and MLP-128 (lower, optimise, machine code; 25 us units): the
# weight gradient runs the full O1 pipeline, the other convolutions the light one.
ESTIMATED_INSTRUCTIONS = {
    "conv2d": 3_400,
    "conv2d_input_grad": 2_500,
    "conv2d_weight_grad": 4_700,
    "matmul": 1_200,
}
ESTIMATED_OTHER = 300  # elementwise loops and pooling
# This process also writes and compiles the entry: 0.21 ms per kernel it calls (ResNet-20,
# MLP-128), 8.5 units.
ENTRY_PER_KERNEL = 9
JOBS_VAR = "GRAPHC_COMPILE_JOBS"
KERNELS = "kernels"  # the cache's directory of kernel codes


def compile_jobs(estimate: int) -> int:
    """How many processes lower and compile new kernels estimated at `estimate`
    instructions: GRAPHC_COMPILE_JOBS if set (at most that many); else one per core this
    process may use (and threads it may run, graphc.set_num_threads), unless it is one of
    several MPI ranks or cannot fork; 1 below SPLIT_MIN_INSTRUCTIONS."""
    value = os.environ.get(JOBS_VAR, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{JOBS_VAR}={value!r}: expected a positive whole number")
        jobs = int(value)
    elif launched_size() > 1:
        jobs = 1
    else:
        jobs = min(usable_cores(), get_num_threads())
    if not parts.fork_possible():
        jobs = 1
    return jobs if estimate >= SPLIT_MIN_INSTRUCTIONS else 1


def kernel_key(bundle_key: str, target_key: str) -> str:
    """The cache key of a bundle of kernel codes, shared by every graph that calls them."""
    return cache.cache_key(f"kernels|{bundle_key}", target_key)


@dataclass
class KernelCost:
    """What one compiled code cost: the instructions emitted and the seconds per stage."""

    symbol: str
    users: list[str]  # the schedule's kernels that call it
    instructions: int
    lower: float
    optimize: float
    codegen: float

    @property
    def total(self) -> float:
        return self.lower + self.optimize + self.codegen


@dataclass
class CompileReport:
    """Where a cold compile's backend time went, per kernel code (GRAPHC_DEBUG=1)."""

    kernels: int  # in the schedule
    distinct: int  # kernel codes they call
    cached: int  # codes another graph had compiled already
    objects: int  # bundles of codes compiled now (codegen/lower.plan_bundles)
    rows: list[KernelCost]  # the codes compiled now
    entry: KernelCost

    def top(self, n: int = 5) -> list[KernelCost]:
        return sorted(self.rows, key=lambda r: -r.total)[:n]


@dataclass
class Build:
    """One cold compile; run() fills in the objects and what they cost."""

    graph: Graph
    target: Target
    target_key: str
    profile: bool = False
    fault: str | None = None
    times: jit.CompileTimes = field(default_factory=jit.CompileTimes)
    objects: list[bytes] = field(default_factory=list)  # the entry's first
    new_bundles: dict[str, tuple[list[dict], bytes]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # what went wrong with parts
    processes: int = 1
    lowered: object = None  # codegen.lower.Lowered
    report: CompileReport | None = None

    def run(self) -> Build:
        t0 = time.perf_counter()
        status.update("kernel cache")
        self.lw = prepare(self.graph, self.target)
        known, known_objects, todo = self._cached()
        t1 = time.perf_counter()
        self.rows: list[KernelCost] = []
        self.codes: dict[str, KernelModule] = dict(known)
        self.waited = 0.0  # for the parts: their records, then their objects
        forked = []
        try:
            own, forked = self._fork(todo)
            emitted = self._emit(own, progress=True)
            lowering = time.perf_counter() - t1
            self.label = f"LLVM ({1 + len(forked)} processes)" if forked else "LLVM"
            self.total = len(emitted) + sum(len(b) for b, _ in forked)
            status.update(self.label)
            # Our share's LLVM work first, then the parts' records (ready by then: waiting
            # for them before would idle this process while a part lowers a large share).
            t2 = time.perf_counter()
            compiled: list[bytes] = []
            for e in emitted:
                self._compile_here(e, compiled)
            own_seconds = time.perf_counter() - t2
            lowered_here = len(emitted)
            waiting = [w for w in (self._records(b, p, lowering, emitted) for b, p in forked) if w]
            self.processes = 1 + len(waiting)
            for e in emitted[lowered_here:]:  # the shares of parts that failed
                self._compile_here(e, compiled)
            t3 = time.perf_counter()
            self.lowered = link_entry(self.lw, self.codes, emitted, self.profile, self.fault)
            # The entry is glue (a call per kernel, run once per step): LLVM's optimisation
            # would take 0.2 s on ResNet-20's for nothing measurable.
            symbols = list(self.lowered.codes)
            entry_times = jit.CompileTimes()
            entry = jit.emit_object(self.lowered.module, self.target, 0, entry_times, symbols)
            for name in ("parse", "optimize", "codegen"):
                setattr(self.times, name, getattr(self.times, name) + getattr(entry_times, name))
            linking = time.perf_counter() - t3
            for bundles, part, records in waiting:
                self._collect(bundles, part, records, own_seconds, compiled)
        finally:  # (reaps the children that finished; an error must not leave any running)
            for _, part in forked:
                part.kill()
        self.objects = [entry] + known_objects + compiled
        self.timings = {"kernel lookup": t1 - t0, "lower": lowering + linking - entry_times.total}
        self.timings["waiting for parts"] = self.waited
        self.report = self._report(len(known), entry_times)
        return self

    def _cached(self) -> tuple[dict[str, KernelModule], list[bytes], list[Bundle]]:
        """The codes and objects of bundles an earlier step compiled, and the bundles left."""
        known: dict[str, KernelModule] = {}
        objects, todo = [], []
        for bundle in self.lw.bundles:
            hit = cache.unpack_kernel(cache.load(kernel_key(bundle.key, self.target_key), KERNELS))
            codes = hit[0].get("codes") if hit is not None else None
            if not isinstance(codes, list) or [c.get("digest") for c in codes] != list(
                bundle.digests
            ):
                todo.append(bundle)
                continue
            known.update((r["digest"], KernelModule.from_record(r)) for r in codes)
            objects.append(hit[1])
        return known, objects, todo

    def _fork(self, todo: list[Bundle]) -> tuple[list[Bundle], list]:
        """Shares of the bundles by estimated work: ours, and forked parts for the others
        (this process also writes and compiles the entry)."""
        kinds = {k.name: k.kind for k in self.graph.meta["schedule"].kernels}
        first = self.lw.shared.first
        sizes = [
            sum(ESTIMATED_INSTRUCTIONS.get(kinds[first[d]], ESTIMATED_OTHER) for d in b.digests)
            for b in todo
        ]
        head = ENTRY_PER_KERNEL * len(kinds)
        jobs = [jit.CompileJob(b.name, "", size) for b, size in zip(todo, sizes, strict=True)]
        shares = jit.assign(jobs, compile_jobs(sum(sizes) + head), head_start=head)
        own = [todo[i] for i in shares[0]]
        forked = []
        for share in shares[1:]:
            bundles = [todo[i] for i in share]
            if not bundles:
                continue
            try:
                forked.append((bundles, parts.Part(parts.compile_work(self.lw, bundles))))
            except OSError as e:  # no process to spare: this one does the share
                self.problems.append(f"could not fork: {e}")
                own += bundles
        return own, forked

    def _emit(self, bundles: list[Bundle], progress: bool = False) -> list[Emitted]:
        def report(done: int, total: int) -> None:
            status.update("lowering", done, total)

        emitted = emit_bundles(self.lw, bundles, report if progress else None)
        self.codes.update((c.digest, c) for e in emitted for c in e.codes)
        return emitted

    def _records(self, bundles, part, lowering: float, emitted: list[Emitted]):
        """A part's records (the entry calls its codes by them), or, if it failed, its share
        lowered here (added to `emitted`) and None."""
        try:
            t = time.perf_counter()
            frame = part.wait_for(1, parts.TIMEOUT_S + parts.SLACK * lowering)[0]
            self.waited += time.perf_counter() - t
            records = parts.records_of(frame, bundles)
        except jit.JitError as e:
            self.problems.append(str(e))
            part.kill()
            emitted += self._emit(bundles)
            return None
        for bundle_records in records:
            self.codes.update((r["digest"], KernelModule.from_record(r)) for r in bundle_records)
        return bundles, part, records

    def _collect(self, bundles, part, records, own_seconds: float, compiled: list[bytes]):
        """A part's objects; if it failed, its share lowered and compiled here."""
        try:
            t = time.perf_counter()
            frames = part.wait_for(1 + len(bundles), parts.TIMEOUT_S + parts.SLACK * own_seconds)
            self.waited += time.perf_counter() - t
            objects = [parts.object_of(f) for f in frames[1:]]
        except jit.JitError as e:
            self.problems.append(str(e))
            part.kill()
            for e2 in self._emit(bundles):
                self._compile_here(e2, compiled)
            return
        for bundle, recs, (obj, t) in zip(bundles, records, objects, strict=True):
            compiled.append(obj)
            self.new_bundles[bundle.key] = (recs, obj)
            self.rows += _record_rows(recs, t)
        status.update(self.label, len(compiled), self.total)

    def _compile_here(self, e: Emitted, compiled: list[bytes]) -> None:
        part = jit.CompileTimes()
        obj = jit.emit_object(e.module, self.target, e.opt, part, unroll=e.unroll, light=e.light)
        self.times.parse += part.parse
        self.times.optimize += part.optimize
        self.times.codegen += part.codegen
        records = [c.record() for c in e.codes]
        self.rows += _record_rows(records, part)
        compiled.append(obj)
        self.new_bundles[e.bundle.key] = (records, obj)
        status.update(self.label, len(compiled), self.total)

    def _report(self, cached: int, entry_times: jit.CompileTimes) -> CompileReport:
        lowered = self.lowered
        for r in self.rows:  # who calls each code
            if r.symbol in lowered.codes:
                r.users = lowered.codes[r.symbol].users
        size = sum(len(b.instructions) for f in lowered.module.functions for b in f.blocks)
        return CompileReport(
            kernels=len(lowered.kernels),
            distinct=len(lowered.codes),
            cached=cached,
            objects=len(self.new_bundles),
            rows=self.rows,
            entry=KernelCost("entry", [], size, 0.0, entry_times.optimize, entry_times.codegen),
        )


def _record_rows(records: list[dict], t: jit.CompileTimes) -> list[KernelCost]:
    """What each code of a bundle cost: its own lowering, and the bundle's LLVM time shared
    among its codes by size."""
    whole = sum(int(r.get("instructions", 0)) for r in records)
    rows = []
    for r in records:
        share = int(r.get("instructions", 0)) / whole if whole else 1 / len(records)
        rows.append(
            KernelCost(
                str(r["symbol"]),
                [],
                int(r.get("instructions", 0)),
                float(r.get("seconds", 0.0)),
                t.optimize * share,
                (t.codegen + t.parse) * share,
            )
        )
    return rows
