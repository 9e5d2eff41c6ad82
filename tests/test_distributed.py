"""Data-parallel training in one process: buckets as PyTorch makes them, where
schedule_collectives puts the all-reduces, the graph a DDP step compiles to, native code
against the interpreter, and the errors a user can meet. Multi-rank behaviour:
tests/distributed (run under mpiexec) and tests/test_distributed_launch.py."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
import graphc.distributed as dist
import graphc.nn as nn
import graphc.nn.functional as F
import graphc.optim as optim
from graphc.codegen.backend import native_executable
from graphc.frontend.compile import CompiledFunction, interpreter_executable
from graphc.nn.parallel import DistributedDataParallel
from graphc.nn.parallel.distributed import assign_buckets
from graphc.passes.collectives import schedule_collectives
from graphc.passes.views import VIEW_OPS


@pytest.fixture(scope="module", autouse=True)
def group():
    if not dist.is_initialized():
        dist.init_process_group()
    return dist.default_group()


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 32)
        self.fc2 = nn.Linear(32, 32)
        self.fc3 = nn.Linear(32, 3)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def ddp_step(bucket_cap_mb: float | None = None, backend=interpreter_executable, optimizer="sgd"):
    graphc.manual_seed(0)
    net = MLP()
    model = DistributedDataParallel(net, bucket_cap_mb=bucket_cap_mb)
    if optimizer == "sgd":
        opt = optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    else:
        opt = optim.Adam(net.parameters(), lr=0.01)

    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return net, model, CompiledFunction(step, backend=backend)


def batch(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((5, 6)).astype(np.float32)
    return graphc.from_numpy(x), graphc.from_numpy(rng.integers(0, 3, 5))


# ---- buckets ----------------------------------------------------------------------------


def test_buckets_follow_pytorch_rules():
    params = [graphc.zeros(n) for n in (100, 300, 50, 400, 10)]  # 400, 1200, 200, 1600, 40 B
    # Reverse order, closed once a bucket reaches its limit (the first one's may be smaller).
    assert assign_buckets(params, 1000) == [[4, 3], [2, 1], [0]]
    assert assign_buckets(params, 1000, first_cap_bytes=30) == [[4], [3], [2, 1], [0]]
    assert assign_buckets(params, 10**9) == [[4, 3, 2, 1, 0]]
    mixed = [graphc.zeros(4), graphc.zeros(4, dtype=graphc.float64), graphc.zeros(4)]
    assert assign_buckets(mixed, 10**9) == [[2, 0], [1]]  # one dtype per bucket


def test_buckets_match_torchs_assignment(torch, rng):
    import torch.distributed as tdist

    if not hasattr(tdist, "_compute_bucket_assignment_by_size"):
        pytest.skip("this PyTorch has no _compute_bucket_assignment_by_size")
    for _ in range(20):
        sizes = rng.integers(1, 500, rng.integers(1, 12)).tolist()
        first, cap = int(rng.integers(4, 800)), int(rng.integers(4, 2000))
        ours = assign_buckets([graphc.zeros(n) for n in sizes], cap, first)
        reversed_tensors = [torch.zeros(n) for n in reversed(sizes)]
        theirs, _ = tdist._compute_bucket_assignment_by_size(
            reversed_tensors, [first, cap], [False] * len(sizes)
        )
        n = len(sizes)
        assert ours == [[n - 1 - j for j in b] for b in theirs]


def test_default_caps_are_pytorchs(group):
    _, model, _ = ddp_step()
    assert model.bucket_bytes_cap == 25 * 1024 * 1024
    assert model.buckets == [[5, 4, 3, 2, 1, 0]]  # 1,4 KB of MLP: one bucket under 1 MiB


# ---- the graph: placement, slots, hash ---------------------------------------------------


CAP = 0.0003  # MiB, 314 bytes: one bucket per layer (fc3 396 B, fc2 4224 B, fc1 896 B)


def scheduled_graph(bucket_cap_mb: float):
    _, _, step = ddp_step(bucket_cap_mb)
    entry = step.trace(*batch())
    return entry.pipeline.snapshots["schedule_collectives"]


def test_a_ddp_step_is_visible_in_the_graph():
    text = str(scheduled_graph(CAP))
    assert "all_reduce_start(%comm, " in text and "all_reduce_wait(%comm, " in text
    assert "%comm: i64[] scalar" in text


def test_starts_follow_their_gradients_and_waits_precede_their_first_use():
    graph = scheduled_graph(CAP)
    nodes = list(graph.nodes)
    pos = {n: i for i, n in enumerate(nodes)}
    users = graph.users()
    starts = [n for n in nodes if n.op == "all_reduce_start"]
    waits = [n for n in nodes if n.op == "all_reduce_wait"]
    assert len(starts) == len(waits) == 3
    assert [s.attrs["bucket"] for s in starts] == [0, 1, 2]
    for w in waits:
        assert w.attrs["bucket"] == w.inputs[1].attrs["bucket"]
    for s in starts:  # right after its last input (other starts aside)
        last = max(pos[i] for i in s.inputs)
        between = nodes[last + 1 : pos[s]]
        assert all(n.op == "all_reduce_start" for n in between), between
    for w in waits:  # right before the first node reading it other than through a view
        readers, stack = [], list(users[w])
        while stack:
            u = stack.pop()
            stack.extend(users[u]) if u.op in VIEW_OPS else readers.append(u)
        first = min(pos[u] for u in readers)
        assert all(n.op in VIEW_OPS or n.is_input for n in nodes[pos[w] + 1 : first])
    # Overlap: the first bucket's reduction is in flight during the rest of the backward.
    in_flight = nodes[pos[starts[0]] : pos[waits[0]]]
    assert sum(n.op == "matmul" for n in in_flight) >= 2


def test_every_start_carries_the_graphs_hash():
    graph = scheduled_graph(CAP)
    stamps = {n.attrs["graph_hash"] for n in graph.nodes if n.op == "all_reduce_start"}
    assert len(stamps) == 1 and 0 < stamps.pop() < 2**63
    again = scheduled_graph(CAP)
    assert again.structural_hash() == graph.structural_hash()  # the same on every rank


def test_graphs_without_collectives_are_left_alone():
    net = MLP()
    step = CompiledFunction(lambda x: net(x).sum(), backend=interpreter_executable)
    graph = step.trace(batch()[0]).pipeline.snapshots["dce"]
    assert schedule_collectives(graph) is graph


def test_inputs_keep_their_order():
    _, _, step = ddp_step(CAP)
    entry = step.trace(*batch())
    before = [n.name for n in entry.pipeline.snapshots["dce"].inputs]
    after = [n.name for n in entry.pipeline.snapshots["schedule_collectives"].inputs]
    assert before == after


# ---- running it --------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_group_of_one_trains_as_without_ddp(optimizer):
    graphc.manual_seed(0)
    plain = MLP()
    opt = (
        optim.SGD(plain.parameters(), lr=0.1, momentum=0.9)
        if optimizer == "sgd"
        else optim.Adam(plain.parameters(), lr=0.01)
    )
    nets = {}
    for name, backend in [("interpreter", interpreter_executable), ("native", native_executable)]:
        nets[name], _, step = ddp_step(CAP, backend, optimizer)
        for k in range(3):
            step(*batch(k))
    for k in range(3):
        opt.zero_grad()
        F.cross_entropy(plain(batch(k)[0]), batch(k)[1]).backward()
        opt.step()
    for p, q, r in zip(plain.parameters(), *(n.parameters() for n in nets.values()), strict=True):
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(r.detach().numpy(), q.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_eager_ddp_replaces_grads_by_their_mean(group):
    graphc.manual_seed(0)
    net = MLP()
    model = DistributedDataParallel(net, bucket_cap_mb=CAP)
    x, y = batch()
    F.cross_entropy(model(x), y).backward()
    mine = [p.grad.numpy().copy() for p in net.parameters()]
    graphc.manual_seed(0)
    plain = MLP()
    F.cross_entropy(plain(x), y).backward()
    for g, p in zip(mine, plain.parameters(), strict=True):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-6)


def test_ddp_names_parameters_as_pytorch():
    _, model, _ = ddp_step()
    assert next(iter(model.state_dict())) == "module.fc1.weight"


# ---- errors ------------------------------------------------------------------------------


def test_a_second_init_is_refused(group):
    with pytest.raises(dist.DistributedError, match="twice"):
        dist.init_process_group()


def test_ddp_needs_a_process_group(monkeypatch):
    from graphc.distributed import group as g

    monkeypatch.setattr(g, "_GROUP", None)
    with pytest.raises(dist.DistributedError, match="init_process_group"):
        DistributedDataParallel(MLP())


def test_local_backend_refuses_a_launch_of_many(monkeypatch):
    from graphc.distributed import group as g

    monkeypatch.setattr(g, "_GROUP", None)
    monkeypatch.setenv("PMI_SIZE", "4")
    with pytest.raises(dist.DistributedError, match="launched as one of 4"):
        dist.init_process_group("local")


def test_unsupported_arguments_are_refused(group):
    with pytest.raises(dist.DistributedError, match="CPU"):
        DistributedDataParallel(MLP(), device_ids=[0])
    with pytest.raises(dist.DistributedError, match="positive"):
        DistributedDataParallel(MLP(), bucket_cap_mb=0)
    with pytest.raises(dist.DistributedError, match="async_op"):
        dist.all_reduce(graphc.zeros(2), async_op=True)


def test_no_sync_in_a_compiled_step_retraces_without_collectives():
    net, model, step = ddp_step(CAP)
    step(*batch())
    with model.no_sync():
        step(*batch())
    graphs = [e.graph for entries in step.cache.values() for e in entries]
    assert [any(n.op == "all_reduce_start" for n in g.nodes) for g in graphs] == [True, False]
