"""The op table: every op is defined once, with all of its rules side by side.

An `Op` carries
- `type_rule(*input_types, **attrs) -> TensorType`: shape and dtype of the result; raises
  `ShapeError` with a message a user can act on;
- `ref(*arrays, **attrs) -> np.ndarray`: the numpy reference — the executable spec, the eager
  backend and the interpreter;
- `vjp(b, g, out, *inputs, **attrs) -> tuple[Node | None, ...]`: emits, with the builder `b`,
  the cotangent of each input given the cotangent `g` of the result `out`; or `NoGrad(reason)`
  for ops that have no derivative (integer results, comparisons, gradient-only ops);
- `flops(out_type, *input_types, **attrs) -> int`: arithmetic work, for reports.

Codegen registers lowerings in its own table keyed by op name (only `codegen/` imports
llvmlite); a test checks that every op has one there once native code exists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphc.errors import ShapeError
from graphc.ir import Loc, Node, TensorType


class _Required:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class NoGrad:
    """An explicit mark: this op has no derivative, and why.

    `unsupported=False`: the derivative is zero (comparisons, integer results, random draws).
    `unsupported=True`: a derivative exists but graphc does not provide it; differentiating
    through the op is an error rather than a silent zero.
    """

    reason: str
    unsupported: bool = False


@dataclass(eq=False)
class Op:
    name: str
    type_rule: Callable[..., TensorType]
    ref: Callable[..., np.ndarray]
    vjp: Callable[..., tuple] | NoGrad
    attrs: Mapping[str, Any] = field(default_factory=dict)  # name -> default (or REQUIRED)
    arity: int | None = None  # number of inputs; None: variadic
    traits: frozenset[str] = frozenset()
    flops: Callable[..., int] | None = None
    doc: str = ""

    @property
    def differentiable(self) -> bool:
        return not isinstance(self.vjp, NoGrad)

    def full_attrs(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(attrs) - set(self.attrs)
        if unknown:
            raise ShapeError(
                f"{self.name}: unknown attribute(s) {sorted(unknown)}; "
                f"expected {sorted(self.attrs)}"
            )
        out = {}
        for k, default in self.attrs.items():
            if k in attrs:
                out[k] = attrs[k]
            elif default is REQUIRED:
                raise ShapeError(f"{self.name}: missing required attribute {k!r}")
            else:
                out[k] = default
        return out

    def infer(self, input_types: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
        if self.arity is not None and len(input_types) != self.arity:
            raise ShapeError(f"{self.name} takes {self.arity} input(s), got {len(input_types)}")
        return self.type_rule(*input_types, **attrs)

    def make_node(
        self, inputs: Sequence[Node], attrs: Mapping[str, Any], loc: Loc | None = None
    ) -> Node:
        attrs = self.full_attrs(attrs)
        out_type = self.infer([i.type for i in inputs], attrs)
        return Node(self.name, inputs, attrs, out_type, loc)

    def evaluate(
        self, arrays: Sequence[np.ndarray], attrs: Mapping[str, Any], out_type: TensorType
    ) -> np.ndarray:
        """Runs the numpy reference and holds it to the type rule's promise."""
        out = np.asarray(self.ref(*arrays, **attrs))
        if out.shape != out_type.shape or out.dtype != np.dtype(out_type.dtype.np):
            raise AssertionError(
                f"internal error: the reference of {self.name} returned "
                f"{out.dtype}{list(out.shape)} but its type rule promises {out_type}"
            )
        return out

    def __repr__(self) -> str:
        return f"<Op {self.name}>"


OPS: dict[str, Op] = {}


def defop(
    name: str,
    *,
    type_rule: Callable[..., TensorType],
    ref: Callable[..., np.ndarray],
    vjp: Callable[..., tuple] | NoGrad,
    attrs: Mapping[str, Any] | None = None,
    arity: int | None = None,
    traits: Sequence[str] = (),
    flops: Callable[..., int] | None = None,
    doc: str = "",
) -> Op:
    if name in OPS:
        raise ValueError(f"op {name!r} is defined twice")
    op = Op(name, type_rule, ref, vjp, dict(attrs or {}), arity, frozenset(traits), flops, doc)
    OPS[name] = op
    return op


def get_op(name: str) -> Op:
    try:
        return OPS[name]
    except KeyError:
        raise ShapeError(f"unknown op {name!r}") from None


# ---- shared type-rule helpers -------------------------------------------------------------


def same_type(op: str, *types: TensorType) -> TensorType:
    """Elementwise ops take operands of one shape and dtype; broadcasting is explicit in the IR."""
    first = types[0]
    for t in types[1:]:
        if t.shape != first.shape:
            raise ShapeError(
                f"{op}: operand shapes differ: {', '.join(str(t) for t in types)} "
                "(broadcast explicitly with broadcast_to)"
            )
        if t.dtype != first.dtype:
            raise ShapeError(
                f"{op}: operand dtypes differ: {', '.join(str(t) for t in types)} (insert a cast)"
            )
    return first


def require_float(op: str, t: TensorType) -> None:
    if not t.dtype.is_floating_point:
        raise ShapeError(f"{op}: needs a floating-point tensor, got {t}")


def normalize_axes(op: str, axes: Sequence[int], rank: int) -> tuple[int, ...]:
    """Sorted non-negative axes. As in PyTorch, a 0-d tensor accepts axis 0 or -1, which
    names the scalar itself: there is nothing to reduce, so the result is ()."""
    out = []
    for a in axes:
        if not -max(rank, 1) <= a < max(rank, 1):
            raise ShapeError(f"{op}: axis {a} is out of range for a tensor of rank {rank}")
        if rank:
            out.append(a % rank)
    if len(set(out)) != len(out):
        raise ShapeError(f"{op}: repeated axis in {tuple(axes)}")
    return tuple(sorted(out))


def numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
