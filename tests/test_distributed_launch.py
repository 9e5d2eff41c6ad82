"""Whole jobs under `mpiexec -n 2`: failures end the job with a message instead of hanging,
mismatches between ranks are reported, runs repeat bit for bit, and `graphc train` trains,
checkpoints and resumes across ranks. Every job runs with a timeout."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip(
    "mpi4py", reason="needs the distributed extra: pip install 'graphc[distributed]'"
)

from graphc.distributed import mpiexec_path  # noqa: E402

MPIEXEC = mpiexec_path()
WORKER = Path(__file__).parent / "distributed" / "worker.py"
TIMEOUT = 120  # seconds: a hang fails the test instead of the CI job

pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec")


def launch(*args: str, env: dict | None = None, cwd: str | None = None, ranks: int = 2):
    """(exit code, stdout + stderr, seconds) of `mpiexec -n ranks python args...`."""
    cmd = [MPIEXEC, "-n", str(ranks), sys.executable, *args]
    full_env = dict(os.environ, GRAPHC_NUM_THREADS="1", **(env or {}))
    t0 = time.monotonic()
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=TIMEOUT, env=full_env, cwd=cwd
        )
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else e.stdout or ""
        pytest.fail(f"{' '.join(cmd)} hung for {TIMEOUT} s:\n{out[-3000:]}")
    return done.returncode, done.stdout + done.stderr, time.monotonic() - t0


def test_a_killed_rank_ends_the_job():
    rc, out, _ = launch(str(WORKER), "kill")
    assert rc != 0
    assert "BAD TERMINATION" in out or "Killed" in out, out[-2000:]


def test_a_rank_that_raises_aborts_the_job():
    rc, out, _ = launch(str(WORKER), "raise")
    assert rc != 0
    assert "RuntimeError: injected failure at step 3" in out  # the traceback comes first
    assert "rank 1: aborting all ranks" in out, out[-2000:]


def test_a_rank_that_exits_early_does_not_leave_the_others_hanging():
    rc, out, _ = launch(str(WORKER), "exit", env={"GRAPHC_DIST_TIMEOUT": "3"})
    assert rc != 0
    assert "rank 1: this rank is exiting, but the others did not finish" in out, out[-2000:]


def test_ranks_tracing_different_steps_are_told_so():
    rc, out, _ = launch(str(WORKER), "mismatched_graph")
    assert rc != 0
    assert "the ranks are running different compiled steps" in out, out[-2000:]


def test_ranks_building_different_models_are_told_so():
    rc, out, _ = launch(str(WORKER), "mismatched_model")
    assert rc != 0
    assert "rank(s) [1] wrap a model whose parameters" in out, out[-2000:]


def test_repeated_runs_are_bit_for_bit_identical():
    runs = []
    for _ in range(2):
        rc, out, _ = launch(str(WORKER), "digest")
        assert rc == 0, out[-2000:]
        pattern = r"rank (\d) (sgd|adam) digest ([0-9a-f]{16})"  # lines of 2 ranks may interleave
        found = {(r, o): d for r, o, d in re.findall(pattern, out)}
        assert len(found) == 4, out[-2000:]
        assert found["0", "sgd"] == found["1", "sgd"] and found["0", "adam"] == found["1", "adam"]
        runs.append(found)
    assert runs[0] == runs[1]


def test_graphc_train_across_two_ranks(tmp_path):
    """Two ranks take the same global batches as one process (DistributedSampler deals each
    rank every other index of the same permutation), so they train to the same numbers."""
    ckpt = tmp_path / "run.ckpt"
    common = ["-m", "graphc.cli", "train", "--checkpoint", str(ckpt), "--progress", "none"]
    common += ["--train-size", "96", "--test-size", "32", "--batch-size", "16", "--workers", "0"]
    rc, out, _ = launch(*common, "--epochs", "1", "--log-json", "two.json", cwd=str(tmp_path))
    assert rc == 0, out[-3000:]
    assert out.count("epoch 1/1:") == 1, out  # only rank 0 reports
    assert "2 ranks" in out and "per rank 8" in out, out
    assert ckpt.exists()
    rc, out, _ = launch(*common, "--epochs", "2", "--resume", cwd=str(tmp_path))
    assert rc == 0, out[-3000:]
    assert out.count("epoch 2/2:") == 1 and "resuming from" in out, out

    one = common[:3] + ["--checkpoint", str(tmp_path / "one.ckpt")] + common[5:]
    done = subprocess.run(
        [sys.executable, *one, "--epochs", "1", "--log-json", "one.json"],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    two_ranks = json.loads((tmp_path / "two.json").read_text())["epochs"][0]
    one_process = json.loads((tmp_path / "one.json").read_text())["epochs"][0]
    for key in ("train_loss", "test_loss", "test_accuracy"):
        assert two_ranks[key] == pytest.approx(one_process[key], rel=1e-5), key


def test_graphc_train_refuses_a_batch_that_does_not_divide(tmp_path):
    args = ["-m", "graphc.cli", "train", "--batch-size", "15", "--train-size", "32"]
    rc, out, _ = launch(*args, "--checkpoint", str(tmp_path / "c"), cwd=str(tmp_path))
    assert rc != 0
    assert "--batch-size 15 does not divide among 2 ranks" in out, out[-2000:]


def test_graphc_bench_distributed_reports_allreduce_time_and_scaling():
    cmd = [sys.executable, "-m", "graphc.cli", "bench", "--distributed", "--threads", "2"]
    cmd += ["--batch-size", "8", "--steps", "2", "--warmup", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT * 3)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "2 ranks x 1 thread (DDP) [direct]" in out and "1 rank x 2 threads" in out, out
    assert re.search(r"direct +start +\d+ us \+ wait +\d+ us", out), out
    assert "scaling: 2 ranks x 1 thread (DDP) / 1 rank x 2 threads = " in out, out
