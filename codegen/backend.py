"""The native backend: graph -> machine code (through the on-disk cache) -> NativeExecutable."""

from __future__ import annotations

import hashlib
import json
import struct
import time

from graphc import debug
from graphc.codegen import cache, jit
from graphc.codegen.target import Target, host_target
from graphc.ir import Graph
from graphc.passes.tiles import VectorUnit
from graphc.runtime import NativeExecutable, OutputSlot

ENTRY = "graphc_entry"  # the symbol codegen/lower.py emits


def host_vectors() -> VectorUnit:
    """The vectors native code is generated for: what the plan_tiles pass plans for."""
    return host_target().vector_unit()


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
        # Imported here: a warm start never needs the emitters (~25 ms to import).
        from graphc.codegen.build import Build

        build = Build(graph, target, target_key(target), profile, fault, times).run()
        objs = build.objects
        timings.update(build.timings)
    library = jit.load_object(objs, [ENTRY], times)
    if build is not None:  # stored once it has linked: a bad object is never cached
        t_store = time.perf_counter()
        _store(build, key)
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
    from graphc.codegen.build import Build

    times = jit.CompileTimes()
    build = Build(graph, target, target_key(target), times=times).run()
    jit.load_object(build.objects, [ENTRY], times)  # a bad object is never cached
    _store(build, key)
    info: dict[str, object] = {"cache": "miss", **build.timings}
    info.update(llvm_optimize=times.optimize, llvm_codegen=times.codegen + times.parse)
    return build.objects, info


def _store(build, key: str) -> None:
    """A build's (codegen/build.py) new bundles, each under its own key, and the whole step
    under `key`."""
    from graphc.codegen.build import KERNELS, kernel_key

    for bundle_key, (records, obj) in build.new_bundles.items():
        payload = cache.pack_kernel({"codes": records}, obj)
        cache.store(kernel_key(bundle_key, target_key(build.target)), payload, KERNELS)
    cache.store(key, _pack(build.objects))


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


# What the frontend asks a backend for (frontend/compile.py): the vectors to plan tiles for,
# a trace's executable without running the passes, and to remember one it compiled.
native_executable.vectors = host_vectors
native_executable.warm = warm_executable
native_executable.remember = remember
