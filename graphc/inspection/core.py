"""`Inspection`: everything the compiler did to one step, from Python.

    insp = train_step.inspect(inputs, labels)      # traces and compiles; does not run
    print(insp.text("fuse"))                        # the IR after a pass, annotated
    insp.json(["traced", "plan_memory"])            # the same as data (docs/ir.schema.json)
    insp.dot("plan_memory")                         # Graphviz, kernels as clusters
    insp.fusion(), insp.memory(), insp.cost()       # reports with .text() and .to_json()
    insp.llvm("k3_loop"), insp.asm("k3_loop")       # one kernel's optimised IR, assembly
    insp.profile(10), insp.check(steps=2)           # run native code: times, numerics

profile() and check() run the step on copies of its inputs: parameters and optimizer state
are left as they were. They do evaluate the step's host scalars once per run (the learning
rate; Adam's step count and the random stream advance as they would for a real step).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from graphc.inspection.common import InspectError
from graphc.ir import Graph
from graphc.passes import STAGES


class Inspection:
    def __init__(self, entry: Any, leaves: Sequence | None = None) -> None:
        """`entry`: a compiled step (CompiledFunction.trace's result); `leaves`: the call's
        flattened arguments, needed only to run it (profile, check)."""
        self.entry = entry
        self.leaves = list(leaves) if leaves is not None else None

    # ---- graphs ----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.entry.graph.name

    @property
    def stages(self) -> list[str]:
        return [s for s in STAGES if s in self.entry.pipeline.snapshots]

    def graph(self, stage: str | None = None) -> Graph:
        """The graph after `stage` (a pass name or "traced"); default: the final graph."""
        if stage is None:
            return self.entry.graph
        snaps = self.entry.pipeline.snapshots
        if stage not in snaps:
            raise InspectError(
                f"unknown pass {stage!r}; the stages are: {', '.join(self.stages)} (or all)"
            )
        return snaps[stage]

    def _stages(self, stages: str | Sequence[str] | None) -> list[str]:
        if stages is None:
            return [self.stages[-1]]
        if isinstance(stages, str):
            return self.stages if stages == "all" else [stages]
        return list(stages)

    def text(self, stages: str | Sequence[str] | None = None) -> str:
        """Annotated text IR after one stage, a list of them, or "all"."""
        from graphc.inspection.text import graph_text, stages_text

        chosen = self._stages(stages)
        for s in chosen:
            self.graph(s)  # validates the name
        if len(chosen) == 1:
            return graph_text(self.graph(chosen[0]))
        return stages_text(self.entry.pipeline.snapshots, chosen)

    def graphs_json(self, stages: str | Sequence[str] | None = None) -> list[dict[str, Any]]:
        from graphc.inspection.jsonio import graph_json

        return [graph_json(self.graph(s), s) for s in self._stages(stages)]

    def json(
        self,
        stages: str | Sequence[str] | None = None,
        target: str | None = None,
        mode: str | None = None,
        **sections: Any,
    ) -> dict[str, Any]:
        """The JSON document of docs/ir.schema.json with these stages' graphs (none if
        stages=()) and any report sections given (fusion=..., memory=..., ...)."""
        from graphc.inspection.jsonio import document

        graphs = self.graphs_json(stages)
        return document(target or self.name, mode or self.mode, graphs=graphs, **sections)

    @property
    def mode(self) -> str:
        return "train" if self.entry.graph.meta.get("updates") else "inference"

    def dot(self, stages: str | Sequence[str] | None = None) -> str:
        from graphc.inspection.dot import graph_dot

        return "\n".join(graph_dot(self.graph(s), s) for s in self._stages(stages))

    # ---- reports ---------------------------------------------------------------------------

    def fusion(self):
        from graphc.inspection.reports import FusionReport

        return FusionReport(self.entry.graph)

    def memory(self):
        from graphc.inspection.reports import MemoryReport

        return MemoryReport(self.entry.graph)

    def cost(self):
        from graphc.inspection.cost import CostReport

        return CostReport(self.entry.graph)

    @property
    def kernels(self) -> list[str]:
        from graphc.inspection.native import kernel_names

        return kernel_names(self.entry.graph)

    def llvm(self, kernel: str) -> str:
        from graphc.inspection.native import kernel_llvm

        return kernel_llvm(self.entry.graph, kernel)

    def asm(self, kernel: str) -> str:
        from graphc.inspection.native import kernel_asm

        return kernel_asm(self.entry.graph, kernel)

    # ---- running the step ------------------------------------------------------------------

    def inputs(self) -> list[np.ndarray]:
        """One call's input arrays in graph input order (the caller's own arrays: copy before
        writing)."""
        from graphc.frontend.bindings import evaluate_host

        if self.leaves is None:
            raise InspectError(
                "this Inspection has no call arguments; build it with compiled.inspect(*args)"
            )
        host = evaluate_host(self.entry.host_groups)
        return [s.read(self.leaves, host) for s in self.entry.sources]

    def profile(self, steps: int = 10):
        from graphc.inspection.native import profile

        return profile(self.entry.graph, self.inputs(), steps, self.cost().kernel_flops())

    def check(
        self, steps: int = 2, rtol: float = 1e-3, atol: float = 1e-4, fault: str | None = None
    ):
        from graphc.inspection.check import run_check

        return run_check(self.entry.graph, self.inputs, steps, rtol, atol, fault)
