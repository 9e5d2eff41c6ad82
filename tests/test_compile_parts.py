"""Each distinct kernel code is emitted once however many kernels call it, in bundles that
forked processes lower and compile when there are many, cached on disk for every graph that
calls them; the program is the same bits whichever process compiled which bundle, and a part
that fails costs only time."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from steps import planned_graph
from test_compile_scaling import DeepMLP
from test_parallel_native import run_twice
from test_tiles import planned_step

import graphc
import graphc.nn.functional as F
from graphc.codegen import build, jit, parts
from graphc.codegen.backend import native_executable
from graphc.codegen.build import compile_jobs
from graphc.codegen.lower import lower
from graphc.codegen.target import host_target
from graphc.interpreter import interpret


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("GRAPHC_DISABLE_CACHE", raising=False)
    monkeypatch.setattr(build, "SPLIT_MIN_INSTRUCTIONS", 0)  # parts for small graphs too
    return tmp_path


def _compile(graph, jobs: str, monkeypatch):
    monkeypatch.setenv(build.JOBS_VAR, jobs)
    return native_executable(graph)


def _clear(cache_dir) -> None:
    for entry in cache_dir.rglob("*"):
        if entry.is_file():
            entry.unlink()


def test_each_bundle_of_codes_is_a_module_of_its_own():
    graph, _ = planned_step()
    lowered = lower(graph, host_target())
    assert len(lowered.codes) == len({s.name for s in lowered.specs})
    defined_in = {}
    for e in lowered.emitted:
        external = [f.name for f in e.module.functions if not f.is_declaration and not f.linkage]
        assert sorted(external) == sorted(c.symbol for c in e.codes)
        defined_in.update((c.symbol, e.bundle.name) for c in e.codes)
        contractions = [c for c in e.codes if "conv2d" in c.description or "matmul" in c.users[0]]
        assert len(contractions) <= 1 or len(e.codes) == 1  # a contraction's code alone
    assert defined_in.keys() == lowered.codes.keys()  # every code defined exactly once
    entry = [f.name for f in lowered.module.functions if not f.is_declaration]
    assert "graphc_entry" in entry and not set(entry) & set(lowered.codes)


def test_parts_run_bitwise_like_one_process(fresh_cache, monkeypatch):
    graph, arrays = planned_step()
    split = _compile(graph, "2", monkeypatch)
    assert split.compile_parts == 2 and split.compile_problems == []
    _clear(fresh_cache)  # the whole program again, in this process alone
    whole = _compile(graph, "1", monkeypatch)
    assert whole.compile_parts == 1 and whole.compile_report.cached == 0
    assert run_twice(split, arrays) == run_twice(whole, arrays)


def test_a_cached_step_is_a_hit_and_runs_the_same(fresh_cache, monkeypatch):
    graph, arrays = planned_step()
    first = _compile(graph, "2", monkeypatch)
    again = _compile(graph, "2", monkeypatch)
    assert (first.timings["cache"], again.timings["cache"]) == ("miss", "hit")
    assert run_twice(first, arrays) == run_twice(again, arrays)


def _deep_step(depth: int):
    """The training graph of a `depth`-layer MLP and inputs for it, planned for this host."""
    graphc.manual_seed(depth)
    rng = np.random.default_rng(depth)
    x = rng.standard_normal((7, 3, 2, 2)).astype(np.float32)
    y = rng.integers(0, 10, 7).astype(np.int64)
    return planned_graph(DeepMLP(depth, width=24, inputs=12), x, y, lr=0.1)


def test_repeated_layers_share_code_and_compute_what_the_interpreter_does(fresh_cache):
    graph, arrays = _deep_step(6)
    exe = native_executable(graph)
    report = exe.compile_report
    assert report.kernels == len(graph.meta["schedule"].kernels)
    assert report.distinct < report.kernels // 2  # six hidden layers, one code each kind
    got = exe([a.copy() for a in arrays])
    want = interpret(graph, [a.copy() for a in arrays])
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-6)


def test_a_deeper_model_compiles_only_what_is_new(fresh_cache):
    shallow, _ = _deep_step(2)
    first = native_executable(shallow).compile_report
    deep, arrays = _deep_step(5)
    exe = native_executable(deep)
    second = exe.compile_report
    # The matmuls of the 2-layer step are all the 5-layer step's: none is compiled again
    # (the small loop codes are compiled in bundles, which differ between the steps).
    assert second.distinct == first.distinct and second.cached > 0
    assert not [r for r in second.rows if any("matmul" in u for u in r.users)]
    assert [r for r in first.rows if any("matmul" in u for u in r.users)]
    got = exe([a.copy() for a in arrays])
    want = interpret(deep, [a.copy() for a in arrays])
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-6)


def test_a_damaged_kernel_entry_is_compiled_again(fresh_cache):
    shallow, _ = _deep_step(2)
    native_executable(shallow)
    for entry in fresh_cache.rglob("*.o"):
        data = bytearray(entry.read_bytes())
        data[len(data) // 2] ^= 0xFF
        entry.write_bytes(bytes(data))
    deep, arrays = _deep_step(3)
    exe = native_executable(deep)
    assert exe.compile_report.cached == 0 and exe.compile_report.rows
    got = exe([a.copy() for a in arrays])
    want = interpret(deep, [a.copy() for a in arrays])
    np.testing.assert_allclose(got[0], want[0], rtol=2e-5, atol=1e-6)


def _failing(how: str):
    """A compile_work replacement whose child fails in one way."""

    def work(send):
        if how == "raises":
            raise RuntimeError("no")
        if how == "exits at once":
            os._exit(3)
        if how == "never answers":
            time.sleep(60)
        if how == "writes junk":
            send(b"R", b"[not json")
        if how == "stops short":
            send(b"R", b"[]")

    return lambda lw, bundles: work


BROKEN = {
    "raises": "compile part failed: RuntimeError: no",
    "exits at once": "ended after 0 of 1",
    "never answers": "timed out",
    "writes junk": "sent no records",
    "stops short": "sent no records",
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_part_leaves_its_bundles_to_this_process(case, fresh_cache, monkeypatch):
    graph, arrays = planned_step()
    monkeypatch.setattr(parts, "compile_work", _failing(case))
    monkeypatch.setattr(parts, "TIMEOUT_S", 2.0)
    monkeypatch.setattr(parts, "SLACK", 0.0)
    exe = _compile(graph, "2", monkeypatch)
    assert exe.compile_parts == 1  # the part failed: its share was done here
    assert len(exe.compile_problems) == 1 and BROKEN[case] in exe.compile_problems[0]
    monkeypatch.undo()
    monkeypatch.setenv("GRAPHC_DISABLE_CACHE", "1")
    assert run_twice(exe, arrays) == run_twice(native_executable(graph), arrays)


def test_a_part_that_fails_after_its_records_is_compiled_here(fresh_cache, monkeypatch):
    """Records arrive (the entry is written with them), then no objects: the bundles are
    lowered and compiled here, and the entry still calls them right."""
    graph, arrays = planned_step()
    real = parts.compile_work

    def records_only(lw, bundles):
        work = real(lw, bundles)

        def half(send):
            def first_frame_only(kind, payload):
                send(kind, payload)
                if kind == b"R":
                    os._exit(0)

            work(first_frame_only)

        return half

    monkeypatch.setattr(parts, "compile_work", records_only)
    exe = _compile(graph, "2", monkeypatch)
    assert len(exe.compile_problems) == 1 and "ended after 1 of" in exe.compile_problems[0]
    monkeypatch.undo()
    monkeypatch.setenv("GRAPHC_DISABLE_CACHE", "1")
    assert run_twice(exe, arrays) == run_twice(native_executable(graph), arrays)


def test_a_module_calling_libm_compiles_in_a_part(fresh_cache, monkeypatch):
    """ELU's expm1 lowers to a libm call, which the forked part must resolve like this
    process (tanh, once such a call, is now arithmetic: codegen/vmath.py)."""
    graph, _ = planned_step(activation=F.elu)
    assert any("expm1f" in str(m) for m in lower(graph, host_target()).parts[1:])
    monkeypatch.setattr(
        jit, "assign", lambda jobs, workers, head_start=0: [[], list(range(len(jobs)))]
    )
    exe = _compile(graph, "2", monkeypatch)
    assert exe.compile_parts == 2 and exe.compile_problems == []


def test_work_is_balanced_by_size():
    jobs = [jit.CompileJob(str(i), "", size) for i, size in enumerate([50, 40, 30, 20, 10])]
    shares = jit.assign(jobs, 2)
    loads = [sum(jobs[i].size for i in share) for share in shares]
    assert sorted(i for share in shares for i in share) == list(range(5))
    assert abs(loads[0] - loads[1]) <= 10
    ahead = jit.assign(jobs, 2, head_start=100)  # this process has the entry to do as well
    assert sum(jobs[i].size for i in ahead[0]) < sum(jobs[i].size for i in ahead[1])


def test_small_graphs_and_the_knob(monkeypatch):
    monkeypatch.setattr(parts, "fork_possible", lambda: True)
    monkeypatch.setenv(build.JOBS_VAR, "3")
    assert compile_jobs(10**6) == 3
    monkeypatch.setenv(build.JOBS_VAR, "0")
    with pytest.raises(ValueError, match="GRAPHC_COMPILE_JOBS='0'"):
        compile_jobs(10**6)
    monkeypatch.setenv(build.JOBS_VAR, "2")
    assert compile_jobs(build.SPLIT_MIN_INSTRUCTIONS - 1) == 1
    monkeypatch.setattr(parts, "fork_possible", lambda: False)  # no fork: one process
    assert compile_jobs(10**6) == 1
