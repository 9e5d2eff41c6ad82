"""canonicalize: local identities that make graphs smaller and easier to match, and the
forms of 1x1 convolutions the kernels run fastest (passes/pointwise.py).

Each rule is named, with its identity as its first comment line. A rule returns the
replacement node or None when it does not apply.
"""

from __future__ import annotations

from graphc import dtypes
from graphc.ir import Graph, GraphBuilder, Node
from graphc.passes import pointwise
from graphc.passes.rewrite import rewrite


def strip_identity(b: GraphBuilder, node: Node, ins: tuple[Node, ...]) -> Node | None:
    # stop_gradient(x) -> x   (only autodiff reads it, and autodiff has run)
    # copy(x) -> x            (IR values are never mutated, so a copy is the same value)
    return ins[0] if node.op in ("stop_gradient", "copy") else None


def identity_shape_op(b: GraphBuilder, node: Node, ins: tuple[Node, ...]) -> Node | None:
    # reshape(x, x.shape) -> x ; broadcast_to(x, x.shape) -> x ; cast(x, x.dtype) -> x
    if node.op in ("reshape", "broadcast_to", "cast") and ins[0].type == node.type:
        return ins[0]
    # transpose(x, identity) -> x
    if node.op == "transpose" and tuple(node.attrs["perm"]) == tuple(range(node.type.rank)):
        return ins[0]
    return None


def reshape_of_reshape(b: GraphBuilder, node: Node, ins: tuple[Node, ...]) -> Node | None:
    # reshape(reshape(x)) -> reshape(x)
    if node.op == "reshape" and ins[0].op == "reshape":
        return b.reshape(ins[0].inputs[0], shape=node.shape)
    return None


def transpose_of_transpose(b: GraphBuilder, node: Node, ins: tuple[Node, ...]) -> Node | None:
    # transpose(transpose(x, p), q) -> transpose(x, p[q])
    if node.op == "transpose" and ins[0].op == "transpose":
        inner, outer = ins[0].attrs["perm"], node.attrs["perm"]
        perm = tuple(inner[i] for i in outer)
        x = ins[0].inputs[0]
        return x if perm == tuple(range(len(perm))) else b.transpose(x, perm=perm)
    return None


def broadcast_of_full(b: GraphBuilder, node: Node, ins: tuple[Node, ...]) -> Node | None:
    # broadcast_to(full(v)) -> full(v) ; reshape(full(v)) -> full(v)
    if node.op in ("broadcast_to", "reshape") and ins[0].op == "full":
        return b.full(ins[0].attrs["value"], node.shape, node.dtype)
    return None


def _is_full(n: Node, value: float) -> bool:
    return n.op == "full" and n.attrs["value"] == value


def neutral_element(b: GraphBuilder, node: Node, ins: tuple[Node, ...]) -> Node | None:
    # x + 0 -> x ; 0 + x -> x ; x - 0 -> x ; x * 1 -> x ; 1 * x -> x ; x / 1 -> x
    op = node.op
    if op in ("add", "sub", "mul", "div"):
        x, y = ins
        unit = 0.0 if op in ("add", "sub") else 1.0
        if _is_full(y, unit):
            return x
        if op in ("add", "mul") and _is_full(x, unit):
            return y
    return None


def double_negation(b: GraphBuilder, node: Node, ins: tuple[Node, ...]) -> Node | None:
    # neg(neg(x)) -> x
    if node.op == "neg" and ins[0].op == "neg":
        return ins[0].inputs[0]
    return None


RULES = (
    strip_identity,
    identity_shape_op,
    reshape_of_reshape,
    transpose_of_transpose,
    broadcast_of_full,
    neutral_element,
    double_negation,
)


def canonicalize(graph: Graph) -> Graph:
    # the pointwise-convolution forms depend on the vector width (meta["vectors"], put there
    # by the frontend for the backend's target; 16 f32 lanes when no target is known)
    vectors = graph.meta.get("vectors")
    lanes = vectors.lanes(dtypes.float32) if vectors is not None else pointwise.DEFAULT_LANES

    def apply(b: GraphBuilder, node: Node, ins: tuple[Node, ...]) -> Node | None:
        for rule in RULES:
            new = rule(b, node, ins)
            if new is not None:
                return new
        for rule in pointwise.RULES:
            new = rule(b, node, ins, lanes)
            if new is not None:
                return new
        return None

    return rewrite(graph, apply)
