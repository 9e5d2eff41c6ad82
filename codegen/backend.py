"""The native backend: graph -> machine code (through the on-disk cache) -> NativeExecutable."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import time
from dataclasses import dataclass

from graphc import debug, status
from graphc.codegen import cache, jit, parts
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


# Bundles of kernel codes are lowered and compiled in forked processes (codegen/parts.py)
# only when there is this much work, in LLVM instructions as emitted (about 25 us each here):
# a fork costs little, but below this one process is done before a second one would help.
# The work of a bundle is estimated before it is emitted, from its kernels' kinds.
SPLIT_MIN_INSTRUCTIONS = 4_000
ESTIMATED_INSTRUCTIONS = {"conv2d": 2_500, "conv2d_input_grad": 2_500, "conv2d_weight_grad": 2_500}
ESTIMATED_OTHER = 150  # loops, pooling, matmuls (matmuls are small unless blocked)
ENTRY_PER_KERNEL = 12  # this process writes the entry (Python), per kernel it calls
JOBS_VAR = "GRAPHC_COMPILE_JOBS"


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
    exe.cache_key = key
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


# ---- warm starts: a trace seen before runs without the passes --------------------------------

STEPS = "steps"  # the cache's directory of step records


def trace_key(traced: Graph, target: Target) -> str:
    """The key of a traced graph (with its meta: state updates, the vectors): the passes are
    deterministic, so it names the compiled step as well as the optimised graph's key does."""
    meta = repr(sorted((k, repr(v)) for k, v in traced.meta.items()))
    return cache.cache_key(f"step|{traced.structural_hash()}|{meta}", target_key(target))


def remember(traced: Graph, exe: NativeExecutable) -> None:
    """After a compile: the trace `traced` runs `exe`'s cached code (a small record, which
    points at the step's own cache entry)."""
    key = getattr(exe, "cache_key", None)
    if key is None:
        return
    record = {"graph_key": key, "arena_bytes": len(exe.arena), "slots": exe.slot_table()}
    cache.store(trace_key(traced, host_target()), json.dumps(record).encode(), STEPS)


def warm_executable(traced: Graph) -> NativeExecutable | None:
    """The executable of a trace compiled before (see remember), or None."""
    t0 = time.perf_counter()
    target = host_target()
    raw = cache.load(trace_key(traced, target), STEPS)
    if raw is None:
        return None
    try:
        record = json.loads(raw)
        slots = [OutputSlot(str(kind), int(index)) for kind, index in record["slots"]]
        arena_bytes = int(record["arena_bytes"])
        objs = _unpack(cache.load(str(record["graph_key"])))
    except (ValueError, KeyError, TypeError):
        return None
    if objs is None or len(slots) != len(traced.outputs):
        return None
    jit.load_system_libraries()
    times = jit.CompileTimes()
    library = jit.load_object(objs, [ENTRY], times)

    def planned() -> Graph:
        from graphc.passes import run_pipeline

        return run_pipeline(traced, keep_snapshots=False).graph

    exe = NativeExecutable(
        traced, library.address(ENTRY), arena_bytes, slots, library, planned=planned
    )
    exe.timings = {"cache": "hit (trace)", "lookup": time.perf_counter() - t0 - times.link}
    exe.timings["link"] = times.link
    exe.cache_key = str(record["graph_key"])
    exe.compile_parts, exe.compile_problems, exe.compile_report = 1, [], None
    return exe


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
    of kernel codes unless an earlier step compiled it; bundles are shared with forked
    processes (codegen/parts.py) when there is enough work for them."""
    # Imported here: a warm start (cache hit) never needs the emitters (~25 ms to import).
    from graphc.codegen.lower import KernelModule, emit_bundles, link_entry, prepare

    t0 = time.perf_counter()
    status.update("kernel cache")
    lw = prepare(graph, target)
    known: dict[str, KernelModule] = {}
    known_objects: list[bytes] = []
    todo = []
    for bundle in lw.bundles:
        hit = _cached_bundle(bundle, target)
        if hit is None:
            todo.append(bundle)
            continue
        records, obj = hit
        known.update((r["digest"], KernelModule.from_record(r)) for r in records)
        known_objects.append(obj)
    kinds = {k.name: k.kind for k in graph.meta["schedule"].kernels}
    t1 = time.perf_counter()
    sizes = [_estimate(lw, kinds, b) for b in todo]
    head = ENTRY_PER_KERNEL * len(kinds)  # this process also writes and compiles the entry
    jobs = [jit.CompileJob(b.name, "", size) for b, size in zip(todo, sizes, strict=True)]
    shares = jit.assign(jobs, compile_jobs(sum(sizes) + head), head_start=head)
    problems: list[str] = []
    forked: list[tuple[list, parts.Part]] = []
    own = [todo[i] for i in shares[0]]
    try:
        for share in shares[1:]:
            if not share:
                continue
            bundles = [todo[i] for i in share]
            try:
                forked.append((bundles, parts.Part(parts.compile_work(lw, bundles))))
            except OSError as e:  # no process to spare: this one does the share
                problems.append(f"could not fork: {e}")
                own += bundles
        emitted = emit_bundles(
            lw, own, progress=lambda done, total: status.update("lowering", done, total)
        )
        lowering = time.perf_counter() - t1
        waited = 0.0  # for the parts: their records, then their objects
        codes = dict(known)
        codes.update((c.digest, c) for e in emitted for c in e.codes)
        waiting = []
        for bundles, part in forked:
            try:
                tw = time.perf_counter()
                frame = part.wait_for(1, parts.TIMEOUT_S + parts.SLACK * lowering)[0]
                waited += time.perf_counter() - tw
                records = parts.records_of(frame, bundles)
            except jit.JitError as e:  # this process lowers the share itself
                problems.append(str(e))
                part.kill()
                more = emit_bundles(lw, bundles)
                emitted += more
                codes.update((c.digest, c) for e in more for c in e.codes)
                continue
            for bundle_records in records:
                codes.update((r["digest"], KernelModule.from_record(r)) for r in bundle_records)
            waiting.append((bundles, part, records))
        lowered = link_entry(lw, codes, emitted, profile, fault)
        t2 = time.perf_counter()
        processes = f" ({1 + len(waiting)} processes)" if waiting else ""
        status.update(f"LLVM{processes}")
        # The entry is glue (a call per kernel, run once per step): LLVM's optimisation
        # would take 0.2 s on ResNet-20's for nothing measurable.
        entry = jit.emit_object(lowered.module, target, 0, times, siblings=list(lowered.codes))
        entry_times = dataclasses.replace(times)
        total = len(emitted) + sum(len(b) for b, _, _ in waiting)
        objects: list[bytes] = []
        new: dict[str, tuple[list[dict], bytes]] = {}
        rows: list[KernelCost] = []
        for e in emitted:
            obj = _compile_here(e, lw, times, rows)
            objects.append(obj)
            new[e.bundle.key] = ([c.record() for c in e.codes], obj)
            status.update(f"LLVM{processes}", len(objects), total)
        own_seconds = time.perf_counter() - t2
        for bundles, part, records in waiting:
            try:
                tw = time.perf_counter()
                frames = part.wait_for(
                    1 + len(bundles), parts.TIMEOUT_S + parts.SLACK * own_seconds
                )
                waited += time.perf_counter() - tw
                compiled = [parts.object_of(f) for f in frames[1:]]
            except jit.JitError as e:  # lowered and compiled here after all
                problems.append(str(e))
                part.kill()
                for e2 in emit_bundles(lw, bundles):
                    obj = _compile_here(e2, lw, times, rows)
                    objects.append(obj)
                    new[e2.bundle.key] = ([c.record() for c in e2.codes], obj)
                continue
            for bundle, recs, (obj, t) in zip(bundles, records, compiled, strict=True):
                objects.append(obj)
                new[bundle.key] = (recs, obj)
                rows += _record_rows(recs, t)
            status.update(f"LLVM{processes}", len(objects), total)
    finally:  # (reaps the children that finished; an error must not leave any running)
        for _, part in forked:
            part.kill()
    for r in rows:  # who calls each code, for the report
        if r.symbol in lowered.codes:
            r.users = lowered.codes[r.symbol].users
    entry_size = sum(len(b.instructions) for f in lowered.module.functions for b in f.blocks)
    report = CompileReport(
        kernels=len(lowered.kernels),
        distinct=len(lowered.codes),
        cached=len(known),
        objects=len(new),
        rows=rows,
        entry=KernelCost("entry", [], entry_size, 0.0, entry_times.optimize, entry_times.codegen),
    )
    return _Build(
        [entry] + known_objects + objects,
        lowered,
        new,
        {"kernel lookup": t1 - t0, "lower": t2 - t1, "waiting for parts": waited},
        1 + len(waiting),
        problems,
        report,
    )


def _estimate(lw, kinds: dict[str, str], bundle) -> int:
    """A bundle's instructions, guessed from its kernels' kinds before it is emitted."""
    first = lw.shared.first
    return sum(ESTIMATED_INSTRUCTIONS.get(kinds[first[d]], ESTIMATED_OTHER) for d in bundle.digests)


def _compile_here(e, lw, times: jit.CompileTimes, rows: list) -> bytes:
    """A bundle emitted in this process compiled here; its codes' costs added to `rows`."""
    part = jit.CompileTimes()
    obj = jit.emit_object(e.module, lw.target, e.opt, part, unroll=e.unroll)
    times.parse += part.parse
    times.optimize += part.optimize
    times.codegen += part.codegen
    rows += _record_rows([c.record() for c in e.codes], part)
    return obj


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


# What the frontend asks a backend for (frontend/compile.py): the vectors to plan tiles for,
# a trace's executable without running the passes, and to remember one it compiled.
native_executable.vectors = host_vectors
native_executable.warm = warm_executable
native_executable.remember = remember
