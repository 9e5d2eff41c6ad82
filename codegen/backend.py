"""The native backend: graph -> machine code (through the on-disk cache) -> NativeExecutable."""

from __future__ import annotations

import hashlib
import os
import struct
import time

from graphc import debug
from graphc.codegen import cache, jit
from graphc.codegen.target import Target, host_target
from graphc.distributed.group import launched_size
from graphc.ir import Graph
from graphc.passes.tiles import TILED_KINDS, VectorUnit
from graphc.runtime import NativeExecutable, OutputSlot
from graphc.threads import get_num_threads, usable_cores

ENTRY = "graphc_entry"  # the symbol codegen/lower.py emits


def host_vectors() -> VectorUnit:
    """The vectors native code is generated for: what the plan_tiles pass plans for."""
    return host_target().vector_unit()


# Kernels are compiled in parallel processes only for steps this large: a helper costs an
# interpreter start (~0.2 s of CPU), which small graphs would not pay back.
SPLIT_MIN_CONTRACTIONS = 6
JOBS_VAR = "GRAPHC_COMPILE_JOBS"


def compile_jobs(graph: Graph) -> int:
    """How many processes compile this graph's kernels: GRAPHC_COMPILE_JOBS if set; else 2
    when this process may use two cores and two threads (graphc.set_num_threads), is not
    one of several MPI ranks and can start a helper; 1 for graphs with fewer than
    SPLIT_MIN_CONTRACTIONS convolution and matmul kernels."""
    value = os.environ.get(JOBS_VAR, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{JOBS_VAR}={value!r}: expected a positive whole number")
        jobs = int(value)
    elif launched_size() > 1 or not jit.helpers_possible():
        jobs = 1
    else:
        jobs = min(2, usable_cores(), get_num_threads())
    kernels = graph.meta["schedule"].kernels
    contractions = sum(k.kind in TILED_KINDS for k in kernels)
    return jobs if contractions >= SPLIT_MIN_CONTRACTIONS else 1


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
    t0 = time.perf_counter()
    jit.load_system_libraries()
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
    objs, problems = _unpack(cache.load(key)), []
    timings = {"cache": "hit" if objs is not None else "miss"}
    times = jit.CompileTimes()
    lowered = None
    if objs is None:
        # Imported here: a warm start (cache hit) never needs the emitters (~25 ms to import).
        from graphc.codegen.lower import lower

        jobs = compile_jobs(graph)
        helpers = _start_helpers(jobs - 1)
        try:
            lowered = lower(graph, target, profile=profile, fault=fault, parts=jobs)
            timings["lower"] = time.perf_counter() - t0
            objs, problems = jit.emit_objects(lowered.parts, target, helpers, times=times)
        finally:  # (a no-op for helpers that finished; an error must not leave them waiting)
            for helper in helpers:
                helper.kill()
    library = jit.load_object(objs, [ENTRY], times)
    if timings["cache"] == "miss":  # stored once it has linked: a bad object is never cached
        cache.store(key, _pack(objs))
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
    exe.compile_parts = len(objs)  # objects the code was compiled as (processes, on a miss)
    exe.compile_problems = problems  # what went wrong with helper processes, if anything
    if debug.level() >= 3:  # printed by debug.report_compile, after the IR of each pass
        from graphc.codegen.lower import lower

        lowered = lowered or lower(graph, target, profile=profile, fault=fault)
        parts = lowered.parts
        named = [
            (f" (part {i + 1} of {len(parts)})" if len(parts) > 1 else "", m)
            for i, m in enumerate(parts)
        ]
        exe.debug_sections = [(f"LLVM IR{what}", str(m)) for what, m in named]
        if debug.level() >= 4:
            exe.debug_sections += [
                (f"assembly{what}", jit.emit_assembly(m, target)) for what, m in named
            ]
    return exe


# What the frontend asks a backend for before running the pipeline (frontend/compile.py).
native_executable.vectors = host_vectors
