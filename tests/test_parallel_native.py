"""Kernels run across the worker threads give the same bits as run serially.

Two claims are tested here, both exactly (bytes, not tolerances):
- every kernel kind is safe to split: random graphs (tests/graph_gen.py) compiled with every
  kernel forced parallel and run on 3 threads — more threads than cores, so chunks are small
  and land on different threads in varying order — match the same graph compiled all-serial;
- a real training step does not depend on the thread count: the reference ConvNet and a
  BatchNorm model trained for a few steps with 1, 2 and 3 threads end with identical
  parameters and losses.
"""

from __future__ import annotations

import numpy as np
import pytest
from graph_gen import KINDS, GraphGen
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

import graphc
import graphc.nn as nn
import graphc.optim as optim
from graphc.codegen import threads as native
from graphc.codegen.backend import native_executable
from graphc.ir import Graph
from graphc.models import ConvNet
from graphc.passes import run_pipeline
from graphc.passes.parallel import SERIAL_KINDS, ParallelPlan

pytestmark = pytest.mark.skipif(
    native.futex_syscall() is None, reason="the pool needs Linux futexes"
)


@pytest.fixture
def threads():
    """Set the thread count for one test, and put it back."""
    before = graphc.get_num_threads()
    yield graphc.set_num_threads
    graphc.set_num_threads(before)


def with_plan(planned: Graph, everything: bool) -> Graph:
    """The graph with every kernel that may be split forced parallel, or with none."""
    kernels = planned.meta["schedule"].kernels
    chosen = {k.name for k in kernels if everything and k.kind not in SERIAL_KINDS}
    reasons = {k.name: "forced by the test" for k in kernels}
    return planned.with_meta(parallel=ParallelPlan(frozenset(chosen), reasons))


def run_twice(exe, arrays: list[np.ndarray]) -> list[bytes]:
    """Outputs and (possibly updated in place) inputs of two calls, as bytes."""
    fresh = [a.copy() for a in arrays]
    out = []
    for _ in range(2):
        out += [np.ascontiguousarray(v).tobytes() for v in exe(fresh)]
    return out + [a.tobytes() for a in fresh]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kernel_kind_split_across_threads_matches_serial_bitwise(kind, threads):
    @settings(
        max_examples=6,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.data())
    def run(data):
        case = GraphGen(data.draw, focus=kind, max_steps=5).build()
        planned = run_pipeline(case.graph, keep_snapshots=False).graph
        try:
            serial = native_executable(with_plan(planned, everything=False))
            split = native_executable(with_plan(planned, everything=True))
        except NotImplementedError:
            reject()
        arrays = case.arrays(data.draw(st.integers(0, 2**16)))
        threads(1)
        want = run_twice(serial, arrays)
        threads(3)
        got = run_twice(split, arrays)
        assert len(got) == len(want)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert g == w, f"value {i} differs when split across threads\n{planned}"

    run()


def _bn_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 10),
    )


def _training_step(net: nn.Module, opt):
    criterion = nn.CrossEntropyLoss()

    @graphc.compile
    def step(x, y):
        opt.zero_grad()
        loss = criterion(net(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


@pytest.mark.parametrize("model", ["convnet", "batchnorm"])
def test_training_is_bitwise_identical_for_any_thread_count(model, threads):
    rng = np.random.default_rng(0)
    size = 32 if model == "convnet" else 16
    batches = [
        (
            graphc.from_numpy(rng.standard_normal((64, 3, size, size)).astype(np.float32)),
            graphc.from_numpy(rng.integers(0, 10, 64)),
        )
        for _ in range(4)
    ]
    results = {}
    for n in (1, 2, 3):
        threads(n)
        graphc.manual_seed(0)
        net = ConvNet() if model == "convnet" else _bn_net()
        step = _training_step(net, optim.SGD(net.parameters(), lr=0.05, momentum=0.9))
        losses = [step(x, y).item() for x, y in batches]
        state = {k: v.numpy().tobytes() for k, v in net.state_dict().items()}
        results[n] = (losses, state)
        assert any(step.last.graph.meta["parallel"].parallel), "nothing ran in parallel"
    for n in (2, 3):
        assert results[n][0] == results[1][0], f"losses differ with {n} threads"
        for name in results[1][1]:
            assert results[n][1][name] == results[1][1][name], f"{name} differs, {n} threads"
