"""The compiler pipeline: pure Graph -> Graph passes, in order, each verified after it runs.

traced graph
  -> autodiff        derive_backward: grad placeholders become backward subgraphs
  -> canonicalize    local identities (stop_gradient, reshape chains, x*1, ...)
  -> fold_constants  compile-time evaluation of constant subgraphs
  -> cse             one node per distinct computation
  -> dce             nothing that no output needs
  -> schedule_collectives  all-reduces started early, waited for late (overlap)
  -> plan_scans      each loop's step graph through this pipeline of its own
  -> fuse            nodes grouped into kernels, every merge taken or rejected with its reason
  -> plan_memory     one arena, buffers reused by liveness, state updated in place
  -> plan_tiles      each convolution's and matmul's register tile, from cost models
  -> plan_parallel   which kernels run across the worker threads, with the estimate behind it
  -> share_kernels   kernels that compile to the same code share it (ResNet blocks, MLP layers)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from graphc.ir import Graph
from graphc.passes.autodiff import derive_backward
from graphc.passes.canonicalize import canonicalize
from graphc.passes.collectives import schedule_collectives
from graphc.passes.cse import eliminate_common_subexpressions
from graphc.passes.dce import eliminate_dead_code
from graphc.passes.fold import fold_constants
from graphc.passes.fuse import fuse
from graphc.passes.memory import plan_memory
from graphc.passes.parallel import plan_parallel
from graphc.passes.scan import plan_scans
from graphc.passes.share import share_kernels
from graphc.passes.tiles import plan_tiles
from graphc.verify import verify

Pass = Callable[[Graph], Graph]

PIPELINE: list[tuple[str, Pass]] = [
    ("autodiff", derive_backward),
    ("canonicalize", canonicalize),
    ("fold_constants", fold_constants),
    ("cse", eliminate_common_subexpressions),
    ("dce", eliminate_dead_code),
    ("schedule_collectives", schedule_collectives),
    ("plan_scans", plan_scans),
    ("fuse", fuse),
    ("plan_memory", plan_memory),
    ("plan_tiles", plan_tiles),
    ("plan_parallel", plan_parallel),
    ("share_kernels", share_kernels),
]

STAGES = ["traced"] + [name for name, _ in PIPELINE]


@dataclass
class PipelineResult:
    graph: Graph
    snapshots: dict[str, Graph] = field(default_factory=dict)  # stage name -> graph after it
    seconds: dict[str, float] = field(default_factory=dict)


def run_pipeline(
    graph: Graph,
    pipeline: list[tuple[str, Pass]] | None = None,
    keep_snapshots: bool = True,
    on_pass: Callable[[str], None] | None = None,
) -> PipelineResult:
    """Runs every pass in order, verifying after each; records each stage's graph and time.
    `on_pass(name)` is told of each pass as it starts."""
    result = PipelineResult(graph)
    if keep_snapshots:
        result.snapshots["traced"] = graph
    for name, fn in pipeline or PIPELINE:
        if on_pass is not None:
            on_pass(name)
        t0 = time.perf_counter()
        graph = verify(fn(graph), after=name)
        result.seconds[name] = time.perf_counter() - t0
        if keep_snapshots:
            result.snapshots[name] = graph
    result.graph = graph
    return result


__all__ = [
    "PIPELINE",
    "STAGES",
    "run_pipeline",
    "derive_backward",
    "canonicalize",
    "fold_constants",
    "eliminate_common_subexpressions",
    "eliminate_dead_code",
]
