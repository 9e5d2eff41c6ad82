"""`scan`: a structured loop, a body graph run once per step (in the spirit of lax.scan).

    out = scan(*carries, *xs, *consts, body=Body, num_carry=C, num_xs=X, num_ys=Y,
               length=T, reverse=False)

The body's inputs are, in order, C carries (kind "carry"), X per-step inputs (kind "x": one
slice of each xs along axis 0) and the loop-invariant consts (kind "const"). Its outputs are
the C new carries, Y per-step outputs, then any number of *saved* per-step values: what the
reverse loop of the gradient reads (graphc/ops/scan_vjp.py), kept so that it does not
compute the forward steps again.

Nodes have one result, so the loop's results are packed into one flat tensor, in order: the
final carries, then each per-step output and each saved value stacked over the T steps
([T, *shape], step t at index t whichever the direction). `segments` says where each part
lives; `unpack` reads them back (a slice and a reshape each: views, which cost nothing where
a loop kernel reads them). Every carry and output therefore shares one dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphc.errors import ShapeError
from graphc.ir import Body, Graph, TensorType
from graphc.ops.registry import REQUIRED, defop, numel

KINDS = ("carry", "x", "const")


@dataclass(frozen=True)
class Segment:
    offset: int  # in elements of the packed result
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return numel(self.shape)


def segments(body: Graph, num_carry: int, length: int) -> list[Segment]:
    """Where each body output lives in the packed result: carries first, then the stacked
    per-step outputs (ys, then saved values)."""
    out, at = [], 0
    for k, o in enumerate(body.outputs):
        shape = o.shape if k < num_carry else (length,) + o.shape
        out.append(Segment(at, shape))
        at += numel(shape)
    return out


def _check_body(body, inputs, num_carry, num_xs, num_ys, length) -> None:
    if not isinstance(body, Body):
        raise ShapeError(f"scan: body must be a Body, got {type(body).__name__}")
    g = body.graph
    kinds = [n.attrs["kind"] for n in g.inputs]
    num_consts = len(kinds) - num_carry - num_xs
    expect = ["carry"] * num_carry + ["x"] * num_xs + ["const"] * max(num_consts, 0)
    if num_consts < 0 or kinds != expect or len(inputs) != len(kinds):
        raise ShapeError(
            f"scan: the body takes inputs of kinds {kinds}, which does not fit {num_carry} "
            f"carries, {num_xs} xs and {len(inputs) - num_carry - num_xs} consts "
            f"({len(inputs)} operands)"
        )
    if length < 0 or len(g.outputs) < num_carry + num_ys or num_ys < 0:
        raise ShapeError(
            f"scan: {len(g.outputs)} body outputs cannot be {num_carry} carries and "
            f"{num_ys} ys over {length} steps"
        )
    for k, (given, param) in enumerate(zip(inputs, g.inputs, strict=True)):
        want = param.type
        if num_carry <= k < num_carry + num_xs:
            want = want.with_shape((length,) + want.shape)
        if given != want:
            raise ShapeError(
                f"scan: operand {k} is {given} but the body's {param.attrs['kind']} "
                f"{param.name} needs {want}"
            )
    for k in range(num_carry):
        if g.outputs[k].type != g.inputs[k].type:
            raise ShapeError(
                f"scan: the body returns {g.outputs[k].type} for carry {k}, which comes in "
                f"as {g.inputs[k].type}; a carry must keep its shape and dtype"
            )
    dtypes_ = {o.dtype for o in g.outputs}
    if len(dtypes_) > 1:
        raise ShapeError(
            f"scan: every carry and output must have one dtype, got {sorted(map(str, dtypes_))}"
        )


def _scan_rule(*inputs: TensorType, body, num_carry, num_xs, num_ys, length, reverse):
    _check_body(body, inputs, num_carry, num_xs, num_ys, length)
    g = body.graph
    total = sum(s.size for s in segments(g, num_carry, length))
    dtype = g.outputs[0].dtype if g.outputs else inputs[0].dtype
    return TensorType((total,), dtype)


def _scan_ref(*arrays, body, num_carry, num_xs, num_ys, length, reverse):
    from graphc.interpreter import interpret

    g = body.graph
    carries = list(arrays[:num_carry])
    xs = arrays[num_carry : num_carry + num_xs]
    consts = list(arrays[num_carry + num_xs :])
    parts = segments(g, num_carry, length)
    dtype = g.outputs[0].dtype.np if g.outputs else np.float32
    stacked = [np.empty(p.shape, dtype) for p in parts[num_carry:]]
    for t in range(length - 1, -1, -1) if reverse else range(length):
        values = interpret(g, carries + [x[t] for x in xs] + consts)
        carries = values[:num_carry]
        for s, v in zip(stacked, values[num_carry:], strict=True):
            s[t] = v
    pieces = [np.asarray(c, dtype).reshape(-1) for c in carries]
    pieces += [s.reshape(-1) for s in stacked]
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype)


def _scan_flops(out, *inputs, body, length, **attrs) -> int:
    from graphc.ops.registry import OPS

    total = 0
    for n in body.graph.nodes:
        op = OPS.get(n.op)
        if not n.is_input and op is not None and op.flops is not None:
            total += int(op.flops(n.type, *(i.type for i in n.inputs), **n.attrs))
    return length * total


def _scan_vjp(b, g, out, *inputs, **attrs):
    from graphc.ops.scan_vjp import scan_vjp

    return scan_vjp(b, g, out, inputs, **attrs)


defop(
    "scan",
    type_rule=_scan_rule,
    ref=_scan_ref,
    vjp=_scan_vjp,
    attrs={
        "body": REQUIRED,
        "num_carry": 0,
        "num_xs": 0,
        "num_ys": 0,
        "length": REQUIRED,
        "reverse": False,
    },
    traits=("loop",),
    flops=_scan_flops,
    doc="a loop of `length` steps of the body graph over carries, per-step slices of the xs "
    "and consts; results packed: final carries, then per-step outputs stacked",
)


def unpack(b, node, parts: range | None = None) -> list:
    """The loop's results as values of their own shapes (slice + reshape of the packed
    result), for body outputs `parts` (default: all)."""
    a = node.attrs
    segs = segments(a["body"].graph, a["num_carry"], a["length"])
    out = []
    for k in parts if parts is not None else range(len(segs)):
        s = segs[k]
        piece = b.slice(node, axis=0, start=s.offset, stop=s.offset + s.size, step=1)
        out.append(piece if piece.shape == s.shape else b.reshape(piece, shape=s.shape))
    return out
