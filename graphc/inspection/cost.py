"""FLOPs and bytes: per node, per kernel, and in total, with arithmetic intensity.

- A node's FLOPs come from its op's `flops` rule (graphc/ops); views and fills do no work.
- A node's bytes are what it would move run on its own: its distinct inputs plus its result.
- A kernel's bytes are what it moves after fusion: each stored value it reads (once; through
  a broadcast only the base's bytes, through a slice only the view's) plus the values it
  stores. The gap between the two totals is the traffic fusion saved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graphc.inspection.common import count, table
from graphc.ir import Graph
from graphc.passes.cost import kernel_bytes, node_bytes, node_flops
from graphc.passes.schedule import Kernel, stored_values
from graphc.printer import value_names


def intensity(flops: int, nbytes: int) -> float | None:
    return flops / nbytes if nbytes else None


@dataclass
class CostReport:
    graph: Graph

    def __post_init__(self) -> None:
        g = self.graph
        self.names = value_names(g)
        self.nodes = {n: (node_flops(n), node_bytes(n)) for n in g.nodes if not n.is_input}
        schedule = g.meta.get("schedule")
        self.kernels: list[tuple[Kernel, int, int, int]] = []  # kernel, flops, read, written
        if schedule is not None:
            stored = set(stored_values(g, schedule))
            for k in schedule.kernels:
                flops = sum(self.nodes[n][0] for n in k.nodes)
                self.kernels.append((k, flops, *kernel_bytes(k, stored)))

    @property
    def total_flops(self) -> int:
        return sum(f for f, _ in self.nodes.values())

    @property
    def node_bytes(self) -> int:
        return sum(b for _, b in self.nodes.values())

    @property
    def kernel_bytes(self) -> int | None:
        return sum(r + w for _, _, r, w in self.kernels) if self.kernels else None

    def kernel_flops(self) -> dict[str, int]:
        return {k.name: f for k, f, _, _ in self.kernels}

    def text(self) -> str:
        names = self.names
        lines = []
        if self.kernels:
            lines.append("kernels (bytes: stored values read once + values stored):")
            rows = [["kernel", "kind", "flops", "bytes read", "bytes written", "flop/byte"]]
            for k, f, r, w in self.kernels:
                rows.append([k.name, k.kind, count(f), count(r), count(w), _ratio(f, r + w)])
            lines += ["  " + s for s in table(rows, right={2, 3, 4, 5})]
        lines.append("nodes (bytes: distinct inputs + result, as if run alone):")
        kernel_of = self.graph.meta["schedule"].kernel_of() if self.kernels else {}
        rows = [["value", "op", "type", "flops", "bytes", "flop/byte", "kernel"]]
        for n, (f, b) in self.nodes.items():
            k = kernel_of.get(n)
            rows.append(
                [names[n], n.op, str(n.type), count(f), count(b), _ratio(f, b), k.name if k else ""]
            )
        lines += ["  " + s for s in table(rows, right={3, 4, 5})]
        total = (
            f"total: {count(self.total_flops)} flops; {count(self.node_bytes)} bytes node by node"
        )
        if self.kernel_bytes is not None:
            total += (
                f", {count(self.kernel_bytes)} bytes after fusion "
                f"({_ratio(self.total_flops, self.kernel_bytes)} flop/byte)"
            )
        lines.append(total)
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        names = self.names
        return {
            "total_flops": self.total_flops,
            "node_bytes": self.node_bytes,
            "kernel_bytes": self.kernel_bytes,
            "kernels": [
                {
                    "name": k.name,
                    "flops": f,
                    "bytes_read": r,
                    "bytes_written": w,
                    "intensity": intensity(f, r + w),
                }
                for k, f, r, w in self.kernels
            ],
            "nodes": [
                {
                    "value": names[n],
                    "op": n.op,
                    "flops": f,
                    "bytes": b,
                    "intensity": intensity(f, b),
                }
                for n, (f, b) in self.nodes.items()
            ],
        }


def _ratio(flops: int, nbytes: int) -> str:
    x = intensity(flops, nbytes)
    return "-" if x is None else f"{x:.2f}"
