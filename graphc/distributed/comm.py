"""Communicator: one process group's MPI communicator, as graphc's collectives use it.

It holds the mpi4py communicator (a duplicate of COMM_WORLD, so graphc's messages can never
match a user's own MPI calls), the table compiled step code reads (table.py), the requests
the numpy references of the collective ops have in flight, and the cross-rank graph check.
Without MPI (one process and no mpi4py) it is a local stand-in: every reduction of one
rank's data is that data.

Both the reference path (interpreter, eager) and native code go through the same table and
the same `check_graph`, so a mismatch between ranks is reported the same way by both.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time

import numpy as np

from graphc.distributed import table as T
from graphc.errors import GraphcError

# table address -> Communicator: how a numpy reference finds the communicator that the
# graph's `comm` input (an int64 scalar holding the address) names
_BY_ADDRESS: dict[int, Communicator] = {}

DEFAULT_TIMEOUT = 300.0  # seconds a rank waits for the others at a check before aborting


class DistributedError(GraphcError, RuntimeError):
    """A collective cannot proceed: ranks disagree, or no process group is set up."""


def communicator_at(address: int) -> Communicator:
    try:
        return _BY_ADDRESS[int(address)]
    except KeyError:
        raise DistributedError(
            "a collective op's `comm` input names no live communicator (was the process "
            "group destroyed, or the graph run in another process?)"
        ) from None


class Communicator:
    def __init__(self, mpi_comm=None) -> None:
        self.mpi = mpi_comm
        self.rank = mpi_comm.Get_rank() if mpi_comm is not None else 0
        self.size = mpi_comm.Get_size() if mpi_comm is not None else 1
        self.table = np.zeros(T.WORDS, np.int64)
        self.table[T.W_MAGIC] = T.MAGIC
        self.address = self.table.ctypes.data
        timeout = os.environ.get("GRAPHC_DIST_TIMEOUT")
        self.timeout = float(timeout) if timeout else DEFAULT_TIMEOUT
        self.mode: str | None = None  # how native code reaches MPI: "direct" | "callback"
        self.closed = False
        self._functions: dict[str, tuple] = {}  # mode -> (keeps them alive, start, wait)
        self._pending: dict[int, tuple] = {}  # id(packed) -> (packed, result, request)
        self._callback_requests: dict[int, object] = {}
        self._views: dict[tuple, np.ndarray] = {}  # (address, count, dtype) -> array over it
        if mpi_comm is not None:
            self._fill_handles()
        _BY_ADDRESS[self.address] = self

    def close(self) -> None:
        _BY_ADDRESS.pop(self.address, None)
        self.closed = True
        if self.mpi is not None:
            self.mpi.Free()
            self.mpi = None

    # ---- the table ------------------------------------------------------------------------

    def _fill_handles(self) -> None:
        from mpi4py import MPI

        def word(handle: int) -> int:
            return ctypes.c_int64(handle).value  # handles are ints or pointers: keep the bits

        t = self.table
        t[T.W_COMM] = word(MPI._handleof(self.mpi))
        t[T.W_IN_PLACE] = word(int(MPI.IN_PLACE))
        for name, code in T.DTYPE_CODES.items():
            t[T.W_DTYPE + code] = word(MPI._handleof(_MPI_TYPES[name](MPI)))
        for name, code in T.OP_CODES.items():
            t[T.W_OP + code] = word(MPI._handleof(_MPI_OPS[name](MPI)))

    def table_address(self) -> int:
        """The table's address, with the functions native code calls filled in (once)."""
        if self.closed:
            raise DistributedError(
                "this step all-reduces over a process group that was destroyed; "
                "call init_process_group() and build the DistributedDataParallel again"
            )
        if self.mode is None:
            self.use(os.environ.get("GRAPHC_COLLECTIVES", "direct"))
        return self.address

    def use(self, mode: str) -> None:
        """How native code reaches MPI from now on: "direct" (compiled calls of the MPI
        library, no GIL) or "callback" (ctypes callbacks into mpi4py). Only between steps."""
        if mode not in ("direct", "callback"):
            raise DistributedError(f"GRAPHC_COLLECTIVES must be direct or callback, not {mode!r}")
        if self._callback_requests:
            raise DistributedError("cannot switch modes while all-reduces are in flight")
        if mode not in self._functions:
            self._functions[mode] = self._build(mode)
        _, start, wait = self._functions[mode]
        self.table[T.W_START], self.table[T.W_WAIT] = start, wait
        self.mode = mode if self.mpi is not None else "local"

    def _build(self, mode: str) -> tuple[object, int, int]:
        """(what keeps them alive, start, wait) for `mode`; the check callback once."""
        if not self.table[T.W_CHECK]:
            self._check = _CHECK(self._check_callback)
            self.table[T.W_CHECK] = ctypes.cast(self._check, ctypes.c_void_p).value
        if mode == "direct" or self.mpi is None:
            from graphc.codegen.collective import build_trampolines

            return build_trampolines(_mpi_functions() if self.mpi else None)
        callbacks = (_START(self._start_callback), _WAIT(self._wait_callback))
        start, wait = (ctypes.cast(c, ctypes.c_void_p).value for c in callbacks)
        return callbacks, start, wait

    # ---- what the numpy references of the collective ops call -------------------------------

    def start(self, packed: np.ndarray, op: str, graph_hash: int) -> None:
        """Starts reducing `packed` (kept unchanged: it is the start op's value)."""
        self.check_graph(graph_hash)
        result = packed.copy()
        request = None
        if self.mpi is not None and self.size > 1:
            from mpi4py import MPI

            request = self.mpi.Iallreduce(MPI.IN_PLACE, result, op=_MPI_OPS[op](MPI))
        self._pending[id(packed)] = (packed, result, request)

    def wait(self, started: np.ndarray, op: str) -> np.ndarray:
        """The reduction of `started` over all ranks."""
        entry = self._pending.pop(id(started), None)
        if entry is None or entry[0] is not started:
            # Not started through this communicator (a graph run piecewise): reduce now.
            result = started.copy()
            if self.mpi is not None and self.size > 1:
                from mpi4py import MPI

                self.mpi.Allreduce(MPI.IN_PLACE, result, op=_MPI_OPS[op](MPI))
            return result
        _, result, request = entry
        if request is not None:
            request.Wait()
        return result

    # ---- the cross-rank graph check ---------------------------------------------------------

    def check_graph(self, graph_hash: int) -> None:
        """At the first all-reduce of a compiled step (and whenever the step changes), every
        rank must be running the same graph; a difference would pair unrelated reductions."""
        if graph_hash == 0 or graph_hash == self.table[T.W_LAST_HASH]:
            return
        if self.size > 1:
            hashes = self.allgather_int(graph_hash, "comparing compiled steps")
            if len(set(hashes)) > 1:
                listed = ", ".join(f"rank {r}: {h:015x}" for r, h in enumerate(hashes))
                raise DistributedError(
                    f"the ranks are running different compiled steps (graph hashes {listed}). "
                    "Every rank must trace the same step: the same model, optimizer settings "
                    "and per-rank batch shape, and no Python branch on the rank inside the "
                    "compiled function; print(step.last.graph) on each rank to find the "
                    "difference"
                )
        self.table[T.W_LAST_HASH] = graph_hash

    def allgather_int(self, value: int, what: str) -> list[int]:
        """Every rank's `value`, waiting at most `timeout` seconds for the others."""
        if self.mpi is None or self.size == 1:
            return [int(value)]
        send = np.array([value], np.int64)
        recv = np.empty(self.size, np.int64)
        request = self.mpi.Iallgather(send, recv)
        deadline = time.monotonic() + self.timeout
        while not request.Test():
            if time.monotonic() > deadline:
                from graphc.distributed.group import abort

                abort(
                    f"timed out after {self.timeout:g} s {what}: another rank never got "
                    "there (it runs a different number of steps or collectives, or is stuck); "
                    "set GRAPHC_DIST_TIMEOUT to wait longer"
                )
            time.sleep(0.0005)
        return [int(v) for v in recv]

    # ---- ctypes callbacks (the table's functions in callback mode, and the check) ---------

    def _check_callback(self, table: int, graph_hash: int) -> int:
        try:
            self.check_graph(graph_hash)
        except BaseException as e:  # an exception cannot cross native frames: end the job
            from graphc.distributed.group import abort

            abort(str(e))
        return 0

    def _start_callback(self, table, slot, buf, count, dtype, op, graph_hash) -> int:
        try:
            self._start_request(slot, buf, count, dtype, op, graph_hash)
        except BaseException as e:
            from graphc.distributed.group import abort

            abort(f"starting an all-reduce failed: {type(e).__name__}: {e}")
        return 0

    def _start_request(self, slot, buf, count, dtype, op, graph_hash) -> None:
        from mpi4py import MPI

        self.check_graph(graph_hash)
        key = (buf, count, dtype)
        array = self._views.get(key)
        if array is None:  # the arena does not move: one view per buffer, made once
            name = _CODE_DTYPES[dtype]
            raw = (ctypes.c_char * (count * np.dtype(name).itemsize)).from_address(buf)
            array = self._views[key] = np.frombuffer(raw, name)
        self._callback_requests[slot] = self.mpi.Iallreduce(
            MPI.IN_PLACE, array, op=_MPI_OPS[_CODE_OPS[op]](MPI)
        )

    def _wait_callback(self, table, slot) -> int:
        try:
            self._callback_requests.pop(slot).Wait()
        except BaseException as e:
            from graphc.distributed.group import abort

            abort(f"waiting for an all-reduce failed: {type(e).__name__}: {e}")
        return 0


_CHECK = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_int64)
_START = ctypes.CFUNCTYPE(
    ctypes.c_int32,
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_void_p,
    ctypes.c_int64,
    ctypes.c_int64,
    ctypes.c_int64,
    ctypes.c_int64,
)
_WAIT = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_int64)

_MPI_TYPES = {
    "float32": lambda MPI: MPI.FLOAT,
    "float64": lambda MPI: MPI.DOUBLE,
    "int64": lambda MPI: MPI.INT64_T,
    "int32": lambda MPI: MPI.INT32_T,
}
_MPI_OPS = {"sum": lambda MPI: MPI.SUM, "max": lambda MPI: MPI.MAX, "min": lambda MPI: MPI.MIN}
_CODE_DTYPES = {code: name for name, code in T.DTYPE_CODES.items()}
_CODE_OPS = {code: name for name, code in T.OP_CODES.items()}


def _mpi_functions():
    """What codegen needs to call this process's MPI directly: the addresses of
    MPI_Iallreduce and MPI_Wait in the library mpi4py loaded, and the handle widths."""
    from mpi4py import MPI

    lib = ctypes.CDLL(_loaded_libmpi())
    from graphc.codegen.collective import MpiFunctions

    def address(fn) -> int:
        return ctypes.cast(fn, ctypes.c_void_p).value

    return MpiFunctions(
        iallreduce=address(lib.MPI_Iallreduce),
        wait=address(lib.MPI_Wait),
        comm_bytes=MPI._sizeof(MPI.Comm),
        datatype_bytes=MPI._sizeof(MPI.Datatype),
        op_bytes=MPI._sizeof(MPI.Op),
        request_bytes=MPI._sizeof(MPI.Request),
    )


def _loaded_libmpi() -> str:
    """The path of the MPI library mpi4py loaded (privately: RTLD_LOCAL, so its symbols are
    not in the global namespace and must be looked up in it by name)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "/libmpi" in line}
    except OSError:
        paths = set()
    for path in sorted(paths):
        name = os.path.basename(path)
        if name.startswith(("libmpi.so", "libmpi_abi.so", "libmpi.")) and ".so" in name:
            return path
    import ctypes.util

    found = ctypes.util.find_library("mpi")
    if found is None:
        raise DistributedError(
            f"cannot locate the MPI library mpi4py uses ({sys.platform}); "
            "set GRAPHC_COLLECTIVES=callback to reach MPI through mpi4py instead"
        )
    return found
