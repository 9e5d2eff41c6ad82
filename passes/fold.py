"""fold_constants: evaluates at compile time what depends on constants only.

Uniform results stay `full` nodes (a scalar, however large the shape); other results become
`constant` nodes only when small, so folding never bloats the graph with big literals.
"""

from __future__ import annotations

import numpy as np

from graphc.interpreter import run_node
from graphc.ir import Graph, GraphBuilder, Node
from graphc.ops import OPS
from graphc.passes.rewrite import rewrite

MAX_LITERAL = 64  # elements; larger non-uniform results are left to run time


def fold_constants(graph: Graph) -> Graph:
    def rule(b: GraphBuilder, node: Node, ins: tuple[Node, ...]) -> Node | None:
        if node.is_input:
            return None
        op = OPS[node.op]
        if not ins or "random" in op.traits or "placeholder" in op.traits:
            return None
        if not all(i.op in ("full", "constant") for i in ins):
            return None
        uniform = all(i.op == "full" for i in ins) and "elementwise" in op.traits
        if uniform:
            # Elementwise on uniform operands: compute one element.
            scalars = [np.full((), i.attrs["value"], i.dtype.np) for i in ins]
            one = node.type.with_shape(())
            value = run_node(
                Node(node.op, [_scalar_node(i) for i in ins], node.attrs, one), scalars
            )
            return b.full(value.item(), node.shape, node.dtype)
        if node.type.numel > MAX_LITERAL or any(i.type.numel > MAX_LITERAL for i in ins):
            return None
        args = [
            np.full(i.shape, i.attrs["value"], i.dtype.np)
            if i.op == "full"
            else i.attrs["value"].array
            for i in ins
        ]
        value = run_node(node, args)
        if value.size and np.all(value == value.reshape(-1)[0]):
            return b.full(value.reshape(-1)[0].item(), node.shape, node.dtype)
        return b.constant(value=value)

    return rewrite(graph, rule)


def _scalar_node(n: Node) -> Node:
    return Node(
        "full",
        (),
        {"value": n.attrs["value"], "shape": (), "dtype": n.dtype},
        n.type.with_shape(()),
    )
