"""DistributedDataParallel: data-parallel training, with the gradient all-reduce in the graph.

Wrapping broadcasts rank 0's parameters and buffers to every rank (after checking that all
ranks built the same parameters). Each forward() registers the gradient averaging to run
right after the next `loss.backward()` (dispatch.call_after_backward), where it replaces
every parameter's .grad by its average over the ranks. In a compiled step that averaging is
`all_reduce_start` / `all_reduce_wait` nodes, one pair per bucket, which
passes/collectives.py places so the reductions overlap the rest of the backward pass;
eagerly, the buckets are started together and then waited for.

Buckets follow PyTorch: parameters in reverse order (about the order backward produces their
gradients), grouped by dtype, a bucket closed once it holds at least its size limit:
`bucket_cap_mb` (default 25 MiB; with the default, the first bucket is capped at 1 MiB so
that the first reduction starts early).

`find_unused_parameters`, `gradient_as_bucket_view` and `static_graph` are accepted for
compatibility and change nothing: a compiled step is a static graph, and a parameter the loss
never reaches contributes zeros to its bucket and keeps its .grad at None.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence

from graphc import dispatch
from graphc import functions as G
from graphc.distributed import collectives
from graphc.distributed.comm import DistributedError
from graphc.distributed.group import ProcessGroup, default_group
from graphc.nn.module import Module
from graphc.tensor import Tensor

DEFAULT_BUCKET_CAP_MB = 25.0
DEFAULT_FIRST_BUCKET_BYTES = 1024 * 1024
MB = 1024 * 1024


def assign_buckets(
    params: Sequence[Tensor], cap_bytes: int, first_cap_bytes: int | None = None
) -> list[list[int]]:
    """Indices into `params`, one list per bucket, in the order their reductions start."""
    first_cap_bytes = cap_bytes if first_cap_bytes is None else first_cap_bytes
    open_buckets: dict = {}  # dtype -> [indices, bytes, buckets closed so far]
    closed: list[list[int]] = []
    for i in reversed(range(len(params))):
        p = params[i]
        state = open_buckets.setdefault(p.dtype, [[], 0, 0])
        state[0].append(i)
        state[1] += p.numel() * p.dtype.itemsize
        limit = first_cap_bytes if state[2] == 0 else cap_bytes
        if state[1] >= limit:
            closed.append(state[0])
            open_buckets[p.dtype] = [[], 0, state[2] + 1]
    closed += [s[0] for s in open_buckets.values() if s[0]]
    # PyTorch orders buckets by the first parameter each would see in reverse order.
    return sorted(closed, key=lambda b: -b[0])


class DistributedDataParallel(Module):
    def __init__(
        self,
        module: Module,
        device_ids: Sequence | None = None,
        output_device=None,
        dim: int = 0,
        broadcast_buffers: bool = True,
        process_group: ProcessGroup | None = None,
        bucket_cap_mb: float | None = None,
        find_unused_parameters: bool = False,
        gradient_as_bucket_view: bool = False,
        static_graph: bool = False,
    ) -> None:
        super().__init__()
        if device_ids not in (None, [], ()) or output_device not in (None, "cpu"):
            raise DistributedError("graphc runs on the CPU: leave device_ids/output_device out")
        if dim != 0:
            raise DistributedError("DistributedDataParallel splits batches on dim 0 only")
        self.module = module
        self.group = process_group or default_group()
        self.broadcast_buffers = broadcast_buffers
        self.require_backward_grad_sync = True
        self.require_forward_param_sync = True
        default_cap = bucket_cap_mb is None
        cap = int((DEFAULT_BUCKET_CAP_MB if default_cap else bucket_cap_mb) * MB)
        if cap <= 0:
            raise DistributedError(f"bucket_cap_mb must be positive, not {bucket_cap_mb}")
        self.bucket_bytes_cap = cap
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self._param_names = [n for n, _ in named]
        self._params = [p for _, p in named]
        first = min(DEFAULT_FIRST_BUCKET_BYTES, cap) if default_cap else cap
        self.buckets = assign_buckets(self._params, cap, first)
        self._verify_same_model()
        with dispatch.no_grad():
            collectives.broadcast_coalesced(
                list(module.parameters()) + list(module.buffers()), 0, self.group
            )

    def _verify_same_model(self) -> None:
        """Every rank must wrap the same parameters, or the reductions would pair garbage."""
        desc = [
            (n, tuple(p.shape), p.dtype.name)
            for n, p in zip(self._param_names, self._params, strict=True)
        ]
        digest = hashlib.sha256(repr(desc).encode()).hexdigest()
        mine = int(digest[:15], 16)
        hashes = self.group.comm.allgather_int(mine, "comparing the models DDP wraps")
        if len(set(hashes)) > 1:
            bad = [r for r, h in enumerate(hashes) if h != hashes[0]]
            raise DistributedError(
                f"DistributedDataParallel: rank(s) {bad} wrap a model whose parameters "
                f"(names, shapes, dtypes) differ from rank 0's; every rank must build the "
                f"same model. This rank has {len(desc)} parameters: "
                + ", ".join(f"{n} {list(s)}" for n, s, _ in desc[:8])
                + (" ..." if len(desc) > 8 else "")
            )

    # ---- forward: sync buffers, prepare the gradient averaging -----------------------------

    def forward(self, *inputs, **kwargs):
        mode = dispatch.current()  # a compiled step re-traces when these change (no_sync)
        sync_buffers = mode.guard(
            lambda: self.broadcast_buffers and self.require_forward_param_sync,
            "DistributedDataParallel buffer sync",
        )
        if sync_buffers and self.group.size > 1:
            buffers = [b for b in self.module.buffers() if b.dtype.is_floating_point]
            with dispatch.no_grad():
                collectives.broadcast_coalesced(buffers, 0, self.group)
        sync_grads = mode.guard(
            lambda: self.require_backward_grad_sync, "DistributedDataParallel.no_sync()"
        )
        if dispatch.is_grad_enabled() and sync_grads:
            dispatch.call_after_backward(self, self._average_gradients)
        return self.module(*inputs, **kwargs)

    def _average_gradients(self) -> None:
        """.grad of every parameter := its mean over the ranks (sum / world size)."""
        grads = [p.grad for p in self._params]
        with dispatch.no_grad():
            flights = []
            for k, bucket in enumerate(self.buckets):
                tensors = [
                    grads[i] if grads[i] is not None else G.zeros_like(self._params[i])
                    for i in bucket
                ]
                flights.append(collectives.start_coalesced(tensors, bucket=k, group=self.group))
            scale = 1.0 / self.group.size
            for bucket, flight in zip(self.buckets, flights, strict=True):
                for i, mean in zip(bucket, flight.wait(scale), strict=True):
                    if grads[i] is not None:  # a parameter the loss never reached keeps None
                        self._params[i].grad = mean

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Gradients accumulate locally inside; the next backward outside averages them."""
        old = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = old

    def extra_repr(self) -> str:
        sizes = ", ".join(str(len(b)) for b in self.buckets)
        return f"world_size={self.group.size}, buckets=[{sizes}] parameters"
