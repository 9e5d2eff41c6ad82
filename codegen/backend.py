"""The native backend: graph -> machine code -> a NativeExecutable (graphc/runtime.py)."""

from __future__ import annotations

import time

from graphc.codegen import jit
from graphc.codegen.lower import ENTRY, lower
from graphc.codegen.target import host_target
from graphc.ir import Graph
from graphc.runtime import NativeExecutable, OutputSlot


def native_executable(graph: Graph) -> NativeExecutable:
    t0 = time.perf_counter()
    target = host_target()
    lowered = lower(graph, target)
    t1 = time.perf_counter()
    library = jit.compile_module(lowered.module, target)
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
    exe = NativeExecutable(graph, library.address(ENTRY), plan.arena_bytes, slots, library)
    exe.timings = {
        "lower": t1 - t0,
        "llvm_optimize": library.times.optimize,
        "llvm_codegen": library.times.codegen + library.times.parse,
        "link": library.times.link,
    }
    exe.lowered = lowered
    return exe
