"""graphc.distributed: data-parallel training on MPI (torch.distributed's API, MPI backend).

    mpiexec -n 2 python train.py          # pip install 'graphc[distributed]'

    import graphc.distributed as dist
    dist.init_process_group()             # rank and world size from the MPI launch
    model = graphc.nn.parallel.DistributedDataParallel(net)

Collectives on tensors (`all_reduce`, `broadcast`) work eagerly and inside compiled
functions, where they are ops of the graph (graphc/ops/distributed.py). See group.py for how
the job starts and fails, comm.py for the communicator compiled code reaches MPI through.
"""

from __future__ import annotations

from graphc.distributed.collectives import ReduceOp, all_reduce, broadcast, comm_tensor
from graphc.distributed.comm import DistributedError
from graphc.distributed.group import (
    abort,
    barrier,
    default_group,
    destroy_process_group,
    get_rank,
    get_world_size,
    init_process_group,
    is_available,
    is_initialized,
    launched_size,
    mpiexec_path,
)

__all__ = [
    "DistributedError",
    "ReduceOp",
    "abort",
    "all_reduce",
    "barrier",
    "broadcast",
    "comm_tensor",
    "default_group",
    "destroy_process_group",
    "get_rank",
    "get_world_size",
    "init_process_group",
    "is_available",
    "is_initialized",
    "launched_size",
    "mpiexec_path",
]
