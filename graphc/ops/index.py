"""Integer indexing: gathers (index_select, gather) and their scatter-add gradients.

- `index_select(x, index, axis)` takes whole slices of x along one axis, as numpy's `take`:
  the result is x.shape[:axis] + index.shape + x.shape[axis+1:] (an embedding lookup is
  index_select of the weight along axis 0). Its gradient is `index_add`.
- `gather(x, index, axis)` picks one element per index position, as torch.gather: index has
  x's rank and shape except along `axis` (the frontend slices x to index's sizes first, which
  is what torch.gather reads). Its gradient is `scatter_add`.

Indices must lie in [0, size): the gathers check every index and fail with the offending
value (native code reports it, never reads out of bounds). The scatter-adds sum into zeros
in index order (position j before j + 1), so their results are bitwise the same however the
work is split across threads; native scatters skip an index out of range instead of
writing out of bounds (the gather that produced the values being differentiated has
checked the same indices).
"""

from __future__ import annotations

import numpy as np

from graphc import dtypes
from graphc.errors import ShapeError
from graphc.ir import TensorType
from graphc.ops.registry import REQUIRED, defop

INDEX_DTYPES = (dtypes.int64, dtypes.int32)


def _check_index(op: str, index: TensorType) -> None:
    if index.dtype not in INDEX_DTYPES:
        raise ShapeError(
            f"{op}: indices must be an integer tensor, got {index} (convert with .long())"
        )


def _check_axis(op: str, x: TensorType, axis: int) -> None:
    if not 0 <= axis < x.rank:
        raise ShapeError(f"{op}: axis {axis} is out of range for {x}")


def check_range(op: str, index: np.ndarray, size: int, axis: int, skip=None) -> None:
    """IndexError naming the first index outside [0, size) (entries equal to `skip` aside)."""
    bad = (index < 0) | (index >= size)
    if skip is not None:
        bad &= index != skip
    if bad.any():
        value = int(index[bad].flat[0])
        raise IndexError(
            f"{op}: index {value} is out of range for dimension {axis} with size {size} "
            f"(indices must lie in 0..{size - 1}; token ids in 0..num_embeddings-1)"
        )


# ---- index_select / index_add -------------------------------------------------------------


def _selected_shape(shape, index_shape, axis) -> tuple[int, ...]:
    return tuple(shape[:axis]) + tuple(index_shape) + tuple(shape[axis + 1 :])


def _index_select_rule(x: TensorType, index: TensorType, axis, padding_idx) -> TensorType:
    _check_index("index_select", index)
    _check_axis("index_select", x, axis)
    return x.with_shape(_selected_shape(x.shape, index.shape, axis))


def _index_select_ref(x, index, axis, padding_idx):
    check_range("index_select", index, x.shape[axis], axis)
    return np.take(x, index, axis=axis)


def _index_select_vjp(b, g, out, x, index, axis, padding_idx):
    gx = b.index_add(g, index, axis=axis, shape=x.shape, ignore_index=padding_idx)
    return gx, None


defop(
    "index_select",
    type_rule=_index_select_rule,
    ref=_index_select_ref,
    vjp=_index_select_vjp,
    arity=2,
    attrs={"axis": 0, "padding_idx": None},
    traits=("index",),
    doc="the slices of x at `index` along axis (numpy's take); slices selected by "
    "padding_idx get no gradient (nn.Embedding)",
)


def _index_add_rule(g: TensorType, index: TensorType, axis, shape, ignore_index) -> TensorType:
    _check_index("index_add", index)
    shape = tuple(shape)
    if not 0 <= axis < len(shape) or g.shape != _selected_shape(shape, index.shape, axis):
        raise ShapeError(
            f"index_add: values {g} with indices {index} do not fit into shape "
            f"{list(shape)} along axis {axis}"
        )
    return g.with_shape(shape)


def _index_add_ref(g, index, axis, shape, ignore_index):
    check_range("index_add", index, shape[axis], axis, ignore_index)
    out = np.zeros(shape, g.dtype)
    flat = index.reshape(-1)
    rows = g.reshape(g.shape[:axis] + (flat.size,) + g.shape[axis + index.ndim :])
    lead = (slice(None),) * axis
    if ignore_index is not None:
        keep = np.flatnonzero(flat != ignore_index)
        flat, rows = flat[keep], rows[lead + (keep,)]
    np.add.at(out, lead + (flat,), rows)  # in index order: the native kernels' order
    return out


def _index_add_vjp(b, ct, out, g, index, axis, shape, ignore_index):
    gg = b.index_select(ct, index, axis=axis)
    if ignore_index is not None:  # entries at ignore_index added nothing
        keep = b.ne(index, b.full(ignore_index, index.shape, index.dtype))
        keep = _expand_mask(b, keep, g, axis)
        gg = b.where(keep, gg, b.full_like(gg, 0.0))
    return gg, None


def _expand_mask(b, mask, like, axis):
    """An index-shaped mask broadcast over the other axes of `like` (index_add's values)."""
    shape = (1,) * axis + mask.shape + (1,) * (like.type.rank - axis - mask.type.rank)
    return b.broadcast_to(b.reshape(mask, shape=shape), shape=like.shape)


defop(
    "index_add",
    type_rule=_index_add_rule,
    ref=_index_add_ref,
    vjp=_index_add_vjp,
    arity=2,
    attrs={"axis": 0, "shape": REQUIRED, "ignore_index": None},
    traits=("index",),
    flops=lambda out, g, index, **a: g.numel,
    doc="zeros of `shape` plus each slice of g added at its index along axis, in index order "
    "(the gradient of index_select); entries equal to ignore_index add nothing",
)

# ---- gather / scatter_add -----------------------------------------------------------------


def _same_but_axis(op: str, a: TensorType, b_shape, axis: int, what: str) -> None:
    if len(b_shape) != a.rank or any(a.shape[d] != b_shape[d] for d in range(a.rank) if d != axis):
        raise ShapeError(
            f"{op}: {what} {list(b_shape)} must match {a} in every dimension but {axis}"
        )


def _gather_rule(x: TensorType, index: TensorType, axis) -> TensorType:
    _check_index("gather", index)
    _check_axis("gather", x, axis)
    _same_but_axis("gather", index, x.shape, axis, "the input's shape")
    return x.with_shape(index.shape)


def _gather_ref(x, index, axis):
    check_range("gather", index, x.shape[axis], axis)
    return np.take_along_axis(x, index, axis=axis)


def _gather_vjp(b, g, out, x, index, axis):
    return b.scatter_add(g, index, axis=axis, shape=x.shape), None


defop(
    "gather",
    type_rule=_gather_rule,
    ref=_gather_ref,
    vjp=_gather_vjp,
    arity=2,
    attrs={"axis": 0},
    traits=("index",),
    doc="out[..i, j, k..] = x[..i, index[..i, j, k..], k..] along axis (torch.gather with "
    "index and x equal in every other dimension)",
)


def _scatter_add_rule(g: TensorType, index: TensorType, axis, shape) -> TensorType:
    _check_index("scatter_add", index)
    if index.shape != g.shape:
        raise ShapeError(f"scatter_add: indices {index} and values {g} must have one shape")
    _check_axis("scatter_add", g, axis)
    _same_but_axis("scatter_add", g, tuple(shape), axis, "the result's shape")
    return g.with_shape(tuple(shape))


def _scatter_add_ref(g, index, axis, shape):
    check_range("scatter_add", index, shape[axis], axis)
    out = np.zeros(shape, g.dtype)
    where = list(np.indices(index.shape, sparse=True))
    where[axis] = index
    np.add.at(out, tuple(where), g)  # in C order of the index: j before j + 1 per element
    return out


def _scatter_add_vjp(b, ct, out, g, index, axis, shape):
    return b.gather(ct, index, axis=axis), None


defop(
    "scatter_add",
    type_rule=_scatter_add_rule,
    ref=_scatter_add_ref,
    vjp=_scatter_add_vjp,
    arity=2,
    attrs={"axis": 0, "shape": REQUIRED},
    traits=("index",),
    flops=lambda out, g, index, **a: g.numel,
    doc="zeros of `shape` with each g[..i, j, k..] added at [..i, index[..i, j, k..], k..] "
    "(the gradient of gather), in index order",
)
