"""Selecting by index and by mask, as in PyTorch: index_select, gather, take_along_dim,
scatter_add, index_add, masked_fill, tril/triu and cumsum.

The gathers and scatters are the integer-indexing ops of graphc/ops/index.py; masks are
`where` over comparisons (tril/triu compare row and column numbers from `arange`, which a
loop kernel computes as it goes: no mask is ever stored).
"""

from __future__ import annotations

import builtins

from graphc import dispatch, dtypes
from graphc.errors import ShapeError
from graphc.functions import (
    _broadcast,
    _dim,
    add,
    arange,
    broadcast_to,
    cast,
    full,
    ge,
    le,
    mul,
    reshape,
    sub,
    tensor_argument,
    where,
)
from graphc.tensor import Tensor

apply = dispatch.apply


def _indices(index, fn: str) -> Tensor:
    index = tensor_argument(index, fn, "index")
    if index.dtype not in (dtypes.int64, dtypes.int32):
        raise dispatch.user_error(
            ShapeError,
            f"{fn}(): expected index to be an integer tensor (int64), got {index.dtype.name}; "
            "convert it with .long()",
        )
    return index


def index_select(input: Tensor, dim: int, index: Tensor) -> Tensor:
    tensor_argument(input, "index_select")
    index = _indices(index, "index_select")
    if index.ndim > 1:
        raise dispatch.user_error(
            ShapeError,
            f"index_select(): index must be a vector (1-D), got shape {list(index.shape)}; "
            "for a table lookup with any index shape use nn.functional.embedding",
        )
    return apply("index_select", (input, reshape(index, -1)), axis=_dim(dim, input.ndim, "dim"))


def _fit(input: Tensor, shape, axis: int | None) -> Tensor:
    """input narrowed to `shape` on every axis but `axis` (all that gather reads of it)."""
    for d, n in enumerate(shape):
        if d != axis and n != input.shape[d]:
            input = apply("slice", (input,), axis=d, start=0, stop=n, step=1)
    return input


def _check_fits(fn: str, index: Tensor, other: Tensor, axis: int, what: str) -> None:
    if index.ndim != other.ndim:
        raise dispatch.user_error(
            ShapeError,
            f"{fn}(): index has {index.ndim} dimensions but {what} has {other.ndim}; they "
            "must have the same number of dimensions",
        )
    for d in range(index.ndim):
        if d != axis and index.shape[d] > other.shape[d]:
            raise dispatch.user_error(
                ShapeError,
                f"{fn}(): size of index {list(index.shape)} exceeds the size of {what} "
                f"{list(other.shape)} at dimension {d} (allowed only along dim {axis})",
            )


def gather(input: Tensor, dim: int, index: Tensor, *, sparse_grad: bool = False) -> Tensor:
    tensor_argument(input, "gather")
    index = _indices(index, "gather")
    axis = _dim(dim, builtins.max(input.ndim, 1), "dim")
    _check_fits("gather", index, input, axis, "input")
    return apply("gather", (_fit(input, index.shape, axis), index), axis=axis)


def take_along_dim(input: Tensor, indices: Tensor, dim: int | None = None) -> Tensor:
    tensor_argument(input, "take_along_dim")
    indices = _indices(indices, "take_along_dim")
    if dim is None:
        return gather(reshape(input, -1), 0, reshape(indices, -1))
    axis = _dim(dim, input.ndim, "dim")
    if indices.ndim != input.ndim:
        raise dispatch.user_error(
            ShapeError,
            f"take_along_dim(): input and indices should have the same number of dimensions, "
            f"but got {input.ndim} and {indices.ndim}",
        )
    # every dimension but dim broadcasts, as in torch.take_along_dim
    ones = [list(t.shape) for t in (input, indices)]
    for s in ones:
        s[axis] = 1
    shape = list(_broadcast("take_along_dim", tuple(ones[0]), tuple(ones[1])))
    x_shape, i_shape = list(shape), list(shape)
    x_shape[axis], i_shape[axis] = input.shape[axis], indices.shape[axis]
    return gather(broadcast_to(input, x_shape), axis, broadcast_to(indices, i_shape))


def scatter_add(input: Tensor, dim: int, index: Tensor, src: Tensor) -> Tensor:
    tensor_argument(input, "scatter_add")
    index = _indices(index, "scatter_add")
    axis = _dim(dim, builtins.max(input.ndim, 1), "dim")
    _check_fits("scatter_add", index, input, axis, "self")
    if index.ndim != src.ndim or builtins.any(
        a > b for a, b in zip(index.shape, src.shape, strict=True)
    ):
        raise dispatch.user_error(
            ShapeError,
            f"scatter_add(): index {list(index.shape)} must not be larger than src "
            f"{list(src.shape)} in any dimension",
        )
    src = _fit(cast(src, input.dtype), index.shape, None)
    shape = [index.shape[d] if d != axis else input.shape[d] for d in range(input.ndim)]
    out = apply("scatter_add", (src, index), axis=axis, shape=tuple(shape))
    for d in range(input.ndim):  # the index covers a corner of input: the rest adds zeros
        if shape[d] != input.shape[d]:
            shape[d] = input.shape[d]
            out = apply("pad_slice", (out,), shape=tuple(shape), axis=d, start=0, step=1)
    return add(input, out)


def index_add(input: Tensor, dim: int, index: Tensor, source: Tensor, *, alpha=1) -> Tensor:
    tensor_argument(input, "index_add")
    index = _indices(index, "index_add")
    axis = _dim(dim, builtins.max(input.ndim, 1), "dim")
    index = reshape(index, -1)
    expect = list(input.shape)
    expect[axis] = index.shape[0]
    if list(source.shape) != expect:
        raise dispatch.user_error(
            ShapeError,
            f"index_add(): source {list(source.shape)} must have the shape of self "
            f"{list(input.shape)} with dim {axis} of size {index.shape[0]} (the index's length)",
        )
    source = cast(source if alpha == 1 else mul(source, alpha), input.dtype)
    added = apply("index_add", (source, index), axis=axis, shape=tuple(input.shape))
    return add(input, added)


def masked_fill(input: Tensor, mask: Tensor, value) -> Tensor:
    tensor_argument(input, "masked_fill")
    mask = tensor_argument(mask, "masked_fill", "mask")
    if mask.dtype != dtypes.bool_:
        raise dispatch.user_error(
            ShapeError,
            f"masked_fill only supports boolean masks, but got mask with dtype "
            f"{mask.dtype.name}; compare to make one (mask == 0)",
        )
    if isinstance(value, Tensor) and value.ndim != 0:
        raise dispatch.user_error(
            ShapeError,
            f"masked_fill only supports a 0-dimensional value tensor, but got one with "
            f"{value.ndim} dimension(s)",
        )
    shape = _broadcast("masked_fill", tuple(input.shape), tuple(mask.shape))
    if shape != tuple(input.shape):
        raise dispatch.user_error(
            ShapeError,
            f"masked_fill: the mask {list(mask.shape)} must broadcast to the input "
            f"{list(input.shape)} (the input's shape cannot grow)",
        )
    if isinstance(value, Tensor):
        fill = broadcast_to(cast(value, input.dtype), shape)
    else:
        fill = full(shape, value, dtype=input.dtype)
    return where(broadcast_to(mask, shape), fill, input)


def _triangle(input: Tensor, diagonal: int, keep_lower: bool, fn: str) -> Tensor:
    tensor_argument(input, fn)
    if input.ndim < 2:
        raise dispatch.user_error(
            ShapeError, f"{fn}: input tensor must have at least 2 dimensions, got {input.ndim}"
        )
    rows, cols = input.shape[-2:]
    r = reshape(arange(rows), rows, 1)
    c = reshape(arange(cols), 1, cols)
    offset = sub(c, r)  # column minus row: 0 on the diagonal
    keep = le(offset, diagonal) if keep_lower else ge(offset, diagonal)
    zero = full(input.shape, 0, dtype=input.dtype)
    return where(broadcast_to(keep, input.shape), input, zero)


def tril(input: Tensor, diagonal: int = 0) -> Tensor:
    return _triangle(input, diagonal, True, "tril")


def triu(input: Tensor, diagonal: int = 0) -> Tensor:
    return _triangle(input, diagonal, False, "triu")


def cumsum(input: Tensor, dim: int, *, dtype=None) -> Tensor:
    tensor_argument(input, "cumsum")
    if dtype is not None:
        input = cast(input, dtype)
    elif not input.dtype.is_floating_point:
        input = cast(input, dtypes.int64)  # PyTorch sums bools and ints as int64
    if input.ndim == 0:
        return input
    return apply("cumsum", (input,), axis=_dim(dim, input.ndim, "cumsum"))


def _inplace(name: str):
    fn = globals()[name]

    def method(self: Tensor, *args, **kwargs) -> Tensor:
        return self._inplace(fn(self, *args, **kwargs))

    method.__name__ = f"{name}_"
    return method


for _name in (
    "index_select",
    "gather",
    "take_along_dim",
    "scatter_add",
    "index_add",
    "masked_fill",
    "tril",
    "triu",
    "cumsum",
):
    setattr(Tensor, _name, globals()[_name])
for _name in ("scatter_add", "index_add", "masked_fill", "tril", "triu"):
    setattr(Tensor, f"{_name}_", _inplace(_name))
