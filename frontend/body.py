"""Tracing a loop body: the user's step function, run once on symbolic tensors, becomes the
body graph of a `scan` node (graphc/ops/scan.py).

While a `BodyTrace` is the active mode, every op the step function applies appends a node
to the body. A tensor from outside the body — a parameter, a value computed before the
loop, whether eager or traced — becomes a `const` input of the body the first time the step
reads it, and an operand of the loop node, so the loop reads it where it lives. The body
cannot read values (`.item()`), draw random numbers or update tensors from outside: each
step must be the same pure function of its carries, inputs and consts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from graphc import dispatch
from graphc.errors import ShapeError, TraceError, with_location
from graphc.ir import Graph, GraphBuilder, Node, TensorType
from graphc.tensor import Tensor


def _refuse(what: str) -> TraceError:
    return dispatch.user_error(
        TraceError,
        f"{what} inside a loop body (graphc.scan, nn.LSTM/GRU steps) is not supported: each "
        "step must be a pure function of its carries, inputs and the tensors it reads; do "
        "it before or after the loop",
    )


class BodyTrace(dispatch.Mode):
    def __init__(self, outer: dispatch.Mode) -> None:
        self.outer = outer
        self.builder = GraphBuilder("body")
        self.captured: dict[int, tuple[Tensor, Node]] = {}
        self.consts: list[Tensor] = []
        self.const_nodes: list[Node] = []

    def input(self, name: str, type: TensorType, kind: str) -> Tensor:
        return Tensor._symbolic(self.builder.add_input(name, type, kind), self)

    def node_of(self, t: Tensor) -> Node:
        if t._value is not None and t._trace is self:
            return t._value
        hit = self.captured.get(id(t))
        if hit is not None:
            return hit[1]
        node = self.builder.add_input(f"k{len(self.consts)}", t._type(), "const")
        self.captured[id(t)] = (t, node)
        self.consts.append(t)
        self.const_nodes.append(node)
        return node

    # ---- the Mode interface --------------------------------------------------------------

    def apply(self, op: str, inputs: Sequence[Tensor], attrs: dict[str, Any]) -> Tensor:
        nodes = [self.node_of(t) for t in inputs]
        loc = dispatch.user_location(2)
        try:
            node = self.builder.emit(op, nodes, attrs, loc)
        except ShapeError as e:
            raise with_location(e, str(loc) if loc else "") from None
        return Tensor._symbolic(node, self)

    def constant(self, array) -> Tensor:
        return self.apply("constant", (), {"value": array})

    def assign(self, target: Tensor, value: Tensor) -> None:
        if target._value is None or target._trace is not self:
            raise _refuse("updating a tensor from outside the step in place")
        target._value = self.node_of(value)

    def concrete(self, t: Tensor, why: str):
        if t._data is not None:  # a value from outside known now: a constant of every step
            return t._data
        raise dispatch.user_error(
            TraceError,
            f"{why} needs the value of a tensor, but a loop body (graphc.scan, nn.LSTM/GRU "
            "steps) is traced once for every step; express the choice with graphc.where",
        )

    def get_grad(self, t: Tensor) -> Tensor | None:
        raise _refuse("reading .grad")

    def set_grad(self, t: Tensor, g: Tensor | None) -> None:
        raise _refuse("setting .grad")

    def backward(self, t: Tensor, gradient: Tensor | None, retain_graph: bool) -> None:
        raise _refuse("backward()")

    def runtime_scalars(self, fn, names, dtype=None) -> tuple:
        raise _refuse("a value computed on the host for every call")

    def rng(self, n: int) -> tuple:
        raise _refuse("drawing random numbers (dropout, rand)")

    def guard(self, fn, what: str):
        return self.outer.guard(fn, what)

    def note_owner(self, owner: Any) -> None:
        self.outer.note_owner(owner)


def trace_body(
    fn: Callable[[list[Tensor], list[Tensor]], tuple[list[Tensor], list[Tensor]]],
    carry_types: list[TensorType],
    x_types: list[TensorType],
) -> tuple[Graph, list[Tensor], int]:
    """Runs fn(carries, xs) -> (new carries, ys) once on symbolic tensors. Returns the body
    graph (inputs: carries, xs, consts; outputs: new carries, ys), the outside tensors its
    consts stand for, and the number of ys."""
    outer = dispatch.current()
    body = BodyTrace(outer)
    carries = [body.input(f"c{i}", t, "carry") for i, t in enumerate(carry_types)]
    xs = [body.input(f"x{j}", t, "x") for j, t in enumerate(x_types)]
    with dispatch.using(body):
        new_carries, ys = fn(carries, xs)
        outputs = [body.node_of(t) for t in list(new_carries) + list(ys)]
    b = body.builder
    # GraphBuilder appends inputs where they are created; a body lists its consts last
    inputs = [n for n in b.nodes if n.is_input and n.attrs["kind"] != "const"]
    rest = [n for n in b.nodes if not n.is_input]
    b.nodes = inputs + body.const_nodes + rest
    names = [f"carry{i}" for i in range(len(carries))] + [f"y{j}" for j in range(len(ys))]
    return b.build(outputs, names), body.consts, len(ys)
