"""Matrix multiplication with transpose flags (so the VJPs never materialise a transpose)."""

from __future__ import annotations

import numpy as np

from graphc.errors import ShapeError
from graphc.ir import TensorType
from graphc.ops.registry import defop


def _dims(t: TensorType, trans: bool) -> tuple[int, int]:
    rows, cols = t.shape[-2], t.shape[-1]
    return (cols, rows) if trans else (rows, cols)


def _matmul_rule(a: TensorType, b: TensorType, trans_a: bool, trans_b: bool) -> TensorType:
    if a.rank < 2 or b.rank < 2 or a.shape[:-2] != b.shape[:-2]:
        raise ShapeError(f"matmul: needs matrices with equal batch dimensions, got {a} and {b}")
    if a.dtype != b.dtype or not a.dtype.is_floating_point:
        raise ShapeError(f"matmul: operands must share a floating dtype, got {a} and {b}")
    m, k = _dims(a, trans_a)
    k2, n = _dims(b, trans_b)
    if k != k2:
        ta = "^T" if trans_a else ""
        tb = "^T" if trans_b else ""
        raise ShapeError(
            f"matmul: inner dimensions differ: a{ta} is [{m}x{k}] but b{tb} is [{k2}x{n}] "
            f"(a is {a}, b is {b})"
        )
    return a.with_shape(a.shape[:-2] + (m, n))


def _matmul_ref(a, b, trans_a, trans_b):
    if trans_a:
        a = np.swapaxes(a, -1, -2)
    if trans_b:
        b = np.swapaxes(b, -1, -2)
    return np.matmul(a, b)


def _matmul_vjp(b, g, out, x, y, trans_a, trans_b):
    mm = b.matmul
    if not trans_a and not trans_b:  # C = A B
        return mm(g, y, trans_b=True), mm(x, g, trans_a=True)
    if not trans_a and trans_b:  # C = A B^T
        return mm(g, y), mm(g, x, trans_a=True)
    if trans_a and not trans_b:  # C = A^T B
        return mm(y, g, trans_b=True), mm(x, g)
    return mm(y, g, trans_a=True, trans_b=True), mm(g, x, trans_a=True, trans_b=True)


def _matmul_flops(out: TensorType, a: TensorType, b: TensorType, trans_a, trans_b) -> int:
    k = _dims(a, trans_a)[1]
    return 2 * out.numel * k


defop(
    "matmul",
    type_rule=_matmul_rule,
    ref=_matmul_ref,
    vjp=_matmul_vjp,
    arity=2,
    attrs={"trans_a": False, "trans_b": False},
    traits=("contraction",),
    flops=_matmul_flops,
    doc="op(a) @ op(b) over equal leading batch dimensions; op transposes when its flag is set",
)
