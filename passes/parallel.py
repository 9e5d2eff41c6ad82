"""plan_parallel: which kernels run across the worker threads, and why (meta["parallel"]).

Every kernel is written over a range of independent work units (images, channels, rows; see
codegen/), each unit writing its own outputs in a fixed order, so splitting the range across
threads changes nothing in the results. Whether to split is a question of cost: waking the
workers and waiting for them costs a few microseconds a region, so a kernel is parallel only
when its estimated serial time is well above that. The estimate is the larger of its FLOPs
at a conservative compute rate and its bytes at a conservative memory rate (one core).

Always serial, whatever their size:
  - kernels that report bad data (one_hot's class range check): the status a unit returns
    cannot come back through a worker thread;
  - collectives (all_reduce_start/wait): one MPI call per step, from the thread that owns it.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphc.ir import Graph
from graphc.passes.cost import kernel_bytes, node_flops
from graphc.passes.schedule import Kernel, Schedule, stored_values

# One core's conservative rates (measured: contractions 60-100 GFLOP/s, streaming loops
# 5-15 GB/s) and the smallest estimated time worth a parallel region (a region's wake-up,
# claim and join cost 2-10 us on this class of machine).
FLOPS_PER_US = 20_000.0
BYTES_PER_US = 4_000.0
MIN_US = 20.0

SERIAL_KINDS = {
    "one_hot": "checks class indices and reports bad data, which a worker cannot return",
    "index_select": "checks its indices and reports bad data, which a worker cannot return",
    "gather": "checks its indices and reports bad data, which a worker cannot return",
    "all_reduce_start": "a collective: one MPI call per step, from the calling thread",
    "all_reduce_wait": "a collective: one MPI call per step, from the calling thread",
    "scan": "a loop whose steps run in order; its body's kernels are planned on their own",
}


@dataclass(frozen=True)
class ParallelPlan:
    parallel: frozenset[str]  # names of the kernels that run across the threads
    reasons: dict[str, str]  # kernel name -> why parallel or serial

    def summary(self, graph: Graph | None = None) -> str:
        return "\n".join(
            f"{name}: {'parallel' if name in self.parallel else 'serial'}, {why}"
            for name, why in self.reasons.items()
        )


def plan_parallel(graph: Graph) -> Graph:
    schedule: Schedule = graph.meta["schedule"]
    stored = set(stored_values(graph, schedule))
    parallel, reasons = set(), {}
    for k in schedule.kernels:
        ok, why = _decide(k, stored)
        if ok:
            parallel.add(k.name)
        reasons[k.name] = why
    return graph.with_meta(parallel=ParallelPlan(frozenset(parallel), reasons))


def _decide(k: Kernel, stored: set) -> tuple[bool, str]:
    if k.kind in SERIAL_KINDS:
        return False, SERIAL_KINDS[k.kind]
    flops = sum(node_flops(n) for n in k.nodes)
    nbytes = sum(kernel_bytes(k, stored))
    us = max(flops / FLOPS_PER_US, nbytes / BYTES_PER_US)
    work = f"{flops / 1e6:.2f} MFLOP, {nbytes / 1e3:.0f} kB: ~{us:.0f} us on one core"
    if us < MIN_US:
        return False, f"{work}, below the {MIN_US:.0f} us worth a parallel region"
    return True, work
