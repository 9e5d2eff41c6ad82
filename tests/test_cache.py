"""The on-disk compile cache (codegen/cache.py): hits, misses, corruption, concurrent writers.

Each test gets its own empty cache directory; `timings["cache"]` on the executable says
whether the machine code came from disk.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from graphc import dtypes, threads
from graphc.codegen import cache
from graphc.codegen.backend import native_executable
from graphc.ir import GraphBuilder, TensorType
from graphc.passes import run_pipeline


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    threads.runtime()  # the worker pool's own code (built once per process) stays out
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("GRAPHC_DISABLE_CACHE", raising=False)
    monkeypatch.delenv("GRAPHC_TARGET", raising=False)
    return tmp_path


def planned(scale: float = 2.0):
    """relu(x @ w) * scale: a matmul kernel and a loop kernel."""
    b = GraphBuilder("cached")
    x = b.add_input("x", TensorType((5, 7), dtypes.float32))
    w = b.add_input("w", TensorType((7, 3), dtypes.float32))
    y = b.mul(b.relu(b.matmul(x, w)), b.full(scale, (5, 3), dtypes.float32))
    return run_pipeline(b.build([y], ["y"]), keep_snapshots=False).graph


def inputs():
    rng = np.random.default_rng(0)
    return [
        rng.standard_normal((5, 7)).astype(np.float32),
        rng.standard_normal((7, 3)).astype(np.float32),
    ]


def expected(scale: float = 2.0):
    x, w = inputs()
    return np.maximum(x @ w, 0) * scale


def entries(root):
    return sorted(p for p in root.iterdir() if p.suffix == ".o")


def test_second_compile_is_a_hit_and_runs_the_same(cache_dir):
    first = native_executable(planned())
    assert first.timings["cache"] == "miss"
    assert len(entries(cache_dir)) == 1
    second = native_executable(planned())
    assert second.timings["cache"] == "hit"
    assert "lower" not in second.timings  # nothing was lowered or optimised again
    np.testing.assert_allclose(second(inputs())[0], expected(), rtol=1e-6)
    assert first(inputs())[0].tobytes() == second(inputs())[0].tobytes()


def test_a_changed_graph_misses(cache_dir):
    native_executable(planned(2.0))
    other = native_executable(planned(3.0))
    assert other.timings["cache"] == "miss"
    assert len(entries(cache_dir)) == 2
    np.testing.assert_allclose(other(inputs())[0], expected(3.0), rtol=1e-6)


def test_other_cpu_features_miss(cache_dir, monkeypatch):
    native_executable(planned())
    monkeypatch.setenv("GRAPHC_TARGET", "generic")  # SSE2 only: another feature set
    narrow = native_executable(planned())
    assert narrow.timings["cache"] == "miss"
    assert len(entries(cache_dir)) == 2
    np.testing.assert_allclose(narrow(inputs())[0], expected(), rtol=1e-6)


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "empty", "garbage"])
def test_a_damaged_entry_is_rebuilt_not_loaded(cache_dir, damage):
    native_executable(planned())
    (path,) = entries(cache_dir)
    data = bytearray(path.read_bytes())
    if damage == "flip a byte":
        data[len(data) // 2] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = bytearray()
    else:
        data = bytearray(b"\x7fELF" + bytes(range(256)) * 4)
    path.write_bytes(bytes(data))
    rebuilt = native_executable(planned())
    assert rebuilt.timings["cache"] == "miss"
    np.testing.assert_allclose(rebuilt(inputs())[0], expected(), rtol=1e-6)
    # ... and the rebuilt entry replaced the damaged one
    assert native_executable(planned()).timings["cache"] == "hit"


def test_concurrent_writers_leave_one_valid_entry(cache_dir):
    payloads = [bytes([i]) * (50_000 + 1_000 * i) for i in range(8)]
    barrier = threading.Barrier(len(payloads))

    def write(p: bytes) -> None:
        barrier.wait()
        for _ in range(20):
            cache.store("samekey", p)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.load("samekey") in payloads  # whole: one writer's payload, never a mix
    assert [p.name for p in cache_dir.iterdir()] == ["samekey.o"]  # no temporary files left


def test_disabled_cache_writes_nothing(cache_dir, monkeypatch):
    monkeypatch.setenv("GRAPHC_DISABLE_CACHE", "1")
    assert native_executable(planned()).timings["cache"] == "miss"
    assert native_executable(planned()).timings["cache"] == "miss"
    assert list(cache_dir.iterdir()) == []


def test_the_key_covers_graph_target_versions_and_compiler_source():
    base = cache.cache_key("graph", "target")
    assert base == cache.cache_key("graph", "target")
    assert base != cache.cache_key("graph2", "target")
    assert base != cache.cache_key("graph", "target2")
    assert len(cache.compiler_digest()) == 64


# ---- warm starts: a trace compiled before runs without the passes -----------------------------


def _step():
    """A small training step as users write it, compiled natively (a fresh CompiledFunction
    each time: a new process would have nothing in memory either)."""
    import graphc
    import graphc.nn.functional as F
    from graphc.frontend.compile import CompiledFunction

    graphc.manual_seed(0)
    net = graphc.nn.Sequential(graphc.nn.Linear(6, 8), graphc.nn.ReLU(), graphc.nn.Linear(8, 3))
    opt = graphc.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)

    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss

    rng = np.random.default_rng(0)
    x = graphc.from_numpy(rng.standard_normal((5, 6)).astype(np.float32))
    y = graphc.from_numpy(rng.integers(0, 3, 5))
    return CompiledFunction(step, backend=native_executable), net, x, y


def _losses(compiled, x, y, n=3):
    return [compiled(x, y).item() for _ in range(n)]


def test_a_trace_seen_before_runs_without_the_passes(cache_dir):
    cold, net_a, x, y = _step()
    want = _losses(cold, x, y)
    assert cold.last.executable.timings["cache"] == "miss"
    warm, net_b, x, y = _step()
    got = _losses(warm, x, y)
    entry = warm.last
    assert entry.executable.timings["cache"] == "hit (trace)"
    assert entry.planned_pipeline is None and "fuse" not in entry.timings  # no pass ran
    assert got == want  # the same machine code, from the same weights
    for (_, a), (_, b) in zip(net_a.named_parameters(), net_b.named_parameters(), strict=True):
        assert a.detach().numpy().tobytes() == b.detach().numpy().tobytes()
    # the optimised graph is still there for inspection: the passes run when asked
    assert entry.graph.structural_hash() == cold.last.graph.structural_hash()


@pytest.mark.parametrize("damage", ["record", "step entry"])
def test_a_damaged_warm_start_compiles_again(cache_dir, damage):
    cold, _, x, y = _step()
    want = _losses(cold, x, y)
    folder = cache_dir / "steps" if damage == "record" else cache_dir
    for path in folder.glob("*.o"):
        path.write_bytes(path.read_bytes()[:-7])
    again, _, x, y = _step()
    assert _losses(again, x, y) == want
    assert again.last.executable.timings["cache"] != "hit (trace)"
