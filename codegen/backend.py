"""The native backend: graph -> machine code (through the on-disk cache) -> NativeExecutable."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import struct
import time
from dataclasses import dataclass

from graphc import debug, status
from graphc.codegen import cache, jit
from graphc.codegen.target import Target, host_target
from graphc.distributed.group import launched_size
from graphc.ir import Graph
from graphc.passes.tiles import VectorUnit
from graphc.runtime import NativeExecutable, OutputSlot
from graphc.threads import get_num_threads, usable_cores

ENTRY = "graphc_entry"  # the symbol codegen/lower.py emits


def host_vectors() -> VectorUnit:
    """The vectors native code is generated for: what the plan_tiles pass plans for."""
    return host_target().vector_unit()


# Kernels are compiled in helper processes only when there is this much LLVM work (in
# instructions as emitted, about 25 us each on this class of machine): a helper costs an
# interpreter start (~0.2 s of CPU), which small steps would not pay back. Helpers start
# before the lowering, to overlap it, so the decision is taken on an estimate per kernel.
SPLIT_MIN_INSTRUCTIONS = 20_000
ESTIMATED_INSTRUCTIONS = {"conv2d": 8_000, "conv2d_input_grad": 8_000, "conv2d_weight_grad": 6_000}
ESTIMATED_OTHER = 300  # loops, pooling, matmuls (matmuls are small unless blocked)
JOBS_VAR = "GRAPHC_COMPILE_JOBS"


def compile_jobs(estimate: int) -> int:
    """How many processes compile new kernels estimated at `estimate` instructions:
    GRAPHC_COMPILE_JOBS if set (at most that many); else one per core this process may use
    (and threads it may run, graphc.set_num_threads), unless it is one of several MPI ranks
    or cannot start a helper; 1 below SPLIT_MIN_INSTRUCTIONS."""
    value = os.environ.get(JOBS_VAR, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{JOBS_VAR}={value!r}: expected a positive whole number")
        jobs = int(value)
    elif launched_size() > 1 or not jit.helpers_possible():
        jobs = 1
    else:
        jobs = min(usable_cores(), get_num_threads())
    return jobs if estimate >= SPLIT_MIN_INSTRUCTIONS else 1


def _start_helpers(n: int) -> list[jit.HelperProcess]:
    helpers = []
    for _ in range(n):
        try:
            helpers.append(jit.HelperProcess())
        except OSError:  # no process to spare: this one compiles everything
            break
    return helpers


_PARTS = struct.Struct("<I")
_LENGTH = struct.Struct("<Q")


def _pack(objs: list[bytes]) -> bytes:
    """The objects of one step as one cache payload: count, lengths, then the objects."""
    head = _PARTS.pack(len(objs)) + b"".join(_LENGTH.pack(len(o)) for o in objs)
    return head + b"".join(objs)


def _unpack(payload: bytes | None) -> list[bytes] | None:
    """The objects of a payload from _pack; None (a miss) if it is not one."""
    if payload is None or len(payload) < _PARTS.size:
        return None
    (count,) = _PARTS.unpack_from(payload)
    at = _PARTS.size + count * _LENGTH.size
    if count < 1 or len(payload) < at:
        return None
    lengths = [
        _LENGTH.unpack_from(payload, _PARTS.size + i * _LENGTH.size)[0] for i in range(count)
    ]
    if at + sum(lengths) != len(payload):
        return None
    objs = []
    for n in lengths:
        objs.append(payload[at : at + n])
        at += n
    return objs


def target_key(t: Target) -> str:
    return f"{t.kind}|{t.triple}|{t.cpu}|{t.features}|{t.vector_bits}"


def native_executable(
    graph: Graph, profile: bool = False, fault: str | None = None
) -> NativeExecutable:
    """`profile` and `fault` build instrumented variants (see codegen/lower.py)."""
    jit.load_system_libraries()
    target = host_target()
    key = step_key(graph, target, profile, fault)
    objs, build = _unpack(cache.load(key)), None
    timings = {"cache": "hit" if objs is not None else "miss"}
    times = jit.CompileTimes()
    if objs is None:
        build = _build(graph, target, profile, fault, times)
        objs = build.objects
        timings.update(build.timings)
    library = jit.load_object(objs, [ENTRY], times)
    if build is not None:  # stored once it has linked: a bad object is never cached
        t_store = time.perf_counter()
        for bundle_key, (records, obj) in build.new_bundles.items():
            cache.store(
                kernel_key(bundle_key, target), cache.pack_kernel({"codes": records}, obj), KERNELS
            )
        cache.store(key, _pack(objs))
        timings["cache store"] = time.perf_counter() - t_store
    timings.update(
        llvm_optimize=times.optimize,
        llvm_codegen=times.codegen + times.parse,
        link=times.link,
    )
    plan = graph.meta["memory"]
    inputs = {n: i for i, n in enumerate(graph.inputs)}
    slots = []
    for o in graph.outputs:
        st = plan.storage(o)
        slots.append(
            OutputSlot("input", inputs[st.value])
            if st.kind == "input"
            else OutputSlot("arena", st.offset)
        )
    exe = NativeExecutable(
        graph, library.address(ENTRY), plan.arena_bytes, slots, library, profile=profile
    )
    exe.timings = timings
    exe.compile_parts = build.processes if build is not None else 1
    exe.compile_problems = build.problems if build is not None else []
    exe.compile_report = build.report if build is not None else None
    if debug.level() >= 3:  # printed by debug.report_compile, after the IR of each pass
        from graphc.codegen.lower import lower

        lowered = build.lowered if build is not None else lower(graph, target, profile, fault)
        exe.debug_sections = [("LLVM IR (entry)", str(lowered.module))] + [
            (
                f"LLVM IR ({e.bundle.name}: {', '.join(u for c in e.codes for u in c.users)})",
                str(e.module),
            )
            for e in lowered.emitted
        ]
        if debug.level() >= 4:
            exe.debug_sections += [
                (f"assembly ({title[len('LLVM IR (') :]}", jit.emit_assembly(text, target))
                for title, text in list(exe.debug_sections)
            ]
    return exe


def step_key(graph: Graph, target: Target, profile: bool = False, fault: str | None = None) -> str:
    """The cache key of a step's objects."""
    # The structural hash leaves the memory plan out, but one graph can carry several plans
    # (plan_memory(reuse=False) for graphc check): the plan is part of the key.
    # Likewise the parallel plan (which kernels run through the thread pool) and the tile
    # plan (lower() replans tiles for other vectors than this target's, so only a plan for
    # these vectors is what the code will follow).
    plans = graph.meta["memory"].summary(graph)
    if "parallel" in graph.meta:
        plans += "\n" + graph.meta["parallel"].summary(graph)
    if "tiles" in graph.meta:
        plans += "\n" + graph.meta["tiles"].cache_text()
    plan_digest = hashlib.sha256(plans.encode()).hexdigest()
    variant = f"|profile={profile}|fault={fault}|plan={plan_digest[:16]}"
    return cache.cache_key(graph.structural_hash() + variant, target_key(target))


def step_objects(graph: Graph, target: Target) -> tuple[list[bytes], dict[str, object]]:
    """The relocatable objects of a step compiled for `target` (which need not be this CPU),
    and what producing them cost: from the cache, or compiled, test-linked and cached now,
    under the key native_executable uses. They are position-independent, so they link into
    a shared library as well as into the JIT (graphc export). The entry expects a thread
    pool's `parallel_for` and pool in its `threads` argument, as native_executable passes."""
    jit.load_system_libraries()
    key = step_key(graph, target)
    objs = _unpack(cache.load(key))
    if objs is not None:
        return objs, {"cache": "hit"}
    times = jit.CompileTimes()
    build = _build(graph, target, False, None, times)
    jit.load_object(build.objects, [ENTRY], times)  # a bad object is never cached
    for bundle_key, (records, obj) in build.new_bundles.items():
        cache.store(
            kernel_key(bundle_key, target), cache.pack_kernel({"codes": records}, obj), KERNELS
        )
    cache.store(key, _pack(build.objects))
    info: dict[str, object] = {"cache": "miss", **build.timings}
    info.update(llvm_optimize=times.optimize, llvm_codegen=times.codegen + times.parse)
    return build.objects, info


KERNELS = "kernels"  # the cache's directory of kernel codes


def kernel_key(bundle_key: str, target: Target) -> str:
    """The cache key of a bundle of kernel codes, shared by every graph that calls them."""
    return cache.cache_key(f"kernels|{bundle_key}", target_key(target))


@dataclass
class _Build:
    objects: list[bytes]
    lowered: object  # codegen.lower.Lowered
    new_bundles: dict[str, tuple[list[dict], bytes]]  # bundle key -> (records, object)
    timings: dict[str, float]
    processes: int
    problems: list[str]
    report: CompileReport


def _build(graph: Graph, target: Target, profile: bool, fault: str | None, times) -> _Build:
    """Lower and compile what the cache does not already hold: the entry always, each bundle
    of kernel codes unless an earlier step compiled it."""
    # Imported here: a warm start (cache hit) never needs the emitters (~25 ms to import).
    from graphc.codegen.lower import KernelModule, kernel_plans, lower, plan_bundles

    t0 = time.perf_counter()
    status.update("kernel cache")
    _, shared = kernel_plans(graph, target)
    known: dict[str, KernelModule] = {}
    known_objects: list[bytes] = []
    estimate = 0
    kinds = {k.name: k.kind for k in graph.meta["schedule"].kernels}
    for bundle in plan_bundles(graph, shared):
        codes = _cached_bundle(bundle, target)
        if codes is None:
            estimate += sum(
                ESTIMATED_INSTRUCTIONS.get(kinds[shared.first[d]], ESTIMATED_OTHER)
                for d in bundle.digests
            )
            continue
        records, obj = codes
        known.update((r["digest"], KernelModule.from_record(r)) for r in records)
        known_objects.append(obj)
    t1 = time.perf_counter()
    helpers = _start_helpers(compile_jobs(estimate) - 1)
    try:
        lowered = lower(
            graph,
            target,
            profile=profile,
            fault=fault,
            known=known,
            progress=lambda done, total: status.update("lowering", done, total),
        )
        t2 = time.perf_counter()
        jobs = [jit.CompileJob(e.bundle.name, e.module, e.instructions) for e in lowered.emitted]
        entry_size = sum(len(b.instructions) for f in lowered.module.functions for b in f.blocks)
        symbols = [c.symbol for c in lowered.codes.values()]
        processes = f" ({1 + len(helpers)} processes)" if helpers else ""
        status.update(f"LLVM{processes}")
        entry = jit.emit_object(lowered.module, target, 3, times, siblings=symbols)
        entry_times = dataclasses.replace(times)
        finished: set[int] = set()

        def progress(i: int) -> None:
            finished.add(i)
            status.update(f"LLVM{processes}", len(finished), len(jobs))

        objs, each, problems = jit.emit_objects(
            jobs, target, helpers, times=times, head_start=entry_size, progress=progress
        )
    finally:  # (a no-op for helpers that finished; an error must not leave them waiting)
        for helper in helpers:
            helper.kill()
    rows = []
    for e, t in zip(lowered.emitted, each, strict=True):
        # a bundle's LLVM time shared among its codes by their size
        for c in e.codes:
            part = c.instructions / max(e.instructions, 1)
            rows.append(
                KernelCost(
                    c.symbol,
                    c.users,
                    c.instructions,
                    c.seconds,
                    t.optimize * part,
                    (t.codegen + t.parse) * part,
                )
            )
    report = CompileReport(
        kernels=len(lowered.kernels),
        distinct=len(lowered.codes),
        cached=len(known),
        objects=len(objs),
        rows=rows,
        entry=KernelCost("entry", [], entry_size, 0.0, entry_times.optimize, entry_times.codegen),
    )
    return _Build(
        [entry] + known_objects + objs,
        lowered,
        {
            e.bundle.key: ([c.record() for c in e.codes], o)
            for e, o in zip(lowered.emitted, objs, strict=True)
        },
        {"kernel lookup": t1 - t0, "lower": t2 - t1},
        1 + len(helpers),
        problems,
        report,
    )


def _cached_bundle(bundle, target: Target) -> tuple[list[dict], bytes] | None:
    """The records and object of a bundle compiled before, if the cache holds them whole."""
    hit = cache.unpack_kernel(cache.load(kernel_key(bundle.key, target), KERNELS))
    if hit is None:
        return None
    record, obj = hit
    codes = record.get("codes")
    if not isinstance(codes, list) or [c.get("digest") for c in codes] != list(bundle.digests):
        return None
    return codes, obj


@dataclass
class KernelCost:
    """What one compiled module cost: the instructions emitted and the seconds per stage."""

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


# What the frontend asks a backend for before running the pipeline (frontend/compile.py).
native_executable.vectors = host_vectors
