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


def identity_pad_slice(b: GraphBuilder, node: Node, ins: tuple[Node, ...]) -> Node | None:
    # pad_slice(x, shape=x.shape) -> x   (nothing to pad)
    if node.op == "pad_slice" and ins[0].type == node.type:
        return ins[0]
    return None


def slice_of_padding(b: GraphBuilder, node: Node, ins: tuple[Node, ...]) -> Node | None:
    # slice(pad_slice(x)) -> x, a slice of x, or zeros   (the part asked for is x's or padding)
    # slice(add(pad_slice(x), pad_slice(y))) -> add(slice(..), slice(..))
    # (a loop's gradient is its packed results' cotangents padded and added: each part of
    # the loop's gradient reads back the one piece it needs)
    if node.op != "slice" or node.attrs["step"] != 1 or ins[0].op not in ("pad_slice", "add"):
        return None
    a = node.attrs
    stop = ins[0].shape[a["axis"]] if a["stop"] is None else a["stop"]
    return _slice_through(b, ins[0], a["axis"], a["start"], stop, depth=8)


def _slice_through(b: GraphBuilder, x: Node, axis: int, lo: int, hi: int, depth: int):
    """x[lo:hi] along axis, built from what x is made of, or None if that is no simpler."""
    shape = list(x.shape)
    shape[axis] = hi - lo
    if x.op == "full":
        return b.full(x.attrs["value"], shape, x.dtype)
    if depth == 0:
        return None
    if x.op == "pad_slice" and x.attrs["axis"] == axis and x.attrs["step"] == 1:
        inner = x.inputs[0]
        start, n = x.attrs["start"], inner.shape[axis]
        if hi <= start or lo >= start + n:
            return b.full(0.0 if x.dtype.is_floating_point else 0, shape, x.dtype)
        if start <= lo and hi <= start + n:
            if (lo - start, hi - start) == (0, n):
                return inner
            return b.slice(inner, axis=axis, start=lo - start, stop=hi - start, step=1)
        return None
    if x.op == "add":
        parts = [_slice_through(b, i, axis, lo, hi, depth - 1) for i in x.inputs]
        if any(p is None for p in parts):
            return None
        live = [p for p in parts if not (p.op == "full" and p.attrs["value"] == 0)]
        if len(live) == 1:
            return live[0]
        return b.add(*parts) if len(live) == 2 else parts[0]
    return None


def adjacent_pad_slices(b: GraphBuilder, node: Node, ins: tuple[Node, ...]) -> Node | None:
    # pad_slice(x, start=s) + pad_slice(y, start=s + len(x)) -> pad_slice(concat(x, y), start=s)
    # (the gradient of chunk: the gates of a recurrent cell come back as one concat)
    if node.op != "add" or not all(i.op == "pad_slice" for i in ins):
        return None
    p, q = ins
    pa, qa = p.attrs, q.attrs
    if pa["axis"] != qa["axis"] or pa["step"] != 1 or qa["step"] != 1:
        return None
    axis = pa["axis"]
    if qa["start"] == pa["start"] + p.inputs[0].shape[axis]:
        first, second, start = p, q, pa["start"]
    elif pa["start"] == qa["start"] + q.inputs[0].shape[axis]:
        first, second, start = q, p, qa["start"]
    else:
        return None
    joined = b.concat(first.inputs[0], second.inputs[0], axis=axis)
    if joined.type == node.type:
        return joined
    return b.pad_slice(joined, shape=node.shape, axis=axis, start=start, step=1)


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
    identity_pad_slice,
    slice_of_padding,
    adjacent_pad_slices,
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
