"""Distributed benchmark: all-reduce time per step, and data-parallel scaling on this machine.

    python -m graphc.distributed.bench [--batch-size 64] [--steps 40] [--ranks 2]

runs, each in fresh processes with the same global batch of the reference ConvNet:
- `--ranks` ranks x 1 thread (`mpiexec -n R`), DistributedDataParallel, per-rank batch
  global / R; the compiled step is a profiling build, so the time spent in the all-reduce
  kernels is measured inside the step: `start` (pack the bucket, start the reduction) and
  `wait` (the part of the communication the remaining backward work did not hide), once
  with compiled calls of MPI ("direct") and once with ctypes callbacks into mpi4py
  ("callback"); plus a plain blocking MPI_Allreduce of the same bytes for reference;
- 1 rank x R threads, and 1 rank x 1 thread, without DDP.
It prints ms/step and global images/s for each, and the scaling ratio. `run(argv)` is the
entry point `graphc bench --distributed` calls.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np

WORKER_TIMEOUT = 600  # seconds per benchmark process


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m graphc.distributed.bench", description=__doc__)
    p.add_argument("--batch-size", type=int, default=64, help="global images per step")
    p.add_argument("--steps", type=int, default=40, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--ranks", type=int, default=2, help="ranks (and threads of the 1-rank run)")
    p.add_argument(
        "--bucket-cap-mb", type=float, help="DDP bucket size (default: PyTorch's, 25 MiB)"
    )
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ddp", action="store_true", help=argparse.SUPPRESS)
    return p


# ---- inside one benchmark process -------------------------------------------------------------


def _worker(args: argparse.Namespace) -> dict:
    import graphc
    import graphc.distributed as dist
    import graphc.nn as nn
    import graphc.optim as optim
    from graphc.codegen.backend import native_executable
    from graphc.frontend.compile import CompiledFunction
    from graphc.models import ConvNet
    from graphc.nn.parallel import DistributedDataParallel

    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.batch_size % world:
        raise SystemExit(f"--batch-size {args.batch_size} does not divide among {world} ranks")
    local = args.batch_size // world
    graphc.manual_seed(0)
    net = ConvNet()
    model = DistributedDataParallel(net, bucket_cap_mb=args.bucket_cap_mb) if args.ddp else net
    optimizer = optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    criterion = nn.CrossEntropyLoss()

    def step(inputs, labels):
        optimizer.zero_grad()
        loss = criterion(model(inputs), labels)
        loss.backward()
        optimizer.step()
        return loss

    compiled = CompiledFunction(step, backend=lambda g: native_executable(g, profile=True))
    rng = np.random.default_rng(rank)
    x = graphc.from_numpy(rng.standard_normal((local, 3, 32, 32)).astype(np.float32))
    y = graphc.from_numpy(rng.integers(0, 10, local))
    compiled(x, y).item()
    exe = compiled.last.executable
    kernels = compiled.last.graph.meta["schedule"].kernels
    starts = [i for i, k in enumerate(kernels) if k.kind == "all_reduce_start"]
    waits = [i for i, k in enumerate(kernels) if k.kind == "all_reduce_wait"]
    comm = dist.default_group().comm
    modes = ("direct", "callback") if args.ddp else ("none",)
    result: dict = {"world": world, "threads": graphc.get_num_threads(), "modes": {}}
    for mode in modes:
        if args.ddp:
            comm.use(mode)
        for _ in range(args.warmup):
            compiled(x, y).item()
        times, start_ns, wait_ns = [], [], []
        for _ in range(args.steps):
            if args.ddp:
                dist.barrier()  # the ranks start each step together: step times comparable
            before = exe.profile.copy()
            t0 = time.perf_counter()
            compiled(x, y).item()
            times.append(time.perf_counter() - t0)
            spent = exe.profile - before  # ns per kernel in this step
            start_ns.append(int(spent[starts].sum()))
            wait_ns.append(int(spent[waits].sum()))
        ms = 1e3 * float(np.median(times))
        result["modes"][mode] = {  # medians over the steps
            "ms_per_step": ms,
            "images_per_s": args.batch_size / ms * 1e3,
            "start_ms": float(np.median(start_ns)) / 1e6,
            "wait_ms": float(np.median(wait_ns)) / 1e6,
        }
    if args.ddp:
        nbytes = sum(p.numel() * 4 for p in net.parameters())
        result["gradient_bytes"] = nbytes
        result["buckets"] = len(model.buckets)
        result["blocking_allreduce_ms"] = _blocking_allreduce_ms(comm, nbytes // 4)
    return result


def _blocking_allreduce_ms(comm, count: int, repeats: int = 50) -> float:
    from mpi4py import MPI

    buf = np.ones(count, np.float32)
    times = []
    for _ in range(repeats):
        comm.mpi.Barrier()
        t0 = time.perf_counter()
        comm.mpi.Allreduce(MPI.IN_PLACE, buf)
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


# ---- the driver -------------------------------------------------------------------------------


def _launch(args: argparse.Namespace, ranks: int, threads: int, ddp: bool) -> dict:
    cmd = [sys.executable, "-m", "graphc.distributed.bench", "--worker"]
    cmd += ["--batch-size", str(args.batch_size), "--steps", str(args.steps)]
    cmd += ["--warmup", str(args.warmup)] + (["--ddp"] if ddp else [])
    if args.bucket_cap_mb is not None:
        cmd += ["--bucket-cap-mb", str(args.bucket_cap_mb)]
    if ranks > 1:
        from graphc.distributed import mpiexec_path

        launcher = mpiexec_path()
        if launcher is None:
            raise SystemExit("mpiexec not found: pip install 'graphc[distributed]'")
        cmd = [launcher, "-n", str(ranks)] + cmd
    env = dict(os.environ, GRAPHC_NUM_THREADS=str(threads), OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"benchmark process failed ({' '.join(cmd)}):\n{done.stderr[-3000:]}")
    return json.loads(lines[0])  # rank 0's


def run(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.worker:
        result = _worker(args)
        import graphc.distributed as dist

        if dist.get_rank() == 0:
            print(json.dumps(result), flush=True)
        return 0
    r = args.ranks
    runs = {
        f"{r} ranks x 1 thread (DDP)": _launch(args, r, 1, ddp=True),
        f"1 rank x {r} threads": _launch(args, 1, r, ddp=False),
        "1 rank x 1 thread": _launch(args, 1, 1, ddp=False),
    }
    print(report(runs, args.batch_size))
    if args.json:
        from graphc.serialization import atomic_write

        atomic_write(args.json, (json.dumps(runs, indent=2) + "\n").encode())
    return 0


def report(runs: dict, batch: int) -> str:
    lines = [f"reference ConvNet, SGD momentum, global batch {batch}, native code"]
    lines.append(f"{'configuration':34} {'ms/step':>8} {'images/s':>9}")
    best: dict[str, float] = {}
    for name, res in runs.items():
        for mode, m in res["modes"].items():
            label = name + (f" [{mode}]" if mode != "none" else "")
            lines.append(f"{label:34} {m['ms_per_step']:8.2f} {m['images_per_s']:9.0f}")
            best[name] = max(best.get(name, 0.0), m["images_per_s"])
    ddp = next(res for res in runs.values() if "gradient_bytes" in res)
    lines.append(
        f"all-reduce per step, {ddp['gradient_bytes']:,} gradient bytes in {ddp['buckets']} "
        f"bucket(s), inside the step, medians (start + exposed wait):"
    )
    for mode, m in ddp["modes"].items():
        lines.append(
            f"  {mode:8} start {1e3 * m['start_ms']:7.0f} us + wait {1e3 * m['wait_ms']:7.0f} us"
            f" = {1e3 * (m['start_ms'] + m['wait_ms']):7.0f} us"
        )
    blocking = 1e3 * ddp["blocking_allreduce_ms"]
    lines.append(f"  blocking MPI_Allreduce of the same bytes: {blocking:.0f} us")
    names = list(runs)
    lines.append(
        f"scaling: {names[0]} / {names[1]} = {best[names[0]] / best[names[1]]:.2f}x images/s; "
        f"vs {names[2]}: {best[names[0]] / best[names[2]]:.2f}x"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run())
