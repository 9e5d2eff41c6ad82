"""Deterministic text for graphs: the same graph always prints the same way.

    %3: f32[64,6,28,28] = conv2d(%x, %conv1.weight)  # model.py:20 in forward

Attributes equal to the op's default are left out; values are numbered in graph order.
"""

from __future__ import annotations

from collections.abc import Callable

from graphc.ir import Body, Graph, Node


def value_names(graph: Graph) -> dict[Node, str]:
    names: dict[Node, str] = {}
    k = 0
    for n in graph.nodes:
        if n.is_input:
            names[n] = f"%{n.name}"
        else:
            names[n] = f"%{k}"
            k += 1
    return names


def format_attr(value) -> str:
    if isinstance(value, tuple):
        return (
            "(" + ", ".join(format_attr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
        )
    if isinstance(value, float):
        return repr(value)
    return str(value) if not isinstance(value, str) else repr(value)


def format_attrs(node: Node, all_attrs: bool = False) -> str:
    from graphc.ops import OPS

    defaults = OPS[node.op].attrs if node.op in OPS else {}
    order = [k for k in defaults if k in node.attrs] + [k for k in node.attrs if k not in defaults]
    parts = []
    for k in order:  # the op's declared order reads best: full(value=..., shape=...)
        v = node.attrs[k]
        if not all_attrs and k in defaults and defaults[k] == v:
            continue
        parts.append(f"{k}={format_attr(v)}")
    return ", ".join(parts)


def format_node(
    node: Node,
    names: dict[Node, str],
    locations: bool = True,
    annotate: Callable[[Node], str] | None = None,
) -> str:
    args = [names[i] for i in node.inputs]
    attrs = format_attrs(node)
    if attrs:
        args.append(attrs)
    line = f"  {names[node]}: {node.type} = {node.op}({', '.join(args)})"
    notes = []
    if annotate is not None:
        note = annotate(node)
        if note:
            notes.append(note)
    if locations and node.loc is not None:
        notes.append(str(node.loc))
    if notes:
        line = f"{line}  # {'; '.join(notes)}"
    for value in node.attrs.values():  # a loop's step graph, printed in place, indented
        if isinstance(value, Body):
            inner = format_graph(value.graph, locations, meta=False)
            line += "".join(f"\n    {text}" for text in inner.splitlines())
    return line


def format_graph(
    graph: Graph,
    locations: bool = True,
    meta: bool = True,
    annotate: Callable[[Node], str] | None = None,
) -> str:
    names = value_names(graph)
    params = [f"    {names[n]}: {n.type} {n.attrs['kind']}" for n in graph.inputs]
    lines = [f"graph {graph.name}(" + ("" if params else ")" + " {")]
    if params:
        lines += [p + "," for p in params[:-1]] + [params[-1], ") {"]
    for n in graph.nodes:
        if not n.is_input:
            lines.append(format_node(n, names, locations, annotate))
    outs = ", ".join(
        f"{name}={names[o]}" for name, o in zip(graph.output_names, graph.outputs, strict=True)
    )
    lines.append(f"  return {outs}")
    lines.append("}")
    if meta:
        for key, value in graph.meta.items():
            summary = getattr(value, "summary", None)
            text = value if isinstance(value, str) else summary(graph) if summary else ""
            if text:
                lines.append(f"# {key}:")
                lines += [f"#   {t}" for t in text.splitlines()]
    return "\n".join(lines)
