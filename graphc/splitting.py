"""split, chunk, unbind and narrow: a tensor into pieces along one dimension, as in PyTorch.

Each piece is a `slice` node (its gradient pads the cotangent back into place), so pieces
fuse into whatever reads them and cost nothing of their own in a compiled step.
"""

from __future__ import annotations

import builtins
import operator
from collections.abc import Sequence

from graphc import dispatch
from graphc.errors import GraphcError, ShapeError
from graphc.functions import _dim, reshape
from graphc.tensor import Tensor

apply = dispatch.apply


def _axis(input: Tensor, dim: int, op: str) -> int:
    if input.ndim == 0:
        raise dispatch.user_error(
            ShapeError, f"{op}: dimension specified as {dim} but the tensor has no dimensions"
        )
    return _dim(dim, input.ndim, op)


def _piece(input: Tensor, axis: int, start: int, stop: int) -> Tensor:
    if (start, stop) == (0, input.shape[axis]):
        return input
    return apply("slice", (input,), axis=axis, start=start, stop=stop, step=1)


def narrow(input: Tensor, dim: int, start: int, length: int) -> Tensor:
    axis = _axis(input, dim, "narrow")
    size = input.shape[axis]
    start = operator.index(start)
    if start < 0:
        start += size
    if not 0 <= start <= size or length < 0 or start + length > size:
        raise dispatch.user_error(
            ShapeError,
            f"narrow: start ({start}) + length ({length}) exceeds dimension size ({size}) "
            f"of dim {dim} (input shape {list(input.shape)})",
        )
    return _piece(input, axis, start, start + length)


def split(input: Tensor, split_size_or_sections, dim: int = 0) -> tuple[Tensor, ...]:
    """Pieces of split_size along dim (the last may be smaller), or of the listed sizes."""
    axis = _axis(input, dim, "split")
    n = input.shape[axis]
    if isinstance(split_size_or_sections, Sequence):
        sizes = [operator.index(s) for s in split_size_or_sections]
        if builtins.sum(sizes) != n or builtins.any(s < 0 for s in sizes):
            raise dispatch.user_error(
                ShapeError,
                f"split_with_sizes expects split_sizes to sum exactly to {n} (input tensor's "
                f"size at dimension {dim}), but got split_sizes={sizes}",
            )
    else:
        size = operator.index(split_size_or_sections)
        if size < 0 or (size == 0 and n):
            raise dispatch.user_error(
                ShapeError,
                f"split_size can only be 0 if dimension size is 0, but got dimension size "
                f"of {n} (split_size {size})",
            )
        sizes = [builtins.min(size, n - i) for i in range(0, n, size)] if n else [0]
    out, start = [], 0
    for s in sizes:
        out.append(_piece(input, axis, start, start + s))
        start += s
    return tuple(out)


def chunk(input: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    """At most `chunks` pieces of ceil(size / chunks) along dim, as torch.chunk."""
    if chunks <= 0:
        raise dispatch.user_error(
            GraphcError, f"chunk expects `chunks` to be greater than 0, got: {chunks}"
        )
    n = input.shape[_axis(input, dim, "chunk")]
    if n == 0:
        return tuple(input for _ in range(chunks))
    return split(input, -(-n // chunks), dim)


def unbind(input: Tensor, dim: int = 0) -> tuple[Tensor, ...]:
    """The slices along dim, with dim removed."""
    axis = _axis(input, dim, "unbind")
    shape = list(input.shape[:axis]) + list(input.shape[axis + 1 :])
    return tuple(reshape(_piece(input, axis, i, i + 1), shape) for i in range(input.shape[axis]))


for _name in ("narrow", "split", "chunk", "unbind"):
    setattr(Tensor, _name, globals()[_name])
