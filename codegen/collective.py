"""Native code for the collective ops, and the per-process functions that reach MPI.

Step kernels (cached on disk, identical in every process) never name an MPI symbol:
- `all_reduce_start` copies its bucket's gradients into its output buffer, then calls
  `table[W_START](table, slot, buf, count, dtype, op, graph_hash)`: a non-blocking all-reduce
  in place over that buffer, which the memory plan keeps alive until the wait reads it;
- `all_reduce_wait` calls `table[W_WAIT](table, slot)`, then writes scale * buf to its output.
`table` is the communicator table (graphc/distributed/table.py) whose address the graph's
`comm` input holds.

`build_trampolines` compiles, once per process, the two functions the table points at: thin
calls of MPI_Iallreduce / MPI_Wait from the library mpi4py loaded, with the handle widths of
that library's ABI (known only at run time, hence not in the cached code). Native code never
takes the GIL to communicate. Without MPI (one process) they do nothing: the in-place buffer
already holds the one-rank reduction.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

from llvmlite import ir

from graphc.codegen import scalar
from graphc.codegen.emit import Spec, elem, new_kernel
from graphc.codegen.irutil import I32, I64, PTR, VOID, for_range, i64, intrinsic
from graphc.distributed import table as T
from graphc.ir import Node

Storage = Callable[[Node], Hashable]

START_TYPE = ir.FunctionType(I32, [PTR, I64, PTR, I64, I64, I64, I64])
WAIT_TYPE = ir.FunctionType(I32, [PTR, I64])
CHECK_TYPE = ir.FunctionType(I32, [PTR, I64])


def _word(b: ir.IRBuilder, base: ir.Value, index: int | ir.Value, name: str = "") -> ir.Value:
    """table[index] as an i64."""
    ptr = b.gep(base, [i64(index) if isinstance(index, int) else index], source_etype=I64)
    return b.load(ptr, typ=I64, name=name)


def _table(b: ir.IRBuilder, comm: ir.Value) -> ir.Value:
    """The communicator table the `comm` input (an i64 holding its address) points at."""
    return b.inttoptr(b.load(comm, typ=I64, name="comm.table"), PTR, name="table")


def _callee(b: ir.IRBuilder, table: ir.Value, word: int, fnty: ir.FunctionType) -> ir.Value:
    return b.inttoptr(_word(b, table, word), fnty.as_pointer())


def _guard_units(b: ir.IRBuilder, fn: ir.Function, lo: ir.Value, hi: ir.Value) -> None:
    """Collectives run once per step: only the caller given unit 0 does the work (a caller
    splitting the single unit across threads hands the others empty ranges)."""
    work, done = fn.append_basic_block("work"), fn.append_basic_block("done")
    b.cbranch(b.icmp_signed("<", lo, hi), work, done)
    b.position_at_end(done)
    b.ret_void()
    b.position_at_end(work)


def emit_all_reduce_start(module: ir.Module, name: str, node: Node, storage: Storage) -> Spec:
    comm, *xs = node.inputs
    if node.attrs["bucket"] >= T.MAX_REQUESTS:
        raise NotImplementedError(
            f"at most {T.MAX_REQUESTS} all-reduces can be in flight in one step "
            f"(bucket {node.attrs['bucket']}); raise bucket_cap_mb"
        )
    fn, b, (out, comm_p, *x_ps), lo, hi = new_kernel(module, name, 2 + len(xs))
    _guard_units(b, fn, lo, hi)
    memcpy = intrinsic(module, "llvm.memcpy", VOID, [PTR, PTR, I64, ir.IntType(1)], [PTR, PTR, I64])
    offset = 0
    for x, xp in zip(xs, x_ps, strict=True):
        dst = elem(b, out, offset, node.dtype)
        b.call(memcpy, [dst, xp, i64(x.type.nbytes), ir.Constant(ir.IntType(1), 0)])
        offset += x.type.numel
    table = _table(b, comm_p)
    start = _callee(b, table, T.W_START, START_TYPE)
    args = [
        table,
        i64(node.attrs["bucket"]),
        out,
        i64(node.type.numel),
        i64(T.DTYPE_CODES[node.dtype.name]),
        i64(T.OP_CODES[node.attrs["reduction"]]),
        i64(node.attrs["graph_hash"]),
    ]
    b.call(start, args)
    b.ret_void()
    return Spec(
        name,
        [storage(node), storage(comm)] + [storage(x) for x in xs],
        1,
        f"pack {len(xs)} tensors ({node.type.nbytes} bytes) and start their all-reduce",
    )


def emit_all_reduce_wait(module: ir.Module, name: str, node: Node, storage: Storage) -> Spec:
    comm, started = node.inputs
    fn, b, (out, comm_p, buf), lo, hi = new_kernel(module, name, 3)
    _guard_units(b, fn, lo, hi)
    table = _table(b, comm_p)
    wait = _callee(b, table, T.W_WAIT, WAIT_TYPE)
    b.call(wait, [table, i64(node.attrs["bucket"])])
    scale = node.attrs["scale"]
    dtype = node.dtype
    with for_range(b, 0, node.type.numel, name="i") as i:
        v = scalar.load(b, elem(b, buf, i, dtype), dtype)
        if scale != 1:
            v = b.fmul(v, scalar.constant(dtype, scale), flags=scalar.FLAGS)
        scalar.store(b, v, elem(b, out, i, dtype), dtype)
    b.ret_void()
    return Spec(
        name,
        [storage(node), storage(comm), storage(started)],
        1,
        f"wait for the all-reduce of {node.type.nbytes} bytes"
        + (f", scale by {scale:g}" if scale != 1 else ""),
    )


EMITTERS = {
    "all_reduce_start": emit_all_reduce_start,
    "all_reduce_wait": emit_all_reduce_wait,
}


# ---- the per-process functions the table points at ------------------------------------------


@dataclass(frozen=True)
class MpiFunctions:
    """Where this process's MPI is, and its ABI's handle widths (4: int, 8: pointer)."""

    iallreduce: int
    wait: int
    comm_bytes: int
    datatype_bytes: int
    op_bytes: int
    request_bytes: int


def _handle_type(nbytes: int) -> ir.Type:
    if nbytes == 4:
        return I32
    if nbytes == 8:
        return PTR
    raise NotImplementedError(f"MPI handles of {nbytes} bytes are not supported")


def _handle(b: ir.IRBuilder, word: ir.Value, nbytes: int) -> ir.Value:
    return b.trunc(word, I32) if nbytes == 4 else b.inttoptr(word, PTR)


def trampoline_module(mpi: MpiFunctions | None) -> ir.Module:
    """`graphc_mpi_start` and `graphc_mpi_wait` with the table's signatures (table.py)."""
    module = ir.Module(name="graphc.collective")
    start = ir.Function(module, START_TYPE, "graphc_mpi_start")
    wait = ir.Function(module, WAIT_TYPE, "graphc_mpi_wait")
    table, slot, buf, count, dtype, op, graph_hash = start.args
    b = ir.IRBuilder(start.append_basic_block("entry"))
    if mpi is None:  # one process without MPI: the buffer already holds the reduction
        b.ret(ir.Constant(I32, 0))
        ir.IRBuilder(wait.append_basic_block("entry")).ret(ir.Constant(I32, 0))
        return module
    if mpi.request_bytes > 8:
        raise NotImplementedError(f"MPI requests of {mpi.request_bytes} bytes do not fit a slot")

    # A new graph hash: the ranks compare their graphs first (a Python callback, once).
    last = _word(b, table, T.W_LAST_HASH, "last")
    fresh = b.and_(
        b.icmp_unsigned("!=", graph_hash, i64(0)), b.icmp_unsigned("!=", graph_hash, last)
    )
    with b.if_then(fresh, likely=False):
        b.call(_callee(b, table, T.W_CHECK, CHECK_TYPE), [table, graph_hash])
    h = _handle_type
    iallreduce_type = ir.FunctionType(
        I32,
        [PTR, PTR, I32, h(mpi.datatype_bytes), h(mpi.op_bytes), h(mpi.comm_bytes), PTR],
    )
    iallreduce = b.inttoptr(i64(mpi.iallreduce), iallreduce_type.as_pointer())
    request = b.gep(table, [b.add(slot, i64(T.W_REQUEST))], source_etype=I64, name="request")
    rc = b.call(
        iallreduce,
        [
            b.inttoptr(_word(b, table, T.W_IN_PLACE), PTR),
            buf,
            b.trunc(count, I32),
            _handle(b, _word(b, table, b.add(dtype, i64(T.W_DTYPE))), mpi.datatype_bytes),
            _handle(b, _word(b, table, b.add(op, i64(T.W_OP))), mpi.op_bytes),
            _handle(b, _word(b, table, T.W_COMM), mpi.comm_bytes),
            request,
        ],
    )
    b.ret(rc)

    table, slot = wait.args
    b = ir.IRBuilder(wait.append_basic_block("entry"))
    request = b.gep(table, [b.add(slot, i64(T.W_REQUEST))], source_etype=I64, name="request")
    status = b.gep(table, [i64(T.W_STATUS)], source_etype=I64, name="status")
    mpi_wait = b.inttoptr(i64(mpi.wait), ir.FunctionType(I32, [PTR, PTR]).as_pointer())
    b.ret(b.call(mpi_wait, [request, status]))
    return module


def build_trampolines(mpi: MpiFunctions | None) -> tuple[object, int, int]:
    """Compiles the trampolines; returns (the library keeping them alive, start, wait)."""
    from graphc.codegen.jit import compile_module

    lib = compile_module(trampoline_module(mpi), opt=2)
    return lib, lib.address("graphc_mpi_start"), lib.address("graphc_mpi_wait")
