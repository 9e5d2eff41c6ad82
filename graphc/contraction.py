"""Batched matrix products and einsum, lowered to the matmul op (and its kernels).

bmm, baddbmm and addmm are matmul plus scaled additions, as in PyTorch. `einsum` contracts
two operands at a time: letters only one operand has and the result lacks are summed away
first; then each operand is laid out as [batch letters, its own letters, summed letters]
(or with the last two swapped, which the matmul's transpose flags read without a copy) and
one batched matmul computes the pair. More operands contract left to right.
"""

from __future__ import annotations

import builtins

from graphc import dispatch
from graphc.errors import ShapeError
from graphc.functions import (
    _result_type,
    add,
    broadcast_to,
    cast,
    matmul,
    mul,
    permute,
    reshape,
    sum,
    tensor_argument,
)
from graphc.tensor import Tensor

apply = dispatch.apply


def bmm(input: Tensor, mat2: Tensor) -> Tensor:
    tensor_argument(input, "bmm")
    tensor_argument(mat2, "bmm", "mat2")
    if input.ndim != 3 or mat2.ndim != 3 or input.shape[0] != mat2.shape[0]:
        raise dispatch.user_error(
            ShapeError,
            f"bmm: expects two 3-D tensors with the same batch size, got {list(input.shape)} "
            f"and {list(mat2.shape)}; for broadcasting batch dimensions use matmul",
        )
    return matmul(input, mat2)


def _scaled_sum(input: Tensor, product: Tensor, beta, alpha) -> Tensor:
    if alpha != 1:
        product = mul(product, alpha)
    if beta == 0:  # PyTorch: beta = 0 ignores input (even its NaNs)
        return product
    return add(input if beta == 1 else mul(input, beta), product)


def baddbmm(input: Tensor, batch1: Tensor, batch2: Tensor, *, beta=1, alpha=1) -> Tensor:
    """beta * input + alpha * (batch1 @ batch2); input broadcasts to the product's shape."""
    return _scaled_sum(input, bmm(batch1, batch2), beta, alpha)


def addmm(input: Tensor, mat1: Tensor, mat2: Tensor, *, beta=1, alpha=1) -> Tensor:
    if mat1.ndim != 2 or mat2.ndim != 2:
        raise dispatch.user_error(
            ShapeError,
            f"addmm: mat1 and mat2 must be matrices, got {list(mat1.shape)} and {list(mat2.shape)}",
        )
    return _scaled_sum(input, matmul(mat1, mat2), beta, alpha)


# ---- einsum ---------------------------------------------------------------------------------


def _parse(equation: str, operands: list[Tensor]) -> tuple[list[str], str]:
    eq = equation.replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(operands):
        raise dispatch.user_error(
            ShapeError,
            f"einsum(): the equation {equation!r} names {len(terms)} operand(s) but "
            f"{len(operands)} were given",
        )
    # "..." stands for the dimensions no letter names, aligned from the right; they become
    # letters of their own (Greek, which equations never use)
    spans = [t.ndim - len(term.replace("...", "")) for t, term in zip(operands, terms, strict=True)]
    width = builtins.max(
        [s for s, term in zip(spans, terms, strict=True) if "..." in term], default=0
    )
    dots = "".join(chr(0x3B1 + i) for i in range(width))
    named = []
    for term, span in zip(terms, spans, strict=True):
        named.append(term.replace("...", dots[width - span :] if span else ""))
    if not arrow:
        counts = {c: "".join(named).count(c) for c in "".join(named)}
        out = dots + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in dots))
    else:
        out = out.replace("...", dots)
    for term, t in zip(named, operands, strict=True):
        if not builtins.all(c.isalpha() for c in term) or len(term) != t.ndim:
            raise dispatch.user_error(
                ShapeError,
                f"einsum(): the subscripts of the operand of shape {list(t.shape)} in "
                f"{equation!r} do not match its {t.ndim} dimension(s)",
            )
        if len(set(term)) != len(term):
            raise dispatch.user_error(
                ShapeError,
                f"einsum(): a letter repeated within one operand ({term!r}: a diagonal) is "
                "not supported; take the diagonal first",
            )
    if len(set(out)) != len(out) or not set(out) <= set("".join(named)):
        raise dispatch.user_error(
            ShapeError,
            f"einsum(): the output subscripts of {equation!r} must be distinct letters that "
            "appear in the inputs",
        )
    return named, out


def _sum_out(x: Tensor, letters: str, keep: set[str]) -> tuple[Tensor, str]:
    axes = tuple(i for i, c in enumerate(letters) if c not in keep)
    if not axes:
        return x, letters
    return sum(x, axes), "".join(c for c in letters if c in keep)


def _arrange(x: Tensor, letters: str, order: str) -> Tensor:
    if letters == order:
        return x
    return permute(x, *[letters.index(c) for c in order])


def _pair(a: Tensor, la: str, b: Tensor, lb: str, keep: set[str]) -> tuple[Tensor, str]:
    """a (letters la) contracted with b (lb), keeping the letters in `keep`."""
    a, la = _sum_out(a, la, keep | set(lb))
    b, lb = _sum_out(b, lb, keep | set(la))
    size = {}
    for x, letters in ((a, la), (b, lb)):
        for c, n in zip(letters, x.shape, strict=True):
            if c in size and size[c] != n and 1 not in (size[c], n):
                raise dispatch.user_error(
                    ShapeError,
                    f"einsum(): operands do not broadcast: subscript {c!r} has size "
                    f"{size[c]} in one operand and {n} in another",
                )
            size[c] = builtins.max(size.get(c, n), n)
    batch = "".join(c for c in la if c in lb and c in keep)
    summed = "".join(c for c in la if c in lb and c not in keep)
    a_own = "".join(c for c in la if c not in lb)
    b_own = "".join(c for c in lb if c not in la)
    # broadcast size-1 batch letters; a summed letter of size 1 against a larger one is
    # summed on its own first (it multiplies every term)
    for c in summed:
        if a.shape[la.index(c)] != b.shape[lb.index(c)]:
            raise dispatch.user_error(
                ShapeError,
                f"einsum(): subscript {c!r} is summed over but has sizes "
                f"{a.shape[la.index(c)]} and {b.shape[lb.index(c)]}",
            )
    dims = lambda s: [size[c] for c in s]  # noqa: E731
    n_batch = [size[c] for c in batch]
    trans_a = la == batch + summed + a_own
    a = _arrange(a, la, batch + (summed + a_own if trans_a else a_own + summed))
    trans_b = lb == batch + b_own + summed
    b = _arrange(b, lb, batch + (b_own + summed if trans_b else summed + b_own))
    a = broadcast_to(a, n_batch + list(a.shape[len(batch) :]))
    b = broadcast_to(b, n_batch + list(b.shape[len(batch) :]))
    m, k, n = _numel(dims(a_own)), _numel(dims(summed)), _numel(dims(b_own))
    a = reshape(a, *n_batch, *((k, m) if trans_a else (m, k)))
    b = reshape(b, *n_batch, *((n, k) if trans_b else (k, n)))
    dt = _result_type(a, b)
    a, b = cast(a, dt), cast(b, dt)
    out = apply("matmul", (a, b), trans_a=trans_a, trans_b=trans_b)
    return reshape(out, *n_batch, *dims(a_own), *dims(b_own)), batch + a_own + b_own


def _numel(dims: list[int]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def einsum(equation: str, *operands: Tensor) -> Tensor:
    """torch.einsum: `einsum("bij,bjk->bik", a, b)`; operands may also come as one list."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not operands:
        raise dispatch.user_error(ShapeError, "einsum(): must provide at least one operand")
    ops = [tensor_argument(t, "einsum", "operands") for t in operands]
    terms, out = _parse(equation, ops)
    x, letters = ops[0], terms[0]
    for i in range(1, len(ops)):
        later = set(out).union(*terms[i + 1 :])
        x, letters = _pair(x, letters, ops[i], terms[i], later)
    x, letters = _sum_out(x, letters, set(out))
    return _arrange(x, letters, out)


for _name in ("bmm", "baddbmm", "addmm"):
    setattr(Tensor, _name, globals()[_name])
