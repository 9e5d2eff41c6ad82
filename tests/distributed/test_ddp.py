"""DistributedDataParallel inside every rank: R ranks on 1/R of a batch each end where one
process on the whole batch ends (compiled natively, by the interpreter, and eagerly), every
rank holds the same parameters, and repeated runs are bit for bit the same.

Run inside a job, `mpiexec -n 2 python -m pytest -p no:cacheprovider tests/distributed`, or
alone as a group of one. Every test must make the same collective calls on every rank, in the
same order, or the ranks deadlock; CI bounds the job with a timeout.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import graphc
import graphc.distributed as dist
import graphc.nn as nn
import graphc.nn.functional as F
import graphc.optim as optim
from graphc.codegen.backend import native_executable
from graphc.frontend.compile import CompiledFunction, interpreter_executable
from graphc.models import ConvNet
from graphc.nn.parallel import DistributedDataParallel

GLOBAL_BATCH = 8
STEPS = 4


@pytest.fixture(scope="module", autouse=True)
def process_group():
    if not dist.is_initialized():
        dist.init_process_group()
    return dist.default_group()


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 16)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class NormedMLP(MLP):
    """Batch statistics are per rank (there is no SyncBatchNorm): not one process's."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(16)

    def forward(self, x):
        return self.fc2(F.relu(self.bn(self.fc1(x))))


def make_optimizer(kind: str, params):
    if kind == "sgd_momentum":
        return optim.SGD(params, lr=0.05, momentum=0.9)
    return optim.Adam(params, lr=1e-3)


def batches(shape: tuple[int, ...], classes: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The same global batches on every rank."""
    rng = np.random.default_rng(7)
    return [
        (
            rng.standard_normal((GLOBAL_BATCH, *shape)).astype(np.float32),
            rng.integers(0, classes, GLOBAL_BATCH),
        )
        for _ in range(STEPS)
    ]


def train(model_cls, optimizer: str, data, mode: str, ddp: bool, **ddp_kwargs) -> list[np.ndarray]:
    """Parameters and buffers after STEPS steps; with ddp, on this rank's slice of each batch."""
    rank, world = dist.get_rank(), dist.get_world_size()
    graphc.manual_seed(rank * 1000 if ddp else 0)  # DDP must broadcast rank 0's weights
    net = model_cls()
    graphc.manual_seed(0)
    model = DistributedDataParallel(net, **ddp_kwargs) if ddp else net
    opt = make_optimizer(optimizer, net.parameters())
    criterion = nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        opt.step()
        return loss

    run = {
        "eager": step,
        "interpreter": CompiledFunction(step, backend=interpreter_executable),
        "native": CompiledFunction(step, backend=native_executable),
    }[mode]
    share = GLOBAL_BATCH // world if ddp else GLOBAL_BATCH
    mine = slice(rank * share, (rank + 1) * share) if ddp else slice(None)
    for x, y in data:
        run(graphc.from_numpy(x[mine]), graphc.from_numpy(y[mine]))
    if ddp and list(net.buffers()):
        with graphc.no_grad():  # buffers are synced from rank 0 as each forward starts
            model.eval()
            model(graphc.from_numpy(data[0][0][mine]))
            model.train()
    return [t.detach().numpy().copy() for t in [*net.parameters(), *net.buffers()]]


def digest(arrays: list[np.ndarray]) -> int:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return int(h.hexdigest()[:15], 16)


def same_on_every_rank(arrays: list[np.ndarray]) -> bool:
    comm = dist.default_group().comm
    return len(set(comm.allgather_int(digest(arrays), "comparing parameters"))) == 1


def assert_close(
    got: list[np.ndarray], expect: list[np.ndarray], rtol: float, atol: float = 1e-6
) -> None:
    for g, e in zip(got, expect, strict=True):
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)


@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam"])
def test_compiled_ddp_matches_one_process_on_the_whole_batch(optimizer):
    data = batches((3, 32, 32), 10)
    expect = train(ConvNet, optimizer, data, "native", ddp=False)
    got = train(ConvNet, optimizer, data, "native", ddp=True)
    # Two half-batch sums all-reduced round differently from one whole-batch sum. Adam divides
    # each gradient by its own running magnitude, so where a gradient is mostly cancellation
    # (|g| ~ 1e-9) that rounding moves the update by up to lr = 1e-3: seen as 1.3e-6 on one
    # weight of 48,000. The absolute floor is 0.5% of one step's lr for Adam.
    assert_close(got, expect, rtol=1e-5, atol=5e-6 if optimizer == "adam" else 1e-6)
    assert same_on_every_rank(got)
    again = train(ConvNet, optimizer, data, "native", ddp=True)
    assert digest(again) == digest(got), "a repeated run differs"


@pytest.mark.parametrize("mode", ["eager", "interpreter"])
def test_ddp_matches_one_process_eagerly_and_interpreted(mode):
    """The numpy references of the collective ops communicate too."""
    data = batches((12,), 5)
    expect = train(MLP, "adam", data, mode, ddp=False)
    got = train(MLP, "adam", data, mode, ddp=True)
    assert_close(got, expect, rtol=1e-5)
    assert same_on_every_rank(got)


@pytest.mark.parametrize("mode", ["eager", "native"])
def test_buffers_follow_rank_0(mode):
    """BatchNorm's running stats are broadcast from rank 0 as every forward starts
    (broadcast_buffers), so all ranks agree on them, as on the parameters."""
    got = train(NormedMLP, "sgd_momentum", batches((12,), 5), mode, ddp=True)
    assert same_on_every_rank(got)


def test_buckets_and_collective_modes_give_identical_results():
    """Many small buckets, or reaching MPI through mpi4py callbacks instead of compiled
    calls, change how the reduction is carried out, not a single bit of its result."""
    data = batches((12,), 5)
    one_bucket = train(MLP, "sgd_momentum", data, "native", ddp=True)
    many = train(MLP, "sgd_momentum", data, "native", ddp=True, bucket_cap_mb=0.0005)
    assert digest(many) == digest(one_bucket)
    comm = dist.default_group().comm
    comm.table_address()
    previous = comm.mode
    if comm.mpi is not None:  # a group of one without MPI has no callbacks to try
        comm.use("callback")
    try:
        via_callbacks = train(MLP, "sgd_momentum", data, "native", ddp=True)
    finally:
        if comm.mpi is not None:
            comm.use(previous)
    assert digest(via_callbacks) == digest(one_bucket)


@pytest.mark.parametrize("mode", ["eager", "native"])
def test_all_reduce_and_broadcast_on_tensors(mode):
    rank, world = dist.get_rank(), dist.get_world_size()

    def collect(x):
        total = x * 1.0
        dist.all_reduce(total)
        biggest = x * 1.0
        dist.all_reduce(biggest, op=dist.ReduceOp.MAX)
        mean = x * 1.0
        dist.all_reduce(mean, op=dist.ReduceOp.AVG)
        from_last = x * 1.0
        dist.broadcast(from_last, src=world - 1)
        return total, biggest, mean, from_last

    run = collect if mode == "eager" else CompiledFunction(collect, backend=native_executable)
    values = np.arange(6, dtype=np.float32).reshape(2, 3) + rank
    total, biggest, mean, from_last = (t.numpy() for t in run(graphc.from_numpy(values)))
    base = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(total, world * base + sum(range(world)))
    np.testing.assert_array_equal(biggest, base + world - 1)
    np.testing.assert_allclose(mean, base + (world - 1) / 2, rtol=1e-6)
    np.testing.assert_array_equal(from_last, base + world - 1)


def test_no_sync_accumulates_locally_then_averages():
    rank, world = dist.get_rank(), dist.get_world_size()
    net = nn.Linear(3, 2)
    model = DistributedDataParallel(net)
    x = graphc.from_numpy(np.full((1, 3), rank + 1.0, np.float32))
    with model.no_sync():
        model(x).sum().backward()
    np.testing.assert_allclose(net.weight.grad.numpy(), np.full((2, 3), rank + 1.0))
    model(x).sum().backward()  # accumulates, then averages the accumulated gradients
    mean_of_ranks = sum(2.0 * (r + 1) for r in range(world)) / world
    np.testing.assert_allclose(net.weight.grad.numpy(), np.full((2, 3), mean_of_ranks))
