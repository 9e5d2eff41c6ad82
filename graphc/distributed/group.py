"""The default process group: who this process is in the job, and how the job fails.

`init_process_group()` reads the rank and world size from the MPI launch (`mpiexec -n N`)
and works as a single process too: without mpiexec it is a group of one, with or without
mpi4py installed. A failing rank must not leave the others waiting forever in a collective,
so while a group of more than one process exists:
- an exception nobody handles ends the whole job through MPI_Abort, after its traceback;
- a rank killed outright is the launcher's to handle: hydra stops the others at once;
- a rank that exits (sys.exit, or the end of its script) waits at most the collective
  timeout ($GRAPHC_DIST_TIMEOUT, default 300 s) for the others to reach their end too, and
  otherwise aborts the job: they would wait forever for its share of a collective.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
import traceback
from dataclasses import dataclass

from graphc.distributed.comm import Communicator, DistributedError

# The world size as launchers announce it: MPICH's hydra (and PMI-1/2 launchers), Open MPI.
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")


@dataclass
class ProcessGroup:
    rank: int
    size: int
    backend: str  # "mpi" or "local" (one process, no MPI)
    comm: Communicator
    exit_comm: object = None  # its own communicator: never matched against a pending collective


_GROUP: ProcessGroup | None = None
_previous_excepthook = None


def is_available() -> bool:
    """Whether MPI is installed (pip install 'graphc[distributed]')."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def mpiexec_path() -> str | None:
    """The launcher to use: the mpich wheel's hydra `mpiexec` next to this Python, else one
    on PATH (which may belong to another MPI than the one mpi4py loads)."""
    import shutil

    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else shutil.which("mpiexec")


def launched_size() -> int:
    """The world size a launcher announced in the environment (1 if none did)."""
    for var in _SIZE_VARS:
        value = os.environ.get(var)
        if value and value.isdigit():
            return int(value)
    return 1


def init_process_group(backend: str | None = None) -> None:
    """Joins the job's default process group (as torch.distributed.init_process_group).

    backend: "mpi" (needs mpi4py), "local" (one process, no MPI), or None: MPI when it is
    installed, else local when this process was not launched as one of several.
    """
    global _GROUP
    if _GROUP is not None:
        raise DistributedError("trying to initialize the default process group twice")
    if backend is None:
        backend = "mpi" if is_available() else "local"
    if backend == "local":
        if launched_size() > 1:
            raise DistributedError(
                f"this process was launched as one of {launched_size()}, but mpi4py is not "
                "installed: pip install 'graphc[distributed]'"
            )
        comm = Communicator(None)
    elif backend == "mpi":
        if not is_available():
            raise DistributedError(
                "the mpi backend needs mpi4py: pip install 'graphc[distributed]'"
            )
        from mpi4py import MPI

        world = MPI.COMM_WORLD
        comm = Communicator(world.Dup())
        # An MPI error on graphc's communicator ends the job with MPI's own message rather
        # than returning a code that native code has no way to raise.
        comm.mpi.Set_errhandler(MPI.ERRORS_ARE_FATAL)
    else:
        raise DistributedError(f"unknown backend {backend!r}: use 'mpi' or 'local'")
    _GROUP = ProcessGroup(comm.rank, comm.size, backend, comm)
    if comm.size > 1:
        _install_excepthook()
        _GROUP.exit_comm = comm.mpi.Dup()
        atexit.register(_exit_together)


def destroy_process_group() -> None:
    global _GROUP
    if _GROUP is None:
        return
    _restore_excepthook()
    atexit.unregister(_exit_together)
    if _GROUP.exit_comm is not None:
        _GROUP.exit_comm.Free()
    _GROUP.comm.close()
    _GROUP = None


def is_initialized() -> bool:
    return _GROUP is not None


def default_group() -> ProcessGroup:
    if _GROUP is None:
        raise DistributedError(
            "Default process group has not been initialized, please make sure to call "
            "graphc.distributed.init_process_group()"
        )
    return _GROUP


def get_rank() -> int:
    return default_group().rank


def get_world_size() -> int:
    return default_group().size


def barrier() -> None:
    g = default_group()
    if g.comm.mpi is not None:
        g.comm.mpi.Barrier()


# ---- failure: one rank's error ends the job -----------------------------------------------


ABORT_GRACE_SECONDS = 0.5


def abort(message: str, code: int = 1) -> None:
    """Prints `message` for this rank and ends every rank of the job now."""
    rank = _GROUP.rank if _GROUP is not None else 0
    print(f"graphc.distributed: rank {rank}: {message}", file=sys.stderr, flush=True)
    print(
        f"graphc.distributed: rank {rank}: aborting all ranks (MPI_Abort, exit code {code})",
        file=sys.stderr,
        flush=True,
    )
    if _GROUP is not None and _GROUP.backend == "mpi":
        from mpi4py import MPI

        # MPI_Abort tears the job down at once, and mpiexec may stop forwarding output
        # before this rank's (or another failing rank's) message has crossed its pipe: seen
        # as an empty log on a loaded machine. A moment's grace keeps the message.
        time.sleep(ABORT_GRACE_SECONDS)
        MPI.COMM_WORLD.Abort(code)
    os._exit(code)


def _install_excepthook() -> None:
    global _previous_excepthook
    if _previous_excepthook is not None:
        return
    _previous_excepthook = sys.excepthook

    def hook(exc_type, exc, tb) -> None:
        # Print the traceback first: it is the message that matters to the user.
        try:
            traceback.print_exception(exc_type, exc, tb, file=sys.stderr)
        finally:
            abort(f"unhandled {exc_type.__name__}: {exc}")

    sys.excepthook = hook


def _restore_excepthook() -> None:
    global _previous_excepthook
    if _previous_excepthook is not None:
        sys.excepthook = _previous_excepthook
        _previous_excepthook = None


def _exit_together() -> None:
    """At interpreter exit: every rank must get here, or the job is stuck; abort if not."""
    g = _GROUP
    if g is None or g.exit_comm is None:
        return
    request = g.exit_comm.Ibarrier()
    deadline = time.monotonic() + g.comm.timeout
    while not request.Test():
        if time.monotonic() > deadline:
            abort(
                f"this rank is exiting, but the others did not finish within "
                f"{g.comm.timeout:g} s; they would wait for it forever (did the ranks run "
                "different numbers of steps?). Set GRAPHC_DIST_TIMEOUT to wait longer"
            )
        time.sleep(0.001)
