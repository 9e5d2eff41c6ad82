"""The schedule: which nodes become which kernel, and why — data that prints.

A `Kernel` is a group of nodes lowered to one loop nest: a convolution or matmul with its
bias/ReLU epilogue, a pooling op, or a "loop" kernel that evaluates a DAG of elementwise ops
(and at most one reduction at its root) in a single pass over memory. Views (reshape,
broadcast_to, transpose, slice) and fills (`full`) are not kernels: a loop kernel reads
through them as index arithmetic, and reshape of a stored value is an alias of its buffer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from graphc.ir import Graph, Node
from graphc.printer import value_names

VIEW_OPS = ("reshape", "broadcast_to", "transpose", "slice")
INLINE_OPS = ("full",)  # becomes a constant inside whichever loop reads it


@dataclass(frozen=True, eq=False)
class Kernel:
    name: str
    kind: str  # conv2d, matmul, loop, max_pool2d, ... (what codegen emits)
    root: Node  # the node the kernel is built around
    nodes: tuple[Node, ...]  # every member, in graph order
    outputs: tuple[Node, ...]  # members whose values are stored for later use
    reason: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def reads(self) -> list[Node]:
        """Values from outside the kernel that it reads (in first-use order); constants the
        emitted code knows (params["constants"], e.g. a ReLU mask's zeros) are not read."""
        members = set(self.nodes) | set(self.params.get("constants", ()))
        out: list[Node] = []
        for n in self.nodes:
            for i in n.inputs:
                if i not in members and i not in out:
                    out.append(i)
        return out


@dataclass(frozen=True)
class Schedule:
    kernels: tuple[Kernel, ...]
    decisions: tuple[str, ...]  # every fusion considered: taken or rejected, with the reason

    def kernel_of(self) -> dict[Node, Kernel]:
        return {n: k for k in self.kernels for n in k.nodes}

    def summary(self, graph: Graph | None = None) -> str:
        names = value_names(graph) if graph is not None else {}
        lines = []
        for k in self.kernels:
            members = ", ".join(names.get(n, n.op) for n in k.nodes if n.op not in INLINE_OPS)
            lines.append(f"{k.name} [{k.kind}] {members}: {k.reason}")
        return "\n".join(lines)


def stored_values(graph: Graph, schedule: Schedule) -> list[Node]:
    """Values that need a buffer: graph inputs and every kernel output."""
    out = dict.fromkeys(graph.inputs)  # (ordered, and no quadratic membership scans)
    for k in schedule.kernels:
        out.update(dict.fromkeys(k.outputs))
    return list(out)
