"""Collectives on tensors: the same code eagerly and inside a compiled function.

Each goes through the collective ops (graphc/ops/distributed.py) with `dispatch.apply`, so
eagerly it runs their numpy references over MPI, and while tracing it becomes nodes of the
graph that the compiled step runs natively. `start_coalesced(...).wait()` is the two-phase
form DistributedDataParallel uses to put several reductions in flight at once.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from graphc import dispatch, dtypes
from graphc import functions as G
from graphc.distributed.comm import DistributedError
from graphc.distributed.group import ProcessGroup, default_group
from graphc.tensor import Tensor


class ReduceOp:
    """Reduction operations, as torch.distributed.ReduceOp."""

    SUM = "sum"
    MAX = "max"
    MIN = "min"
    AVG = "avg"  # sum / world size


# mode -> (group, its `comm` tensor): one graph input per traced function, not one per call
_COMM: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def comm_tensor(group: ProcessGroup | None = None) -> Tensor:
    """The int64 scalar naming `group`'s communicator to the collective ops: a per-call host
    value (a `scalar` graph input) while tracing, a constant eagerly."""
    g = group or default_group()
    mode = dispatch.current()
    hit = _COMM.get(mode)
    if hit is not None and hit[0] is g:
        return hit[1]
    (value,) = mode.runtime_scalars(lambda: [g.comm.table_address()], ["comm"], dtypes.int64)
    t = value if isinstance(value, Tensor) else Tensor._wrap(np.array(value, np.int64))
    _COMM[mode] = (g, t)
    return t


@dataclass
class InFlight:
    """Reductions started together; `wait` returns the results, shaped as the inputs."""

    comm: Tensor
    started: Tensor
    shapes: list[tuple[int, ...]]
    bucket: int
    op: str

    def wait(self, scale: float = 1.0) -> list[Tensor]:
        with dispatch.no_grad():
            flat = dispatch.apply(
                "all_reduce_wait",
                [self.comm, self.started],
                bucket=self.bucket,
                reduction=self.op,
                scale=scale,
            )
            out, offset = [], 0
            for shape in self.shapes:
                n = int(np.prod(shape, dtype=np.int64))
                piece = flat[offset : offset + n] if len(self.shapes) > 1 else flat
                out.append(piece.reshape(shape))
                offset += n
        return out


def start_coalesced(
    tensors: Sequence[Tensor],
    bucket: int = 0,
    op: str = ReduceOp.SUM,
    group: ProcessGroup | None = None,
) -> InFlight:
    """Starts one all-reduce over all of `tensors` (one dtype), packed in order."""
    comm = comm_tensor(group)
    with dispatch.no_grad():
        started = dispatch.apply("all_reduce_start", [comm, *tensors], bucket=bucket, reduction=op)
    return InFlight(comm, started, [tuple(t.shape) for t in tensors], bucket, op)


def all_reduce(
    tensor: Tensor,
    op: str = ReduceOp.SUM,
    group: ProcessGroup | None = None,
    async_op: bool = False,
) -> None:
    """Reduces `tensor` over all ranks, in place (as torch.distributed.all_reduce)."""
    if async_op:
        raise DistributedError(
            "async_op=True is not supported; inside a compiled function graphc overlaps "
            "all-reduces with computation itself"
        )
    g = group or default_group()
    name, scale = (ReduceOp.SUM, 1.0 / g.size) if op == ReduceOp.AVG else (op, 1.0)
    (reduced,) = start_coalesced([tensor], op=name, group=g).wait(scale)
    with dispatch.no_grad():
        tensor.copy_(reduced)


def broadcast(tensor: Tensor, src: int = 0, group: ProcessGroup | None = None) -> None:
    """Copies rank `src`'s `tensor` into every rank's, in place."""
    broadcast_coalesced([tensor], src, group)


def broadcast_coalesced(
    tensors: Sequence[Tensor], src: int = 0, group: ProcessGroup | None = None
) -> None:
    g = group or default_group()
    if not 0 <= src < g.size:
        raise DistributedError(f"broadcast: src {src} is not a rank of a group of {g.size}")
    if g.size == 1 or not tensors:
        return
    if not dispatch.is_tracing():
        for t in tensors:
            t._check_eager()
            data = np.ascontiguousarray(t._data)
            g.comm.mpi.Bcast(data, root=src)
            if data is not t._data:
                np.copyto(t._data, data)
            t._version[0] += 1
        return
    # Traced: rank src contributes its values, every other rank zeros; the sum is src's
    # values exactly (x + 0 == x), and the graph is the same on every rank.
    (is_src,) = dispatch.current().runtime_scalars(
        lambda: [g.rank == src], ["is_src_rank"], dtypes.bool_
    )
    by_dtype: dict = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group_tensors in by_dtype.values():
        with dispatch.no_grad():
            masked = [G.where(is_src, t, G.zeros_like(t)) for t in group_tensors]
            results = start_coalesced(masked, op=ReduceOp.SUM, group=g).wait()
            for t, r in zip(group_tensors, results, strict=True):
                t.copy_(r)
