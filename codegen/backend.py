"""The native backend: graph -> machine code (through the on-disk cache) -> NativeExecutable."""

from __future__ import annotations

import functools
import hashlib
import time

from graphc import debug
from graphc.codegen import cache, jit
from graphc.codegen.target import Target, host_target
from graphc.ir import Graph
from graphc.passes.tiles import VectorUnit
from graphc.runtime import NativeExecutable, OutputSlot


@functools.cache
def _load_system_libraries() -> None:
    """Generated code calls libc (clock_gettime) and libm (tanhf, expf); make their symbols
    visible to the JIT's resolver and to its check for unresolved externals."""
    import ctypes.util

    import llvmlite.binding as llvm

    for name in ("c", "m"):
        path = ctypes.util.find_library(name)
        if path:
            llvm.load_library_permanently(path)


ENTRY = "graphc_entry"  # the symbol codegen/lower.py emits


def host_vectors() -> VectorUnit:
    """The vectors native code is generated for: what the plan_tiles pass plans for."""
    return host_target().vector_unit()


def target_key(t: Target) -> str:
    return f"{t.kind}|{t.triple}|{t.cpu}|{t.features}|{t.vector_bits}"


def native_executable(
    graph: Graph, profile: bool = False, fault: str | None = None
) -> NativeExecutable:
    """`profile` and `fault` build instrumented variants (see codegen/lower.py)."""
    t0 = time.perf_counter()
    _load_system_libraries()
    target = host_target()
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
    key = cache.cache_key(graph.structural_hash() + variant, target_key(target))
    obj = cache.load(key)
    timings = {"cache": "hit" if obj is not None else "miss"}
    times = jit.CompileTimes()
    lowered = None
    if obj is None:
        # Imported here: a warm start (cache hit) never needs the emitters (~25 ms to import).
        from graphc.codegen.lower import lower

        lowered = lower(graph, target, profile=profile, fault=fault)
        timings["lower"] = time.perf_counter() - t0
        obj = jit.emit_object(lowered.module, target, times=times)
        cache.store(key, obj)
    library = jit.load_object(obj, [ENTRY], times)
    timings.update(
        llvm_optimize=times.optimize, llvm_codegen=times.codegen + times.parse, link=times.link
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
    if debug.level() >= 3:  # printed by debug.report_compile, after the IR of each pass
        from graphc.codegen.lower import lower

        lowered = lowered or lower(graph, target, profile=profile, fault=fault)
        exe.debug_sections = [("LLVM IR", str(lowered.module))]
        if debug.level() >= 4:
            exe.debug_sections.append(("assembly", jit.emit_assembly(lowered.module, target)))
    return exe


# What the frontend asks a backend for before running the pipeline (frontend/compile.py).
native_executable.vectors = host_vectors
