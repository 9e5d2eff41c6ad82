"""`graphc train` under `mpiexec -n N`: what changes when the job is one of several ranks.

The training loop (graphc/training/loop.py) asks a `TrainGroup` at a few points; for a single
process every answer is what the loop did before. With N ranks:
- the global batch stays what the user asked: each rank takes --batch-size / N images per
  step (an error if N does not divide it), its share of every epoch from a
  DistributedSampler (padded so that all ranks take the same number of steps), and the
  model is wrapped in DistributedDataParallel;
- every step also all-reduces the loss (so every rank logs, checks for divergence and
  checkpoints the same global mean) and a "stop" flag: Ctrl-C or SIGTERM on any rank stops
  every rank after the same step (AgreedInterrupt), never one rank alone;
- evaluation shards the test set without padding and sums the results over the ranks;
- only rank 0 prints and writes checkpoints, logs and plots; every rank resumes from them;
- compiled code gets cores / (ranks on this machine) threads per rank unless told otherwise;
- an error on any rank ends the whole job (`ending_the_job_on_error`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from graphc import dispatch
from graphc.distributed import collectives, group
from graphc.errors import GraphcError
from graphc.tensor import Tensor

if TYPE_CHECKING:
    from graphc.nn import Module


class AgreedInterrupt:
    """The loop's view of a stop signal: it counts once every rank knows of it (the max of
    the ranks' signal numbers travels with each step's loss), so all stop after one step."""

    def __init__(self, local) -> None:
        self.local = local  # the rank's own Interrupt (its signal handler sets .signum)
        self.signum: int | None = None

    def flag(self) -> float:
        return float(self.local.signum or 0)

    def agree(self, signum: float) -> None:
        if signum > 0 and self.signum is None:
            self.signum = int(signum)


class _AgreedStep:
    """Calls the compiled step and applies the ranks' agreed stop flag; returns the loss."""

    def __init__(self, compiled, owner: TrainGroup) -> None:
        self.compiled = compiled
        self.owner = owner

    @property
    def cache(self):  # the loop counts compiled shapes through it
        return self.compiled.cache

    def __call__(self, inputs, labels):
        loss, stop = self.compiled(inputs, labels)
        if self.owner.interrupt is not None:
            self.owner.interrupt.agree(stop.item())
        return loss


class _Shard:
    """Every size-th index from rank: a test-set shard without padding (exact sums)."""

    def __init__(self, n: int, rank: int, size: int) -> None:
        self.indices = list(range(rank, n, size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class TrainGroup:
    def __init__(self) -> None:
        if group.launched_size() > 1 and not group.is_initialized():
            group.init_process_group()
        g = group._GROUP
        self.rank = g.rank if g is not None else 0
        self.size = g.size if g is not None else 1
        self.interrupt: AgreedInterrupt | None = None
        # ranks sharing this machine's cores (a collective call: every rank makes it here)
        self.local_ranks = self._ranks_on_this_machine() if self.active else 1
        if self.active and "GRAPHC_NUM_THREADS" not in os.environ:
            import graphc

            graphc.set_num_threads(max(1, _usable_cores() // self.local_ranks))

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self, global_batch: int) -> str:
        return (
            f"  data-parallel: {self.size} ranks (MPI), global batch {global_batch} = per rank "
            f"{self.local_batch(global_batch)}; rank 0 reports and writes the checkpoint"
        )

    # ---- data ------------------------------------------------------------------------------

    def local_batch(self, global_batch: int) -> int:
        if global_batch % self.size:
            from graphc.training.config import TrainError

            lo, hi = global_batch - global_batch % self.size, global_batch
            hi += self.size - global_batch % self.size
            raise TrainError(
                f"--batch-size {global_batch} does not divide among {self.size} ranks; each "
                f"rank takes an equal share of the global batch: use a multiple of "
                f"{self.size} (e.g. {lo or self.size} or {hi})"
            )
        return global_batch // self.size

    def train_sampling(self, dataset, seed: int) -> dict:
        """DataLoader options for the training set: this rank's shuffled share."""
        if not self.active:
            return {"shuffle": True}
        from graphc.data import DistributedSampler

        sampler = DistributedSampler(dataset, self.size, self.rank, shuffle=True, seed=seed)
        return {"sampler": sampler}

    def test_sampling(self, dataset) -> dict:
        return {"sampler": _Shard(len(dataset), self.rank, self.size)} if self.active else {}

    def set_epoch(self, loader, epoch: int) -> None:
        set_epoch = getattr(loader.sampler, "set_epoch", None)
        if self.active and set_epoch is not None:
            set_epoch(epoch)

    def sum(self, *values: float) -> tuple[float, ...]:
        """Each value summed over the ranks (float64)."""
        if not self.active:
            return values
        from mpi4py import MPI

        buf = np.array(values, np.float64)
        group.default_group().comm.mpi.Allreduce(MPI.IN_PLACE, buf)
        return tuple(float(v) for v in buf)

    # ---- the step ----------------------------------------------------------------------------

    def wrap_model(self, net: Module) -> Module:
        if not self.active:
            return net
        from graphc.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(net)

    def compile_step(self, step: Callable, compile: Callable) -> Callable:
        """compile(step), or for several ranks a step that also agrees on loss and stop."""
        if not self.active:
            return compile(step)
        size = self.size

        def step_on_every_rank(inputs, labels):
            loss = step(inputs, labels)
            (flag,) = dispatch.current().runtime_scalars(
                lambda: [self.interrupt.flag() if self.interrupt else 0.0], ["stop_signal"]
            )
            if not isinstance(flag, Tensor):  # eager: a host float
                flag = Tensor._wrap(np.array(flag, np.float32))
            with dispatch.no_grad():
                (mean,) = collectives.start_coalesced([loss.detach()]).wait(1.0 / size)
                (stop,) = collectives.start_coalesced([flag], op="max").wait()
            return mean, stop

        return _AgreedStep(compile(step_on_every_rank), self)

    def agreed(self, interrupt: Any) -> Any:
        """The interrupt the loop should read (its `signum` changes only at agreed steps)."""
        if not self.active:
            return interrupt
        self.interrupt = AgreedInterrupt(interrupt)
        return self.interrupt

    def _ranks_on_this_machine(self) -> int:
        from mpi4py import MPI

        local = group.default_group().comm.mpi.Split_type(MPI.COMM_TYPE_SHARED)
        try:
            return local.Get_size()
        finally:
            local.Free()


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@contextlib.contextmanager
def ending_the_job_on_error(command: str) -> Iterator[None]:
    """When this process is one rank of several, an error here ends every rank (they would
    otherwise wait for it in their next collective); alone, errors pass through as usual."""
    if group.launched_size() <= 1:
        yield
        return
    try:
        yield
    except SystemExit as e:
        if e.code not in (0, None):
            group.abort(f"{command} exited with status {e.code}", 1)
        raise
    except (GraphcError, OSError) as e:
        group.abort(f"{command}: error: {e}", 1)
    except KeyboardInterrupt:
        group.abort(f"{command}: aborted", 130)
    except BaseException:
        traceback.print_exc(file=sys.stderr)
        group.abort(f"{command}: unexpected error (traceback above)", 1)
