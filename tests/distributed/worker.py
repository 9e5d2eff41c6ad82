"""One rank of a job that tests/test_distributed_launch.py starts with mpiexec.

    mpiexec -n 2 python tests/distributed/worker.py SCENARIO

Scenarios: `digest` trains a small model with DDP natively (SGD momentum, then Adam) and
prints each rank's parameter digest; `kill`, `raise`, `exit` make rank 1 die, raise or
exit at step 3 of an endless training loop; `mismatched_graph` and `mismatched_model` make
rank 1 trace another step or build another model.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys

import numpy as np

import graphc
import graphc.distributed as dist
import graphc.nn as nn
import graphc.nn.functional as F
import graphc.optim as optim
from graphc.codegen.backend import native_executable
from graphc.frontend.compile import CompiledFunction
from graphc.nn.parallel import DistributedDataParallel


def model(rank: int, scenario: str) -> nn.Module:
    graphc.manual_seed(0)
    width = 17 if scenario == "mismatched_model" and rank == 1 else 16
    return nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, 4))


def compiled_step(net: nn.Module, optimizer: str, scenario: str, rank: int):
    ddp = DistributedDataParallel(net, bucket_cap_mb=0.0002)
    if optimizer == "sgd":
        opt = optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    else:
        opt = optim.Adam(net.parameters(), lr=0.01)

    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(ddp(x), y)
        if scenario == "mismatched_graph" and rank == 1:
            loss = loss * 2  # a rank-dependent branch: another graph
        loss.backward()
        opt.step()
        return loss

    return CompiledFunction(step, backend=native_executable)


def main(scenario: str) -> None:
    dist.init_process_group()
    rank = dist.get_rank()
    rng = np.random.default_rng(rank)
    data = [
        (graphc.from_numpy(rng.standard_normal((4, 8)).astype(np.float32)),
         graphc.from_numpy(rng.integers(0, 4, 4)))
        for _ in range(4)
    ]  # fmt: skip
    if scenario == "digest":
        for optimizer in ("sgd", "adam"):
            net = model(rank, scenario)
            step = compiled_step(net, optimizer, scenario, rank)
            for i in range(6):
                step(*data[i % 4])
            h = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in net.parameters()))
            print(f"rank {rank} {optimizer} digest {h.hexdigest()[:16]}", flush=True)
        return
    net = model(rank, scenario)
    step = compiled_step(net, "sgd", scenario, rank)
    for i in range(10**6):
        if i == 3 and rank == 1:
            if scenario == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if scenario == "raise":
                raise RuntimeError("injected failure at step 3")
            if scenario == "exit":
                sys.exit(3)
        step(*data[i % 4]).item()


if __name__ == "__main__":
    main(sys.argv[1])
