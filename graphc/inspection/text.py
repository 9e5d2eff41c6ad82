"""Text IR with the compiler's decisions on every node: which kernel computes it and where
its value lives, next to its type, attributes and the user's file:line.

    %3: f32[2,3] = relu(%2)  # k0_matmul, arena[0:24]; model.py:7 in forward

The same text is printed by `graphc inspect --after STAGE` and by GRAPHC_DEBUG=2.
"""

from __future__ import annotations

from collections.abc import Callable

from graphc.ir import Graph, Node
from graphc.passes.schedule import INLINE_OPS, VIEW_OPS
from graphc.printer import format_graph, value_names


def annotator(graph: Graph) -> Callable[[Node], str] | None:
    """node -> "kernel, buffer" for graphs that carry a schedule and/or a memory plan."""
    schedule = graph.meta.get("schedule")
    plan = graph.meta.get("memory")
    if schedule is None and plan is None:
        return None
    names = value_names(graph)
    kernels_of, stored_by = kernel_membership(graph)

    def annotate(node: Node) -> str:
        parts = []
        ks = kernels_of.get(node, [])
        if node in stored_by:
            parts.append(stored_by[node])
        elif node.op in VIEW_OPS or node.op in INLINE_OPS:
            # read in place (index arithmetic, a constant) by each loop kernel that uses it
            if ks:
                parts.append("inlined in " + " ".join(ks))
        elif ks:
            parts.append(ks[0])
        b = plan.buffers.get(node) if plan is not None else None
        if b is not None:
            parts.append(buffer_text(b, names))
        return ", ".join(parts)

    return annotate


def kernel_membership(graph: Graph) -> tuple[dict[Node, list[str]], dict[Node, str]]:
    """(node -> every kernel it is a member of, node -> the kernel that stores it)."""
    schedule = graph.meta.get("schedule")
    kernels_of: dict[Node, list[str]] = {}
    stored_by: dict[Node, str] = {}
    for k in schedule.kernels if schedule is not None else ():
        for n in k.nodes:
            kernels_of.setdefault(n, []).append(k.name)
        stored_by.update({o: k.name for o in k.outputs})
    return kernels_of, stored_by


def buffer_text(b, names: dict[Node, str]) -> str:
    """Where a value's bytes are: arena[0:24], in place over %w, alias of %3, caller memory."""
    if b.kind == "arena":
        return f"arena[{b.offset}:{b.offset + b.nbytes}]"
    if b.kind == "inplace":
        return f"in place over {names.get(b.base, b.base.op)}"
    if b.kind == "alias":
        return f"alias of {names.get(b.base, b.base.op)}"
    return "caller memory"


def graph_text(graph: Graph, locations: bool = True) -> str:
    return format_graph(graph, locations=locations, annotate=annotator(graph))


def stages_text(snapshots: dict[str, Graph], stages: list[str], title: str = "") -> str:
    """Each stage's graph under a header, in pipeline order."""
    chunks = []
    for stage in stages:
        header = (
            f"# ---- {title}: IR after {stage} ----" if title else f"# ---- IR after {stage} ----"
        )
        chunks.append(header + "\n" + graph_text(snapshots[stage]))
    return "\n".join(chunks)
