"""Large steps are compiled in two parts, one in a helper process: the same program, the
same bits, a cache entry like any other, and a helper that fails costs only time."""

from __future__ import annotations

import sys

import pytest
from test_parallel_native import run_twice
from test_tiles import planned_step

import graphc.nn.functional as F
from graphc.codegen import backend, jit
from graphc.codegen.backend import compile_jobs, native_executable
from graphc.codegen.lower import lower
from graphc.codegen.target import host_target


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("GRAPHC_DISABLE_CACHE", raising=False)
    return tmp_path


def _compile(graph, jobs: str, monkeypatch):
    monkeypatch.setenv(backend.JOBS_VAR, jobs)
    return native_executable(graph)


def test_two_parts_run_bitwise_like_one(fresh_cache, monkeypatch):
    graph, arrays = planned_step()
    parts = lower(graph, host_target(), parts=2).parts
    defined = [[f.name for f in m.functions if not f.is_declaration] for m in parts]
    assert all(len(names) >= 3 for names in defined), defined  # kernels in both parts
    split = _compile(graph, "2", monkeypatch)
    assert split.compile_parts == 2 and split.compile_problems == []
    for entry in fresh_cache.rglob("*"):
        if entry.is_file():
            entry.unlink()  # the whole program again, as one object
    whole = _compile(graph, "1", monkeypatch)
    assert whole.compile_parts == 1
    assert run_twice(split, arrays) == run_twice(whole, arrays)


def test_a_two_part_entry_is_a_cache_hit(fresh_cache, monkeypatch):
    graph, arrays = planned_step()
    first = _compile(graph, "2", monkeypatch)
    again = _compile(graph, "2", monkeypatch)
    assert (first.timings["cache"], again.timings["cache"]) == ("miss", "hit")
    assert again.compile_parts == 2
    assert run_twice(first, arrays) == run_twice(again, arrays)


def _helper_running(code: str):
    """A HelperProcess class whose process runs `code` instead of the worker."""

    class Broken(jit.HelperProcess):
        def __init__(self) -> None:
            super().__init__([sys.executable, "-c", code])

    return Broken


WORKER = "from graphc.codegen.compile_worker import main; sys.exit(main())"
BROKEN = {
    "exits at once": ("import sys; sys.exit(3)", "status 3"),
    "fails after reading": (
        "import sys; sys.stdin.buffer.read(); sys.stderr.write('no\\n'); sys.exit(3)",
        "status 3: no",
    ),
    "never reads": ("import time; time.sleep(60)", "timed out"),
    "writes junk first": (f"import sys; sys.stdout.write('junk'); {WORKER}", "not one framed"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_helper_leaves_its_part_to_this_process(case, fresh_cache, monkeypatch):
    code, problem = BROKEN[case]
    graph, arrays = planned_step()
    monkeypatch.setattr(jit, "HelperProcess", _helper_running(code))
    monkeypatch.setattr(jit, "HELPER_TIMEOUT_S", 2.0)
    monkeypatch.setattr(jit, "HELPER_SLACK", 0.0)
    exe = _compile(graph, "2", monkeypatch)
    assert exe.compile_parts == 2
    assert len(exe.compile_problems) == 1 and problem in exe.compile_problems[0]
    monkeypatch.undo()
    monkeypatch.setenv("GRAPHC_DISABLE_CACHE", "1")
    assert run_twice(exe, arrays) == run_twice(native_executable(graph), arrays)


def test_a_working_helper_compiles_its_part(fresh_cache, monkeypatch):
    """The real worker, run through the same broken-helper plumbing: no problems."""
    graph, _ = planned_step()
    monkeypatch.setattr(jit, "HelperProcess", _helper_running("import sys; " + WORKER))
    exe = _compile(graph, "2", monkeypatch)
    assert exe.compile_parts == 2 and exe.compile_problems == []


def test_a_part_calling_libm_compiles_in_the_helper(fresh_cache, monkeypatch):
    """tanh lowers to a libm call, which the helper must resolve like this process does."""
    graph, _ = planned_step(activation=F.tanh)
    parts = lower(graph, host_target(), parts=2).parts
    assert "tanhf" in str(parts[1])
    exe = _compile(graph, "2", monkeypatch)
    assert exe.compile_parts == 2 and exe.compile_problems == []


def test_small_graphs_and_the_knob(monkeypatch):
    graph, _ = planned_step()
    monkeypatch.setenv(backend.JOBS_VAR, "3")
    assert compile_jobs(graph) == 3
    monkeypatch.setenv(backend.JOBS_VAR, "0")
    with pytest.raises(ValueError, match="GRAPHC_COMPILE_JOBS='0'"):
        compile_jobs(graph)
    monkeypatch.setattr(backend, "SPLIT_MIN_CONTRACTIONS", 1000)
    monkeypatch.setenv(backend.JOBS_VAR, "2")
    assert compile_jobs(graph) == 1


def test_one_process_per_rank_under_mpi_and_with_one_thread(monkeypatch):
    graph, _ = planned_step()
    monkeypatch.delenv(backend.JOBS_VAR, raising=False)
    monkeypatch.setattr(backend, "usable_cores", lambda: 2)
    monkeypatch.setattr(backend, "get_num_threads", lambda: 2)
    monkeypatch.delenv("PMI_SIZE", raising=False)
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE", raising=False)
    assert compile_jobs(graph) == 2
    monkeypatch.setenv("PMI_SIZE", "2")
    assert compile_jobs(graph) == 1
    monkeypatch.delenv("PMI_SIZE")
    monkeypatch.setattr(backend, "get_num_threads", lambda: 1)
    assert compile_jobs(graph) == 1


def test_damaged_payloads_are_misses():
    objs = [b"abc", b"", b"defg"]
    packed = backend._pack(objs)
    assert backend._unpack(packed) == objs
    for bad in (None, b"", packed[:-1], packed + b"x", b"\x00\x00\x00\x00"):
        assert backend._unpack(bad) is None


def test_an_error_while_lowering_does_not_leave_a_helper_behind(fresh_cache, monkeypatch):
    graph, _ = planned_step()
    started = []

    class Recorded(jit.HelperProcess):
        def __init__(self) -> None:
            super().__init__()
            started.append(self)

    def broken_lower(*args, **kwargs):
        raise NotImplementedError("no lowering for this test")

    import graphc.codegen.lower as lowering

    monkeypatch.setattr(jit, "HelperProcess", Recorded)
    monkeypatch.setattr(lowering, "lower", broken_lower)
    monkeypatch.setenv(backend.JOBS_VAR, "2")
    with pytest.raises(NotImplementedError):
        native_executable(graph)
    assert len(started) == 1 and started[0].proc.returncode is not None
