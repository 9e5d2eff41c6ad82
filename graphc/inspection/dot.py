"""The IR as Graphviz DOT (`dot -Tsvg`): one box per node, edges for data flow, and each
kernel of the schedule as a cluster labelled with the rule that formed it.

Views and fills that several loop kernels read in place belong to none of them, so they stay
outside the clusters (a DOT node sits in at most one cluster).
"""

from __future__ import annotations

from graphc.ir import Graph, Node
from graphc.passes.schedule import INLINE_OPS, VIEW_OPS
from graphc.printer import value_names

INPUT_COLOURS = {"param": "#dbe9f6", "state": "#e8e0f4", "scalar": "#f4efe0", "grad": "#f6dcdc"}


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def graph_dot(graph: Graph, stage: str) -> str:
    names = value_names(graph)
    ids = {n: f"n{i}" for i, n in enumerate(graph.nodes)}
    lines = [
        f"digraph {quote(f'{graph.name} after {stage}')} {{",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fillcolor=white, fontname="monospace", '
        "fontsize=10];",
        '  edge [color="#555555"];',
    ]

    def node_line(n: Node, indent: str) -> str:
        if n.is_input:
            kind = n.attrs["kind"]
            label = f"{names[n]}\n{n.type} {kind}"
            colour = INPUT_COLOURS.get(kind, "#eeeeee")
            style = f"shape=ellipse, fillcolor={quote(colour)}"
            return f"{indent}{ids[n]} [label={quote(label)}, {style}];"
        label = f"{names[n]} = {n.op}\n{n.type}"
        if n.loc is not None:
            label += f"\n{n.loc}"
        extra = ", style=dashed" if n.op in VIEW_OPS or n.op in INLINE_OPS else ""
        return f"{indent}{ids[n]} [label={quote(label)}{extra}];"

    clustered: set[Node] = set()
    schedule = graph.meta.get("schedule")
    if schedule is not None:
        owners: dict[Node, int] = {}
        for k in schedule.kernels:
            for n in k.nodes:
                owners[n] = owners.get(n, 0) + 1
        for i, k in enumerate(schedule.kernels):
            members = [n for n in k.nodes if owners[n] == 1]
            lines.append(f"  subgraph cluster_{i} {{")
            lines.append(f"    label={quote(f'{k.name}: {k.reason}')};")
            lines.append('    style="rounded"; color="#3b6ea5"; fontname="monospace"; fontsize=10;')
            for n in members:
                lines.append(node_line(n, "    "))
                clustered.add(n)
            lines.append("  }")
    for n in graph.nodes:
        if n not in clustered:
            lines.append(node_line(n, "  "))
    for n in graph.nodes:
        for src in dict.fromkeys(n.inputs):
            lines.append(f"  {ids[src]} -> {ids[n]};")
    for i, (name, o) in enumerate(zip(graph.output_names, graph.outputs, strict=True)):
        out_id = f"out{i}"
        lines.append(f"  {out_id} [label={quote(name)}, shape=plaintext, style=solid];")
        lines.append(f"  {ids[o]} -> {out_id} [style=dotted];")
    lines.append("}")
    return "\n".join(lines)
