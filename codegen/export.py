"""The machine-code side of `graphc export` (graphc/capi/): a step's objects and the thread
pool's for a target that need not be this CPU, and what the C runtime must know about them.

The objects are the ones graphc.compile runs (the same cache entries): position-independent
(target.py: reloc "pic"), so the system linker puts them into a shared library unchanged.
The entry's `threads` argument then carries the library's own pool, started by its C
runtime, or a serial `parallel_for`.
"""

from __future__ import annotations

import llvmlite.binding as llvm

from graphc.codegen import backend, threads
from graphc.codegen.target import LEVELS, Target, get_target, host_target, level_target
from graphc.ir import Graph
from graphc.passes.tiles import VectorUnit

ENTRY = backend.ENTRY
TARGETS = ("host",) + LEVELS
POOL_BYTES = threads.POOL_BYTES
JOB_SLOT = int(threads.Slot.JOB)


def export_target(kind: str | None) -> Target:
    """The target of `graphc export --target kind`: None is graphc.compile's here (this CPU,
    narrowed by GRAPHC_TARGET), so the library computes exactly what it computes; a level
    (generic, avx2, avx512) need not be this CPU's."""
    if kind is None:
        return host_target()
    kind = kind.strip().lower()
    if kind == "host":
        return get_target("host")
    if kind not in LEVELS:
        raise ValueError(f"unknown target {kind!r}; expected one of {', '.join(TARGETS)}")
    triple = llvm.get_process_triple()
    if not triple.startswith("x86_64"):
        raise ValueError(f"--target {kind} is an x86-64 level; this machine is {triple} (use host)")
    return level_target(kind, triple)


def vectors(target: Target) -> VectorUnit:
    """What the plan_tiles pass plans a library's kernels for."""
    return target.vector_unit()


def step_objects(graph: Graph, target: Target) -> tuple[list[bytes], dict[str, object]]:
    """The step's objects for `target`: from the compile cache (a step graphc.compile ran
    here before) or compiled now."""
    return backend.step_objects(graph, target)


def pool_object(target: Target) -> bytes:
    """codegen/threads.py's pool for `target`: graphc_parallel_for, graphc_worker_main and
    the functions that start and stop it."""
    return threads.pool_object(target)
