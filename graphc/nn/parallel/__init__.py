"""graphc.nn.parallel: DistributedDataParallel (data-parallel training over MPI)."""

from graphc.nn.parallel.distributed import DistributedDataParallel

__all__ = ["DistributedDataParallel"]
