"""Layout ops: reshape, transpose, broadcast_to, and reductions over axes."""

from __future__ import annotations

import numpy as np

from graphc import dtypes
from graphc.errors import ShapeError
from graphc.ir import TensorType
from graphc.ops.registry import NoGrad, defop, normalize_axes, numel

# ---- reshape / transpose / broadcast ------------------------------------------------------


def _reshape_rule(x: TensorType, shape: tuple[int, ...]) -> TensorType:
    if numel(shape) != x.numel or any(d < 0 for d in shape):
        raise ShapeError(
            f"reshape: cannot reshape {x} ({x.numel} elements) into shape {list(shape)}; "
            f"the new sizes must multiply to {x.numel}"
        )
    return x.with_shape(shape)


defop(
    "reshape",
    type_rule=_reshape_rule,
    ref=lambda x, shape: np.reshape(x, shape),
    arity=1,
    attrs={"shape": None},
    traits=("view",),
    vjp=lambda b, g, out, x, shape: (b.reshape(g, shape=x.shape),),
)


def _transpose_rule(x: TensorType, perm: tuple[int, ...]) -> TensorType:
    if sorted(perm) != list(range(x.rank)):
        raise ShapeError(f"transpose: {list(perm)} is not a permutation of the axes of {x}")
    return x.with_shape(tuple(x.shape[p] for p in perm))


def _transpose_vjp(b, g, out, x, perm):
    inverse = tuple(int(i) for i in np.argsort(perm))
    return (b.transpose(g, perm=inverse),)


defop(
    "transpose",
    type_rule=_transpose_rule,
    ref=lambda x, perm: np.transpose(x, perm),
    arity=1,
    attrs={"perm": None},
    traits=("layout",),
    vjp=_transpose_vjp,
    doc="permutes the axes: out.shape[i] = x.shape[perm[i]]",
)


def broadcast_shape(op: str, a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """numpy/PyTorch broadcasting of two shapes."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        da = a[-i] if i <= len(a) else 1
        db = b[-i] if i <= len(b) else 1
        if da != db and da != 1 and db != 1:
            raise ShapeError(
                f"{op}: shapes {list(a)} and {list(b)} cannot be broadcast together "
                f"(dimension {-i}: {da} vs {db})"
            )
        out.append(db if da == 1 else da)
    return tuple(reversed(out))


def _broadcast_rule(x: TensorType, shape: tuple[int, ...]) -> TensorType:
    if len(shape) < x.rank or broadcast_shape("broadcast_to", x.shape, shape) != tuple(shape):
        raise ShapeError(f"broadcast_to: cannot broadcast {x} to shape {list(shape)}")
    return x.with_shape(shape)


defop(
    "broadcast_to",
    type_rule=_broadcast_rule,
    ref=lambda x, shape: np.broadcast_to(x, shape),
    arity=1,
    attrs={"shape": None},
    traits=("view",),
    vjp=lambda b, g, out, x, shape: (b.sum_to(g, x.shape),),
)


def _slice_rule(x: TensorType, axis: int, start: int, stop: int | None, step: int) -> TensorType:
    if not 0 <= axis < x.rank:
        raise ShapeError(f"slice: axis {axis} is out of range for {x}")
    end = x.shape[axis] if stop is None else stop  # stop=None: to the end, as in x[start:]
    if step < 1 or not 0 <= start <= end <= x.shape[axis]:
        raise ShapeError(
            f"slice: [{start}:{end}:{step}] on axis {axis} is invalid for {x} "
            f"(need 0 <= start <= stop <= {x.shape[axis]} and step >= 1)"
        )
    shape = list(x.shape)
    shape[axis] = len(range(start, end, step))
    return x.with_shape(shape)


def _slice_ref(x, axis, start, stop, step):
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, stop, step)
    return x[tuple(index)]


def _slice_vjp(b, g, out, x, axis, start, stop, step):
    return (b.pad_slice(g, shape=x.shape, axis=axis, start=start, step=step),)


defop(
    "slice",
    type_rule=_slice_rule,
    ref=_slice_ref,
    arity=1,
    traits=("view",),
    attrs={"axis": 0, "start": 0, "stop": None, "step": 1},
    vjp=_slice_vjp,
    doc="x[..., start:stop:step, ...] along one axis",
)


def _pad_slice_rule(g: TensorType, shape, axis, start, step) -> TensorType:
    fits = (
        g.rank == len(shape)
        and 0 <= axis < g.rank
        and 0 <= start <= shape[axis]
        and step >= 1
        and all(g.shape[i] == shape[i] for i in range(g.rank) if i != axis)
        and start + step * (g.shape[axis] - 1) < max(shape[axis], 1)
    )
    if not fits:
        raise ShapeError(f"pad_slice: {g} does not fit into shape {list(shape)} at axis {axis}")
    return g.with_shape(shape)


def _pad_slice_ref(g, shape, axis, start, step):
    out = np.zeros(shape, g.dtype)
    index = [slice(None)] * g.ndim
    index[axis] = slice(start, start + step * g.shape[axis], step)
    out[tuple(index)] = g
    return out


def _pad_slice_vjp(b, g, out, x, shape, axis, start, step):
    # stop just past the last written index: start + step * n may lie beyond the edge
    n = x.shape[axis]
    stop = start + step * (n - 1) + 1 if n else start
    return (b.slice(g, axis=axis, start=start, stop=stop, step=step),)


defop(
    "pad_slice",
    type_rule=_pad_slice_rule,
    ref=_pad_slice_ref,
    arity=1,
    attrs={"shape": None, "axis": 0, "start": 0, "step": 1},
    vjp=_pad_slice_vjp,
    doc="zeros of `shape` with x written at [start::step] along axis (the VJP of slice)",
)


def _concat_rule(*xs: TensorType, axis: int) -> TensorType:
    if not xs:
        raise ShapeError("concat: needs at least one tensor")
    first = xs[0]
    if not 0 <= axis < first.rank:
        raise ShapeError(f"concat: axis {axis} is out of range for {first}")
    for x in xs[1:]:
        same = x.rank == first.rank and all(
            a == b for i, (a, b) in enumerate(zip(x.shape, first.shape, strict=True)) if i != axis
        )
        if not same or x.dtype != first.dtype:
            raise ShapeError(f"concat: {x} does not match {first} except along axis {axis}")
    shape = list(first.shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    return first.with_shape(shape)


def _concat_vjp(b, g, out, *xs, axis):
    grads, start = [], 0
    for x in xs:
        n = x.shape[axis]
        grads.append(b.slice(g, axis=axis, start=start, stop=start + n, step=1))
        start += n
    return tuple(grads)


defop(
    "concat",
    type_rule=_concat_rule,
    ref=lambda *xs, axis: np.concatenate(xs, axis),
    attrs={"axis": 0},
    vjp=_concat_vjp,
)

# ---- reductions ---------------------------------------------------------------------------


def _reduced_shape(x: TensorType, axes: tuple[int, ...], keepdims: bool) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    return tuple(d for i, d in enumerate(x.shape) if i not in axes)


def _reduce_rule(name: str):
    def rule(x: TensorType, axes: tuple[int, ...], keepdims: bool) -> TensorType:
        if normalize_axes(name, axes, x.rank) != tuple(axes):
            raise ShapeError(
                f"{name}: axes must be sorted, non-negative and below the rank {x.rank}: "
                f"got {tuple(axes)} for {x}"
            )
        if x.dtype == dtypes.bool_:
            raise ShapeError(f"{name}: cast bool tensors to a number type first")
        return x.with_shape(_reduced_shape(x, axes, keepdims))

    return rule


def _expand_back(b, g, x, axes):
    """Broadcasts a reduction's cotangent (or result) back over the reduced axes of x."""
    keep = _reduced_shape(x.type, axes, True)
    if g.shape != keep:
        g = b.reshape(g, shape=keep)
    return b.broadcast_to(g, shape=x.shape)


def _reduce_sum_vjp(b, g, out, x, axes, keepdims):
    return (_expand_back(b, g, x, axes),)


def _reduce_sum_ref(x, axes, keepdims):
    return np.sum(x, axis=tuple(axes), keepdims=keepdims, dtype=x.dtype)


defop(
    "reduce_sum",
    type_rule=_reduce_rule("reduce_sum"),
    ref=_reduce_sum_ref,
    arity=1,
    attrs={"axes": (), "keepdims": False},
    traits=("reduction",),
    flops=lambda out, x, **a: x.numel,
    vjp=_reduce_sum_vjp,
)


def _reduce_max_vjp(b, g, out, x, axes, keepdims):
    # amax semantics: ties share the cotangent evenly.
    hit = b.eq(x, _expand_back(b, out, x, axes))
    count = b.reduce_sum(b.cast(hit, dtype=x.dtype), axes=axes, keepdims=True)
    share = b.div(_expand_back(b, g, x, axes), _expand_back(b, count, x, axes))
    return (b.where(hit, share, b.full_like(x, 0.0)),)


def _reduce_max_rule(x: TensorType, axes, keepdims) -> TensorType:
    out = _reduce_rule("reduce_max")(x, axes, keepdims)  # validates the axes first
    if any(x.shape[a] == 0 for a in axes):
        raise ShapeError(f"reduce_max: cannot reduce an empty axis of {x}")
    return out


defop(
    "reduce_max",
    type_rule=_reduce_max_rule,
    ref=lambda x, axes, keepdims: np.max(x, axis=tuple(axes), keepdims=keepdims),
    arity=1,
    attrs={"axes": (), "keepdims": False},
    traits=("reduction",),
    flops=lambda out, x, **a: x.numel,
    vjp=_reduce_max_vjp,
)


def _argmax_rule(x: TensorType, axis: int, keepdims: bool) -> TensorType:
    if not 0 <= axis < x.rank or x.shape[axis] == 0:
        raise ShapeError(f"argmax: axis {axis} is invalid for {x}")
    return TensorType(_reduced_shape(x, (axis,), keepdims), dtypes.int64)


defop(
    "argmax",
    type_rule=_argmax_rule,
    ref=lambda x, axis, keepdims: np.argmax(x, axis=axis, keepdims=keepdims).astype(np.int64),
    arity=1,
    attrs={"axis": 0, "keepdims": False},
    traits=("reduction",),
    flops=lambda out, x, **a: x.numel,
    vjp=NoGrad("argmax has integer results"),
)


# ---- cumulative sum -----------------------------------------------------------------------


def _cumsum_rule(x: TensorType, axis: int, reverse: bool) -> TensorType:
    if not 0 <= axis < x.rank:
        raise ShapeError(f"cumsum: axis {axis} is out of range for {x}")
    if x.dtype == dtypes.bool_:
        raise ShapeError(f"cumsum: cast bool tensors to a number type first, got {x}")
    return x


def _cumsum_ref(x, axis, reverse):
    if reverse:
        return np.flip(np.cumsum(np.flip(x, axis), axis=axis, dtype=x.dtype), axis).copy()
    return np.cumsum(x, axis=axis, dtype=x.dtype)


defop(
    "cumsum",
    type_rule=_cumsum_rule,
    ref=_cumsum_ref,
    arity=1,
    attrs={"axis": 0, "reverse": False},
    traits=("scan",),
    flops=lambda out, x, **a: x.numel,
    # each output sums a prefix, so each input feeds the suffix from its own position on
    vjp=lambda b, g, out, x, axis, reverse: (b.cumsum(g, axis=axis, reverse=not reverse),),
    doc="running sums along axis, in order (from the end when reverse)",
)
