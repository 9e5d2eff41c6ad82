"""The native runtime: binds a compiled step's inputs by pointer and calls it.

The generated entry takes a table of input pointers and an arena. Inputs are read where they
already live (a parameter's own array, the batch), state updates are written in place over
them, and everything else uses one 64-byte aligned arena allocated once. Pointers are cached
and refreshed only when an input array object changes, so a call costs a few attribute reads
and one ctypes call.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from graphc import threads
from graphc.errors import ShapeError
from graphc.interpreter import ExecutionError, run_node
from graphc.ir import Graph, Node

ALIGN = 64


def aligned_empty(nbytes: int, align: int = ALIGN) -> np.ndarray:
    """A zeroed uint8 array of nbytes whose data pointer is a multiple of `align`."""
    raw = np.zeros(nbytes + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start : start + nbytes]


@dataclass(frozen=True)
class OutputSlot:
    kind: str  # "arena" (a view of the arena) or "input" (in place over / alias of input i)
    index: int  # arena byte offset, or input position


class NativeExecutable:
    """Callable like the interpreter backend: arrays in (graph input order), arrays out."""

    def __init__(
        self,
        graph: Graph,
        entry_address: int,
        arena_bytes: int,
        outputs: Sequence[OutputSlot],
        library: object = None,
        profile: bool = False,
        planned: Callable[[], Graph] | None = None,
    ) -> None:
        """`graph`: the graph compiled, or any with its inputs and outputs (the traced one,
        on a warm start); then `planned()` gives the compiled one, should a kernel report
        bad data (the message comes from its node's reference)."""
        self.graph = graph
        self._planned = planned
        self.library = library  # keeps the machine code alive
        self.arena = aligned_empty(max(arena_bytes, ALIGN))
        n = len(graph.inputs)
        self.io = (ctypes.c_void_p * max(n, 1))()
        self._io_address = ctypes.addressof(self.io)
        self._arena_address = self.arena.ctypes.data
        self._bound: list[np.ndarray | None] = [None] * n
        self._types = [(n.shape, np.dtype(n.dtype.np)) for n in graph.inputs]
        args = [ctypes.c_void_p] * (4 if profile else 3)
        self._entry = ctypes.CFUNCTYPE(ctypes.c_int32, *args)(entry_address)
        # Where parallel kernels find the worker pool (the same for the life of the process;
        # set_num_threads changes the pool's thread count, not its address).
        rt = threads.runtime()
        self._threads = (ctypes.c_int64 * 2)(rt.parallel_for_address, rt.pool_address)
        # With profiling, kernel k's nanoseconds accumulate in profile[k] across calls.
        kernels = len(graph.meta["schedule"].kernels) if profile else 0
        self.profile = np.zeros(kernels, np.int64) if profile else None
        self._extra = (ctypes.addressof(self._threads),)
        self._extra += (self.profile.ctypes.data,) if profile else ()
        self._outputs = list(outputs)
        self._views = [self._arena_view(o, s) for o, s in zip(graph.outputs, outputs, strict=True)]
        # An output stored in an input's memory may be a reshape of it (an alias): returned
        # with the output's own shape, as a view of the caller's array.
        self._input_shapes = [
            o.shape if s.kind == "input" and o.shape != graph.inputs[s.index].shape else None
            for o, s in zip(graph.outputs, outputs, strict=True)
        ]

    def slot_table(self) -> list[list]:
        """Where each output is found, as data (the compile cache's step records)."""
        return [[s.kind, s.index] for s in self._outputs]

    def _arena_view(self, node: Node, slot: OutputSlot) -> np.ndarray | None:
        if slot.kind != "arena":
            return None
        nbytes = node.type.nbytes
        return self.arena[slot.index : slot.index + nbytes].view(node.dtype.np).reshape(node.shape)

    def __call__(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        bound = self._bound
        io = self.io
        for i, a in enumerate(arrays):
            if a is not bound[i]:
                bound[i] = a = self._checked(i, a)
                io[i] = a.ctypes.data
        threads.runtime()  # one global read; after a fork, starts this process's workers
        rc = self._entry(self._io_address, self._arena_address, *self._extra)
        if rc:
            self._report(rc - 1, arrays)
        out = []
        for v, s, shape in zip(self._views, self._outputs, self._input_shapes, strict=True):
            if v is None:
                v = bound[s.index] if shape is None else bound[s.index].reshape(shape)
            out.append(v)
        return out

    def _checked(self, i: int, a) -> np.ndarray:
        shape, dtype = self._types[i]
        a = np.asarray(a)
        if a.shape != shape or a.dtype != dtype:
            raise ShapeError(
                f"input {self.graph.inputs[i].name!r} expects "
                f"{self.graph.inputs[i].type}, got {a.dtype}{list(a.shape)}"
            )
        if not a.flags.c_contiguous:
            # A private contiguous copy; an in-place update of it is copied back by the caller.
            a = np.ascontiguousarray(a)
        return a

    def _report(self, kernel: int, arrays: Sequence[np.ndarray]) -> None:
        """A kernel refused its data: rerun its node's reference to get the exact message."""
        from graphc.interpreter import interpret

        graph = self._planned() if self._planned is not None else self.graph
        node = graph.meta["schedule"].kernels[kernel].root
        values = interpret(graph, list(arrays), wanted=list(node.inputs))
        run_node(node, values)
        raise ExecutionError(f"{node.op} rejected its input data at run time")
