"""The fusion and memory reports: the schedule and the memory plan of a compiled step, laid
out for people (text) and programs (JSON, see docs/ir.schema.json)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graphc.inspection.common import InspectError, count, table
from graphc.inspection.text import buffer_text
from graphc.ir import Graph, Node
from graphc.passes.memory import ALIGN, Buffer
from graphc.passes.schedule import INLINE_OPS, VIEW_OPS
from graphc.printer import value_names


def decision_taken(text: str) -> bool:
    """The fuser words rejected merges "not fused ..."; everything else was done."""
    return not text.startswith("not ")


def _require(graph: Graph, key: str, what: str) -> None:
    if key not in graph.meta:
        raise InspectError(f"this graph has no {what}: inspect the graph after the last pass")


# ---- fusion ---------------------------------------------------------------------------------


@dataclass
class FusionReport:
    graph: Graph

    def __post_init__(self) -> None:
        _require(self.graph, "schedule", "schedule (fusion runs in the 'fuse' pass)")

    def text(self) -> str:
        g = self.graph
        schedule = g.meta["schedule"]
        names = value_names(g)
        ops = [n for n in g.nodes if not n.is_input and n.op not in VIEW_OPS + INLINE_OPS]
        taken = sum(decision_taken(d) for d in schedule.decisions)
        lines = [
            f"fusion: {len(schedule.kernels)} kernels compute {len(ops)} operations "
            f"({taken} merges taken, {len(schedule.decisions) - taken} rejected)"
        ]
        for k in schedule.kernels:
            lines.append(f"{k.name}  [{k.kind}]  {k.reason}")
            members = [n for n in k.nodes if n.op not in INLINE_OPS]
            lines.append("    computes " + ", ".join(f"{names[n]} {n.op}" for n in members))
            lines.append("    stores   " + ", ".join(names[n] for n in k.outputs))
            reads = k.reads()
            if reads:
                lines.append("    reads    " + ", ".join(names[n] for n in reads))
            tiles = g.meta.get("tiles")
            plan = tiles.kernels.get(k.name) if tiles is not None else None
            if plan is not None:
                lines.append(f"    tiles    {plan.text}")
                lines.append(f"             chosen: {plan.reason}")
            threads = g.meta.get("parallel")
            if threads is not None:
                how = "parallel" if k.name in threads.parallel else "serial"
                lines.append(f"    threads  {how}: {threads.reasons[k.name]}")
        lines.append("decisions (in the order the fuser made them):")
        for d in schedule.decisions:
            lines.append(f"  {'taken   ' if decision_taken(d) else 'rejected'}  {d}")
        if not schedule.decisions:
            lines.append("  (none: no two operations could share a kernel)")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        from graphc.inspection.jsonio import schedule_json

        return schedule_json(self.graph)


# ---- memory ---------------------------------------------------------------------------------


def _rounded(b: Buffer) -> int:
    return (b.nbytes + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class MemoryReport:
    graph: Graph

    def __post_init__(self) -> None:
        _require(self.graph, "memory", "memory plan (it is made by the 'plan_memory' pass)")
        self.plan = self.graph.meta["memory"]
        self.names = value_names(self.graph)

    @property
    def peak_live_bytes(self) -> int:
        """The most arena bytes live at once: what a perfect packing would need."""
        arena = [b for b in self.plan.buffers.values() if b.kind == "arena"]
        if not arena:
            return 0
        last = max(b.live[1] for b in arena)
        return max(
            sum(_rounded(b) for b in arena if b.live[0] <= k <= b.live[1]) for k in range(last + 1)
        )

    def reuses(self, node: Node) -> list[Node]:
        """Values whose arena bytes this one takes over (they were dead when it was born)."""
        b = self.plan.buffers[node]
        if b.kind != "arena":
            return []
        lo, hi = b.offset, b.offset + _rounded(b)
        out = []
        for n, other in self.plan.buffers.items():
            if other.kind != "arena" or other is b or other.live[1] >= b.live[0]:
                continue
            if other.offset < hi and lo < other.offset + _rounded(other):
                out.append(n)
        return out

    def input_bytes(self) -> dict[str, int]:
        """Bytes of the step's inputs by kind (param, state, input, scalar, ...)."""
        out: dict[str, int] = {}
        for n in self.graph.inputs:
            out[n.attrs["kind"]] = out.get(n.attrs["kind"], 0) + n.type.nbytes
        return out

    def text(self) -> str:
        plan, names = self.plan, self.names
        share = (
            f" ({100 * plan.arena_bytes / plan.unplanned_bytes:.0f}%)"
            if plan.unplanned_bytes
            else ""
        )
        kinds = ", ".join(f"{k} {count(v)}" for k, v in self.input_bytes().items())
        lines = [
            f"memory: arena {count(plan.arena_bytes)} bytes{share}; one buffer per value would "
            f"take {count(plan.unplanned_bytes)} bytes; peak live {count(self.peak_live_bytes)} "
            "bytes",
            f"inputs stay in the caller's memory: {kinds} bytes",
        ]
        rows = [["value", "type", "bytes", "where", "live", "reuses"]]
        for n, b in self.plan.buffers.items():
            if b.kind == "input":
                continue
            live = f"k{b.live[0]}..k{b.live[1]}" if b.kind != "alias" else "-"
            reused = ", ".join(names[r] for r in self.reuses(n))
            rows.append(
                [names[n], str(n.type), count(b.nbytes), buffer_text(b, names), live, reused]
            )
        lines += table(rows, right={2})
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        from graphc.inspection.jsonio import buffer_json, type_json

        names = self.names
        buffers = []
        for n, b in self.plan.buffers.items():
            entry = {"value": names[n], "type": type_json(n.type), **buffer_json(b, names)}
            entry["reuses"] = [names[r] for r in self.reuses(n)]
            buffers.append(entry)
        return {
            "arena_bytes": self.plan.arena_bytes,
            "unplanned_bytes": self.plan.unplanned_bytes,
            "peak_live_bytes": self.peak_live_bytes,
            "input_bytes": self.input_bytes(),
            "buffers": buffers,
        }


def memory_report(graph: Graph) -> MemoryReport:
    return MemoryReport(graph)
