"""The parent side of `graphc bench`: starts the child processes in order, checks, assembles.

Per run:       peak (sgemm) child before every workload and once at the end.
Per workload:  prepare child (weights, batch, FLOPs, correctness check; stop if it fails) ->
               for training, a cold then a warm startup probe of each contender (cold: empty
               compile caches; warm: the caches the cold probe filled) -> timing child (every
               contender interleaved, on the warm caches).
Children get the thread count through OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS
and GRAPHC_NUM_THREADS before any library starts, and their own cache directories
(GRAPHC_CACHE_DIR, TORCHINDUCTOR_CACHE_DIR) under a temporary directory removed at the end,
so the user's caches are neither used nor touched.

`graphc bench --distributed` (issue 7: all-reduce time per step, 2 ranks x 1 thread vs 1 rank x
2 threads) will be a sibling of `run_bench` here: the same children launched under mpiexec.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from graphc.bench.config import (
    GRAPHC,
    SPAWN_TIME_VAR,
    TORCH_COMPILE,
    TORCH_EAGER,
    BenchConfig,
    BenchError,
    Workload,
)
from graphc.bench.report import SCHEMA, rescale_peak, workload_result

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "GRAPHC_NUM_THREADS")


def run_bench(config: BenchConfig, progress: Callable[[str], None] | None = None) -> dict:
    """Runs the whole benchmark and returns its result (the --json document, see report.py)."""
    say = progress or (lambda msg: None)
    with tempfile.TemporaryDirectory(prefix="graphc-bench-") as tmp:
        return _Runner(config, Path(tmp), say).run()


class _Runner:
    def __init__(self, config: BenchConfig, tmp: Path, say: Callable[[str], None]) -> None:
        self.config = config
        self.tmp = tmp
        self.say = say
        self.count = 0

    def run(self) -> dict:
        import graphc

        c = self.config
        started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        load_start = _loadavg()
        # The peak is measured before every workload and once at the end; the best of them
        # is the machine's peak (% of peak is recomputed with it at the end), so one
        # measurement disturbed by another process cannot flatter every contender.
        runs, results = [], []
        for i, w in enumerate(c.workloads()):
            runs.append(self.peak())
            results.append(self.workload(w, self.tmp / f"w{i}", runs[-1]["gflops"]))
        runs.append(self.peak())
        peak = {**max(runs, key=lambda p: p["gflops"]), "runs": runs}
        for r in results:
            rescale_peak(r, peak["gflops"])
        load_end = _loadavg()
        return {
            "schema": SCHEMA,
            "graphc_version": graphc.__version__,
            "started": started,
            "host": {
                "cpu": _cpu_name(),
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "torch": _torch_version() if c.torch else None,
                "load_average_start": load_start,
                "load_average_end": load_end,
            },
            "config": c.to_json(),
            "peak": peak,
            "notes": _busy_notes(load_start, os.cpu_count() or 1),
            "workloads": results,
        }

    def peak(self) -> dict:
        self.say(f"peak: numpy sgemm on {self.config.threads} thread(s)")
        return self.child("peak", {}, self.tmp / "peak")

    def workload(self, w: Workload, wdir: Path, peak_gflops: float) -> dict:
        c = self.config
        wdir.mkdir(parents=True)
        npz = str(wdir / "workload.npz")
        self.say(f"{w.label}: preparing weights and batch, checking graphc against the reference")
        prep = self.child(
            "prepare", {"workload": w.to_json(), "npz": npz, "torch": c.torch}, wdir / "check"
        )
        check = prep["check"]
        if not check["passed"]:
            raise BenchError(
                f"{w.label}: graphc ({w.backend}) does not compute what {check['reference']} "
                "computes, so its speed is not reported:\n  " + "\n  ".join(check["problems"])
            )
        names = [GRAPHC]
        if prep["torch_twin"]:
            names.append(TORCH_EAGER)
            if c.torch_compile:
                names.append(TORCH_COMPILE)
        caches = wdir / "caches"  # empty until the cold probes fill it
        startup: dict[str, dict] = {}
        if c.startup and w.kind == "train":
            for phase in ("cold", "warm"):
                for name in list(names):
                    self.say(f"{w.label}: {phase} start of {name} and {c.rss_steps} steps")
                    req = {
                        "workload": w.to_json(),
                        "contender": name,
                        "npz": npz,
                        "rss_steps": c.rss_steps,
                    }
                    try:
                        startup.setdefault(name, {})[phase] = self.child("probe", req, caches)
                    except BenchError as e:
                        if name != TORCH_COMPILE:
                            raise
                        # optional: a torch.compile that fails costs its column, not the run
                        startup[name] = {"error": str(e).splitlines()[-1][:300]}
                        names.remove(name)
        self.say(
            f"{w.label}: timing {', '.join(names)}: {c.warmup} warm-up, "
            f"{c.rounds} rounds x {c.steps} calls each"
        )
        req = {
            "workload": w.to_json(),
            "contenders": names,
            "npz": npz,
            "warmup": c.warmup,
            "rounds": c.rounds,
            "steps": c.steps,
        }
        timing = self.child("timing", req, caches)
        return workload_result(w, prep, startup, timing, peak_gflops)

    def child(self, role: str, req: dict, caches: Path) -> dict:
        """Runs one child to completion and returns its result; BenchError if it fails."""
        self.count += 1
        base = self.tmp / f"{self.count:03d}-{role}"
        in_path, out_path, log_path = (base.with_suffix(s) for s in (".in", ".out", ".log"))
        in_path.write_text(json.dumps(req))
        env = dict(os.environ)
        env.update({v: str(self.config.threads) for v in THREAD_VARS})
        env["GRAPHC_CACHE_DIR"] = str(caches / "graphc")
        env["TORCHINDUCTOR_CACHE_DIR"] = str(caches / "inductor")
        env.pop("GRAPHC_DISABLE_CACHE", None)  # warm starts need the cache
        cmd = [sys.executable, "-m", "graphc.bench.child", role, str(in_path), str(out_path)]
        with open(log_path, "wb") as log:
            env[SPAWN_TIME_VAR] = repr(time.time())
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
            status, rusage = _wait(proc, self.config.timeout)
        if status is None:
            raise BenchError(f"the {role} child took longer than {self.config.timeout:g} s")
        if status != 0 or not out_path.exists():
            tail = log_path.read_text(errors="replace").strip().splitlines()[-25:]
            hint = ""
            if self.config.backend == "native" and role != "peak":
                hint = "\n(--backend interpreter runs graphc's reference interpreter instead)"
            raise BenchError(
                f"the {role} child failed (exit status {status}):\n  " + "\n  ".join(tail) + hint
            )
        result = json.loads(out_path.read_text())
        if "error" in result:
            raise BenchError(result["error"])
        # ru_maxrss of a reaped child: the largest of it and its own reaped descendants
        # (e.g. torch.compile's compile workers), in KiB on Linux.
        result["max_rss_process_tree_mb"] = rusage.ru_maxrss / 1024
        return result


def _wait(proc: subprocess.Popen, timeout: float):
    """Waits for the child and returns (exit status, its rusage), or (None, None) after
    killing it when it overran `timeout`. os.wait4 rather than Popen.wait: it also gives the
    child's own resource usage, which RUSAGE_CHILDREN would merge over all children."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    try:
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                return proc.returncode, rusage
            if time.monotonic() > deadline:
                _kill(proc)
                return None, None
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
    except BaseException:  # Ctrl-C: the child must not outlive the run
        _kill(proc)
        raise


def _kill(proc: subprocess.Popen) -> None:
    proc.kill()
    os.wait4(proc.pid, 0)
    proc.returncode = -9


def _busy_notes(load: list[float] | None, cores: int) -> list[str]:
    """Before the run nothing of ours is running, so load is other processes: on a shared
    machine they take cores from every contender (unequally: a contender whose threads wait
    on each other, like OpenMP's, suffers most when one of them is descheduled)."""
    if load is None or load[0] < 0.5:
        return []
    return [
        f"the machine was busy when the run started (1-minute load average {load[0]:g} on "
        f"{cores} cores): expect noisy times, trust ratios within this run over absolute times"
    ]


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _torch_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("torch")
    except Exception:
        return None
