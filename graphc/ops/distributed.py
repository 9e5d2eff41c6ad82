"""Collective ops: the all-reduce of data-parallel training, as nodes of the training graph.

    all_reduce_start(comm, x1, ..., xk; bucket, reduction, graph_hash) -> T[n1 + ... + nk]
        packs x1..xk (flattened, in order) into one buffer and starts a non-blocking
        all-reduce of it; its value is this rank's packed data.
    all_reduce_wait(comm, started; bucket, reduction, scale) -> T[n]
        waits for that all-reduce: scale * (started on rank 0 + ... + on rank N-1), or max / min.

Two ops, so that communication can overlap computation: a start sits right after the last
gradient of its bucket is computed, its wait right before the first update that reads the
result (passes/collectives.py places them; DistributedDataParallel emits them). `comm` is an
int64 scalar graph input holding the address of the communicator's table
(graphc/distributed/table.py): compiled code reaches MPI through it, and the references below
look the communicator up by it, so both really communicate. `bucket` is the request slot (made
unique per graph by schedule_collectives); `graph_hash` (0: none) is the structural hash of the
step, which the ranks compare at the first all-reduce of every new step.

Gradients: the sum all-reduce is linear in every rank's input, and every rank's loss reads
its own result, so the cotangent of each rank's input is the all-reduce of the cotangents:
VJP(wait) = scale * all-reduce(g); VJP(start) unpacks. max and min have no VJP here.
"""

from __future__ import annotations

import numpy as np

from graphc import dtypes
from graphc.errors import ShapeError
from graphc.ir import TensorType
from graphc.ops.registry import defop

REDUCTIONS = ("sum", "max", "min")
DTYPES = (dtypes.float32, dtypes.float64, dtypes.int64, dtypes.int32)
MAX_COUNT = 2**31 - 1  # MPI's element count is an int


def _check_comm(op: str, comm: TensorType) -> None:
    if comm != TensorType((), dtypes.int64):
        raise ShapeError(f"{op}: the communicator input must be an i64[] scalar, got {comm}")


def _check_reduction(name: str, reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ShapeError(
            f"{name}: reduction must be one of {', '.join(REDUCTIONS)}, not {reduction!r}"
        )


def _start_rule(comm: TensorType, *xs: TensorType, bucket, reduction, graph_hash) -> TensorType:
    _check_comm("all_reduce_start", comm)
    _check_reduction("all_reduce_start", reduction)
    if not xs:
        raise ShapeError("all_reduce_start needs at least one tensor to reduce")
    dtype = xs[0].dtype
    if dtype not in DTYPES or any(x.dtype != dtype for x in xs):
        raise ShapeError(
            "all_reduce_start: the tensors of one bucket must share one dtype among "
            f"{', '.join(d.short for d in DTYPES)}; got {', '.join(str(x) for x in xs)}"
        )
    count = sum(x.numel for x in xs)
    if count > MAX_COUNT:
        raise ShapeError(f"all_reduce_start: {count} elements exceed MPI's limit {MAX_COUNT}")
    return TensorType((count,), dtype)


def _start_ref(comm, *xs, bucket, reduction, graph_hash):
    from graphc.distributed.comm import communicator_at

    packed = np.concatenate([np.asarray(x).reshape(-1) for x in xs])
    communicator_at(int(comm)).start(packed, reduction, int(graph_hash))
    return packed


def _start_vjp(b, g, out, comm, *xs, bucket, reduction, graph_hash):
    cts = [None]
    offset = 0
    for x in xs:
        piece = b.slice(g, axis=0, start=offset, stop=offset + x.type.numel)
        cts.append(b.reshape(piece, shape=x.shape))
        offset += x.type.numel
    return tuple(cts)


defop(
    "all_reduce_start",
    type_rule=_start_rule,
    ref=_start_ref,
    vjp=_start_vjp,
    attrs={"bucket": 0, "reduction": "sum", "graph_hash": 0},
    traits=("collective",),
    flops=lambda out, *ins, **attrs: 0,
    doc="packs the inputs and starts a non-blocking all-reduce of them",
)


def _wait_rule(comm: TensorType, started: TensorType, bucket, reduction, scale) -> TensorType:
    _check_comm("all_reduce_wait", comm)
    _check_reduction("all_reduce_wait", reduction)
    if started.rank != 1 or started.dtype not in DTYPES:
        raise ShapeError(
            f"all_reduce_wait: expects the 1-D output of all_reduce_start, got {started}"
        )
    if scale != 1 and not started.dtype.is_floating_point:
        raise ShapeError(f"all_reduce_wait: only floating-point results can be scaled ({started})")
    return started


def _wait_ref(comm, started, bucket, reduction, scale):
    from graphc.distributed.comm import communicator_at

    result = communicator_at(int(comm)).wait(started, reduction)
    if scale != 1:
        result = result * np.asarray(scale, result.dtype)
    return result


def _wait_vjp(b, g, out, comm, started, bucket, reduction, scale):
    if reduction != "sum":
        from graphc.passes.autodiff import AutodiffError

        raise AutodiffError(f"cannot differentiate a {reduction} all-reduce (only sum has a VJP)")
    again = b.all_reduce_start(comm, g, bucket=bucket, reduction="sum")
    return (None, b.all_reduce_wait(comm, again, bucket=bucket, reduction="sum", scale=scale))


defop(
    "all_reduce_wait",
    type_rule=_wait_rule,
    ref=_wait_ref,
    vjp=_wait_vjp,
    arity=2,
    attrs={"bucket": 0, "reduction": "sum", "scale": 1.0},
    traits=("collective",),
    flops=lambda out, *ins, **attrs: out.numel,
    doc="waits for the all-reduce its input started; scale * the reduction",
)
