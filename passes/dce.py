"""eliminate_dead_code: drops nodes no output depends on. Inputs always stay (they are the
calling convention)."""

from __future__ import annotations

from graphc.ir import Graph


def eliminate_dead_code(graph: Graph) -> Graph:
    live = set()
    stack = list(graph.outputs)
    while stack:
        n = stack.pop()
        if n not in live:
            live.add(n)
            stack.extend(n.inputs)
    nodes = [n for n in graph.nodes if n in live or n.is_input]
    if len(nodes) == len(graph.nodes):
        return graph
    return graph.replace(nodes=nodes)
