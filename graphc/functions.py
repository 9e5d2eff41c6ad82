"""The tensor math API (graphc.add, Tensor.__add__, ...): PyTorch semantics on IR primitives.

Promotion and broadcasting happen here, explicitly: the ops below take operands of one shape
and dtype, so this module inserts the casts, reshapes and broadcast_to nodes PyTorch's
implicit rules imply.
"""

from __future__ import annotations

import builtins
from collections import namedtuple
from collections.abc import Sequence
from typing import Any

import numpy as np

from graphc import dispatch, dtypes
from graphc.dtypes import DType
from graphc.errors import ArgumentError, GraphcError, ShapeError
from graphc.ops.registry import normalize_axes
from graphc.ops.shape import broadcast_shape
from graphc.tensor import Tensor, _as_array

apply = dispatch.apply
Number = (int, float, bool)
MaxResult = namedtuple("MaxResult", ["values", "indices"])


# ---- operands -----------------------------------------------------------------------------


def full(size, fill_value, *, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    if dtype is None:
        dtype = dtypes.promote_with_scalar(dtypes.bool_, fill_value)
        dtype = dtypes.default_float if isinstance(fill_value, float) else dtype
    t = apply(
        "full",
        (),
        value=_scalar_value(fill_value, dtype),
        shape=_size(size),
        dtype=dtypes.get(dtype),
    )
    if requires_grad:
        t.requires_grad = True
    return t


def _scalar_value(v, dtype: DType):
    v = v.item() if isinstance(v, np.generic) else v
    if dtype.is_floating_point:
        return float(v)
    if dtype == dtypes.bool_:
        return bool(v)
    return int(v)


def _size(size) -> tuple[int, ...]:
    if isinstance(size, (int, np.integer)):
        return (int(size),)
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = size[0]
    return tuple(int(d) for d in size)


def tensor_argument(x, fn: str, name: str = "input") -> Tensor:
    """x, which must be a Tensor: else PyTorch's TypeError, as a graphc error naming the
    user's line and the conversion to use (ops do not convert lists or arrays silently)."""
    if isinstance(x, Tensor):
        return x
    kind = type(x).__name__
    if isinstance(x, (np.ndarray, np.generic)):
        kind = f"numpy.{kind}"
    if isinstance(x, np.ndarray):
        kind, hint = "numpy.ndarray", "graphc.from_numpy(array)"
    elif isinstance(x, (list, tuple, *Number, np.generic)):
        hint = "graphc.tensor(...)"
    else:
        hint = "a tensor"
    raise dispatch.user_error(
        ArgumentError, f"{fn}(): argument '{name}' must be a Tensor, not {kind}; pass {hint}"
    )


def as_tensor_like(x, like: Tensor) -> Tensor:
    """x as a tensor; a Python number takes like's dtype (if it fits the number's kind)."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, Number) or isinstance(x, np.generic):
        return full(like.shape, x, dtype=dtypes.promote_with_scalar(like.dtype, x))
    return tensor(x)


def _operands(a, b) -> tuple[Tensor, Tensor]:
    """Promotes and broadcasts two operands (tensors or Python numbers) to one type."""
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError("at least one operand must be a tensor")
    if not isinstance(a, Tensor):
        a = tensor(a) if not isinstance(a, Number + (np.generic,)) else a
    if not isinstance(b, Tensor):
        b = tensor(b) if not isinstance(b, Number + (np.generic,)) else b
    if not isinstance(a, Tensor):
        dt = dtypes.promote_with_scalar(b.dtype, a)
        return full(b.shape, a, dtype=dt), cast(b, dt)
    if not isinstance(b, Tensor):
        dt = dtypes.promote_with_scalar(a.dtype, b)
        return cast(a, dt), full(a.shape, b, dtype=dt)
    dt = _result_type(a, b)
    shape = _broadcast("broadcast", tuple(a.shape), tuple(b.shape))
    return broadcast_to(cast(a, dt), shape), broadcast_to(cast(b, dt), shape)


def _broadcast(what: str, a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """broadcast_shape, its error pointing at the user's line (eager mode has no tracer to)."""
    try:
        return broadcast_shape(what, a, b)
    except ShapeError as e:
        raise dispatch.user_error(ShapeError, str(e)) from None


def _result_type(a: Tensor, b: Tensor) -> DType:
    # PyTorch: within one category, a dimensioned tensor wins over a zero-dim one.
    if a.dtype.category == b.dtype.category:
        if a.ndim == 0 and b.ndim > 0:
            return b.dtype
        if b.ndim == 0 and a.ndim > 0:
            return a.dtype
    return dtypes.promote(a.dtype, b.dtype)


def cast(x: Tensor, dtype: DType) -> Tensor:
    dtype = dtypes.get(dtype)
    return x if x.dtype == dtype else apply("cast", (x,), dtype=dtype)


def _to_float(x: Tensor) -> Tensor:
    return x if x.dtype.is_floating_point else cast(x, dtypes.default_float)


# ---- elementwise --------------------------------------------------------------------------


def add(input, other, *, alpha=1) -> Tensor:
    if alpha != 1:
        other = mul(other, alpha)
    return apply("add", _operands(input, other))


def sub(input, other, *, alpha=1) -> Tensor:
    if alpha != 1:
        other = mul(other, alpha)
    return apply("sub", _operands(input, other))


def mul(input, other) -> Tensor:
    return apply("mul", _operands(input, other))


def div(input, other) -> Tensor:
    a, b = _operands(input, other)
    return apply("div", (_to_float(a), _to_float(b)))


def pow(input, exponent) -> Tensor:
    if isinstance(exponent, Tensor) or not isinstance(input, Tensor):
        # tensor ** tensor, number ** tensor: exp(b * log(a)), PyTorch's semantics for a > 0
        a, b = _operands(input, exponent)
        return exp(mul(_to_float(b), log(_to_float(a))))
    if exponent == 1:
        return input
    return apply("pow", (_to_float(input),), exponent=float(exponent))


def maximum(input, other) -> Tensor:
    return apply("maximum", _operands(input, other))


def minimum(input, other) -> Tensor:
    return apply("minimum", _operands(input, other))


def _unary(op: str, floating: bool = True):
    def fn(input: Tensor) -> Tensor:
        tensor_argument(input, op)
        return apply(op, (_to_float(input) if floating else input,))

    fn.__name__ = op
    return fn


exp = _unary("exp")
log = _unary("log")
sqrt = _unary("sqrt")
rsqrt = _unary("rsqrt")
tanh = _unary("tanh")
erf = _unary("erf")
log1p = _unary("log1p")
expm1 = _unary("expm1")
sigmoid = _unary("sigmoid")
relu = _unary("relu", floating=False)
abs = _unary("abs", floating=False)
neg = _unary("neg", floating=False)
sign = _unary("sign", floating=False)


def square(input: Tensor) -> Tensor:
    return mul(input, input)


def clone(input: Tensor) -> Tensor:
    return apply("copy", (input,))


def clamp(input: Tensor, min=None, max=None) -> Tensor:
    # where(x < min, min, x): the gradient passes where min <= x <= max (PyTorch's clamp)
    out = input
    if min is not None:
        a, m = _operands(out, min)
        out = where(apply("lt", (a, m)), m, a)
    if max is not None:
        a, m = _operands(out, max)
        out = where(apply("gt", (a, m)), m, a)
    return out


clip = clamp


def clamp_min(input: Tensor, min) -> Tensor:
    return clamp(input, min=min)


def clamp_max(input: Tensor, max) -> Tensor:
    return clamp(input, max=max)


def lerp(input, end, weight) -> Tensor:
    # PyTorch's formula: start + w*(end-start) for |w| < 0.5, else end - (end-start)*(1-w)
    diff = sub(end, input)
    if isinstance(weight, Number) and builtins.abs(weight) < 0.5:
        return add(input, mul(diff, weight))
    if isinstance(weight, Number):
        return sub(end, mul(diff, 1 - weight))
    return add(input, mul(diff, weight))


def xlogy(input, other) -> Tensor:
    """input * log(other), and 0 where input == 0 (unless other is NaN), as torch.xlogy."""
    x, y = _operands(input, other)
    x, y = _to_float(x), _to_float(y)
    # Where x = 0 and log(y) is not finite (y <= 0), log(1) = 0 stands in: 0 * log y would
    # be NaN. The product keeps its x-derivative log(y) at x = 0 elsewhere, as PyTorch's.
    unsafe = logical_and(eq(x, 0.0), le(y, 0.0))
    product = mul(x, log(where(unsafe, 1.0, y)))
    return where(ne(y, y), y, product)  # NaN in other stays NaN


def where(condition: Tensor, input, other) -> Tensor:
    if not isinstance(condition, Tensor) or condition.dtype != dtypes.bool_:
        raise dispatch.user_error(ShapeError, "where: the condition must be a bool tensor")
    a, b = _operands(input, other)
    shape = _broadcast("where", tuple(condition.shape), tuple(a.shape))
    return apply(
        "where", (broadcast_to(condition, shape), broadcast_to(a, shape), broadcast_to(b, shape))
    )


def _compare(op: str):
    def fn(input, other) -> Tensor:
        return apply(op, _operands(input, other))

    fn.__name__ = op
    return fn


eq = _compare("eq")
ne = _compare("ne")
lt = _compare("lt")
le = _compare("le")
gt = _compare("gt")
ge = _compare("ge")


def logical_not(input: Tensor) -> Tensor:
    return apply("logical_not", (cast(input, dtypes.bool_),))


def logical_and(input, other) -> Tensor:
    a, b = _operands(input, other)
    return apply("logical_and", (cast(a, dtypes.bool_), cast(b, dtypes.bool_)))


def logical_or(input, other) -> Tensor:
    a, b = _operands(input, other)
    return apply("logical_or", (cast(a, dtypes.bool_), cast(b, dtypes.bool_)))


# ---- shapes -------------------------------------------------------------------------------


def _dim(d: int, rank: int, op: str) -> int:
    return normalize_axes(op, (d,), rank)[0] if rank else 0


def reshape(input: Tensor, *shape) -> Tensor:
    shape = list(_size(shape))
    n = input.numel()
    if shape.count(-1) > 1:
        raise dispatch.user_error(
            ShapeError, f"view/reshape: only one dimension can be -1, got {shape}"
        )
    if -1 in shape:
        rest = 1
        for d in shape:
            if d != -1:
                rest *= d
        if rest == 0 or n % rest:
            raise dispatch.user_error(
                ShapeError,
                f"view/reshape: shape {shape} is invalid for input of size {n} "
                f"(a tensor of shape {list(input.shape)}); the other sizes must divide {n}",
            )
        shape[shape.index(-1)] = n // rest
    if tuple(shape) == tuple(input.shape):
        return input
    return apply("reshape", (input,), shape=tuple(shape))


view = reshape


def flatten(input: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    if input.ndim == 0:
        return reshape(input, 1)
    s = _dim(start_dim, input.ndim, "flatten")
    e = _dim(end_dim, input.ndim, "flatten")
    shape = list(input.shape)
    n = 1
    for d in shape[s : e + 1]:
        n *= d
    return reshape(input, shape[:s] + [n] + shape[e + 1 :])


def unsqueeze(input: Tensor, dim: int) -> Tensor:
    d = normalize_axes("unsqueeze", (dim,), input.ndim + 1)[0]
    shape = list(input.shape)
    shape.insert(d, 1)
    return reshape(input, shape)


def squeeze(input: Tensor, dim=None) -> Tensor:
    shape = list(input.shape)
    if dim is None:
        return reshape(input, [d for d in shape if d != 1])
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    axes = normalize_axes("squeeze", dims, input.ndim)
    return reshape(input, [d for i, d in enumerate(shape) if not (i in axes and d == 1)])


def permute(input: Tensor, *dims) -> Tensor:
    perm = normalize_axes_unsorted(_size(dims), input.ndim, "permute")
    if perm == tuple(range(input.ndim)):
        return input
    return apply("transpose", (input,), perm=perm)


def normalize_axes_unsorted(dims, rank: int, op: str) -> tuple[int, ...]:
    out = tuple(d % rank if rank else 0 for d in dims)
    if sorted(out) != list(range(rank)) or builtins.any(not -rank <= d < rank for d in dims):
        raise dispatch.user_error(
            ShapeError, f"{op}: {list(dims)} is not a permutation of {rank} dimensions"
        )
    return out


def transpose(input: Tensor, dim0: int, dim1: int) -> Tensor:
    perm = list(range(input.ndim))
    a, b = _dim(dim0, input.ndim, "transpose"), _dim(dim1, input.ndim, "transpose")
    perm[a], perm[b] = perm[b], perm[a]
    return permute(input, *perm)


def t(input: Tensor) -> Tensor:
    if input.ndim > 2:
        raise dispatch.user_error(
            ShapeError, f"t() expects a tensor with <= 2 dimensions, got {input.ndim}"
        )
    return transpose(input, 0, 1) if input.ndim == 2 else input


def broadcast_to(input: Tensor, shape) -> Tensor:
    shape = tuple(shape)
    if tuple(input.shape) == shape:
        return input
    if input.numel() == _numel(shape):
        return reshape(input, shape)  # only adds or drops size-1 dims
    return apply("broadcast_to", (input,), shape=shape)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def expand(input: Tensor, *sizes) -> Tensor:
    sizes = list(_size(sizes))
    lead = len(sizes) - input.ndim
    shape = [input.shape[i - lead] if d == -1 else d for i, d in enumerate(sizes)]
    return broadcast_to(input, shape)


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    tensors = list(tensors)
    if not tensors:
        raise dispatch.user_error(ShapeError, "cat: expects a non-empty list of tensors")
    dt = tensors[0].dtype
    for x in tensors[1:]:
        dt = dtypes.promote(dt, x.dtype)
    d = _dim(dim, tensors[0].ndim, "cat")
    if len(tensors) == 1:
        return tensors[0]
    return apply("concat", [cast(x, dt) for x in tensors], axis=d)


concat = cat


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    tensors = list(tensors)
    if not tensors:
        raise dispatch.user_error(ShapeError, "stack: expects a non-empty list of tensors")
    d = normalize_axes("stack", (dim,), tensors[0].ndim + 1)[0]
    return cat([unsqueeze(x, d) for x in tensors], d)


def getitem(input: Tensor, index) -> Tensor:
    """Basic indexing: ints, slices (positive steps), None and Ellipsis."""
    if not isinstance(index, tuple):
        index = (index,)
    if builtins.any(isinstance(i, (Tensor, list, np.ndarray)) for i in index):
        raise dispatch.user_error(
            GraphcError,
            "indexing with tensors or lists (advanced indexing) is not "
            "supported; use graphc.where or one_hot-style masks",
        )
    n_real = builtins.sum(1 for i in index if i is not None and i is not Ellipsis)
    if n_real > input.ndim:
        raise IndexError(f"too many indices for a tensor of dimension {input.ndim}")
    if Ellipsis in index:
        k = index.index(Ellipsis)
        index = index[:k] + (slice(None),) * (input.ndim - n_real) + index[k + 1 :]
    out, axis, shape = input, 0, []
    for i in index:
        if i is None:
            shape.append(1)
            continue
        size = out.shape[axis]
        if isinstance(i, (int, np.integer)):
            j = int(i) + size if i < 0 else int(i)
            if not 0 <= j < size:
                raise IndexError(
                    f"index {i} is out of bounds for dimension {axis} with size {size}"
                )
            out = apply("slice", (out,), axis=axis, start=j, stop=j + 1, step=1)
        elif isinstance(i, slice):
            start, stop, step = i.indices(size)
            if step < 1:
                raise dispatch.user_error(GraphcError, "negative slice steps are not supported")
            stop = builtins.max(stop, start)
            if (start, stop, step) != (0, size, 1):
                out = apply("slice", (out,), axis=axis, start=start, stop=stop, step=step)
            shape.append(out.shape[axis])
        else:
            raise dispatch.user_error(GraphcError, f"unsupported index {i!r}")
        axis += 1
    shape += list(out.shape[axis:])
    return reshape(out, shape)


# ---- reductions ---------------------------------------------------------------------------


def _axes(input: Tensor, dim) -> tuple[int, ...]:
    if dim is None:
        return tuple(range(input.ndim))
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    return normalize_axes("reduce", dims, input.ndim)


def sum(input: Tensor, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    if dtype is not None:
        input = cast(input, dtype)
    elif not input.dtype.is_floating_point:
        input = cast(input, dtypes.int64)  # PyTorch sums bools and ints as int64
    return apply("reduce_sum", (input,), axes=_axes(input, dim), keepdims=keepdim)


def mean(input: Tensor, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    if dtype is not None:
        input = cast(input, dtype)
    if not input.dtype.is_floating_point:
        raise dispatch.user_error(
            GraphcError,
            f"mean(): input dtype must be floating point, got {input.dtype.name} "
            "(use .float() first)",
        )
    axes = _axes(input, dim)
    n = 1
    for a in axes:
        n *= input.shape[a]
    total = apply("reduce_sum", (input,), axes=axes, keepdims=keepdim)
    return div(total, full(total.shape, float(n), dtype=input.dtype))


def var(
    input: Tensor,
    dim=None,
    unbiased: bool | None = None,
    keepdim: bool = False,
    *,
    correction: int | None = None,
) -> Tensor:
    if correction is None:
        correction = 0 if unbiased is False else 1
    axes = _axes(input, dim)
    n = 1
    for a in axes:
        n *= input.shape[a]
    centered = sub(input, mean(input, axes, keepdim=True))
    total = sum(mul(centered, centered), axes, keepdim=keepdim)
    return div(total, float(builtins.max(n - correction, 0)))


def std(
    input: Tensor,
    dim=None,
    unbiased: bool | None = None,
    keepdim: bool = False,
    *,
    correction: int | None = None,
) -> Tensor:
    return sqrt(var(input, dim, unbiased, keepdim, correction=correction))


def amax(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    return apply("reduce_max", (input,), axes=_axes(input, dim), keepdims=keepdim)


def amin(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    return neg(amax(neg(input), dim, keepdim))


def max(input: Tensor, dim=None, keepdim: bool = False):
    """max(x): the largest value; max(x, dim): (values, indices); max(x, y): elementwise."""
    if isinstance(dim, Tensor):
        return maximum(input, dim)
    if dim is None:
        return amax(input)
    return MaxResult(amax(input, dim, keepdim), argmax(input, dim, keepdim))


def min(input: Tensor, dim=None, keepdim: bool = False):
    if isinstance(dim, Tensor):
        return minimum(input, dim)
    if dim is None:
        return amin(input)
    return MaxResult(amin(input, dim, keepdim), argmin(input, dim, keepdim))


def argmax(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    if dim is None:
        out = apply("argmax", (reshape(input, -1),), axis=0, keepdims=False)
        return reshape(out, [1] * input.ndim) if keepdim else out
    return apply("argmax", (input,), axis=_dim(dim, input.ndim, "argmax"), keepdims=keepdim)


def argmin(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    x = neg(input) if input.dtype != dtypes.bool_ else logical_not(input)
    return argmax(x, dim, keepdim)


def any(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    return gt(sum(cast(input, dtypes.int64), dim, keepdim), 0)


def all(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    return logical_not(any(logical_not(input), dim, keepdim))


# ---- linear algebra and nn helpers ----------------------------------------------------------


def matmul(input: Tensor, other: Tensor) -> Tensor:
    a, b = input, other
    if a.ndim == 0 or b.ndim == 0:
        raise dispatch.user_error(ShapeError, "matmul: both arguments need at least 1 dimension")
    dt = _result_type(a, b)
    a, b = cast(a, dt), cast(b, dt)
    squeeze_rows = a.ndim == 1
    squeeze_cols = b.ndim == 1
    if squeeze_rows:
        a = reshape(a, 1, a.shape[0])
    if squeeze_cols:
        b = reshape(b, b.shape[0], 1)
    if a.shape[-1] != b.shape[-2]:
        raise dispatch.user_error(
            ShapeError,
            f"matmul: mat1 and mat2 shapes cannot be multiplied "
            f"({'x'.join(map(str, input.shape))} and "
            f"{'x'.join(map(str, other.shape))}); mat1's columns must equal mat2's rows",
        )
    if b.ndim == 2 and a.ndim > 2:  # fold the batch into rows: one large matrix product
        lead = list(a.shape[:-1])
        out = apply("matmul", (reshape(a, -1, a.shape[-1]), b))
        out = reshape(out, lead + [b.shape[-1]])
    else:
        batch = _broadcast("matmul", tuple(a.shape[:-2]), tuple(b.shape[:-2]))
        a = broadcast_to(a, batch + tuple(a.shape[-2:]))
        b = broadcast_to(b, batch + tuple(b.shape[-2:]))
        out = apply("matmul", (a, b))
    if squeeze_rows:
        out = squeeze(out, -2)
    if squeeze_cols:
        out = squeeze(out, -1)
    return out


mm = matmul


def softmax(input: Tensor, dim: int) -> Tensor:
    x = _to_float(input)
    return apply("softmax", (x,), axis=_dim(dim, x.ndim, "softmax"))


def log_softmax(input: Tensor, dim: int) -> Tensor:
    x = _to_float(input)
    return apply("log_softmax", (x,), axis=_dim(dim, x.ndim, "log_softmax"))


# ---- creation -----------------------------------------------------------------------------


def tensor(data: Any, *, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    try:
        array = _as_array(data)
    except ValueError as e:
        raise dispatch.user_error(ShapeError, f"graphc.tensor: {e}") from None
    except TypeError as e:
        raise dispatch.user_error(ArgumentError, f"graphc.tensor: {e}") from None
    if dtype is not None:
        array = array.astype(dtypes.get(dtype).np)
    t = dispatch.current().constant(np.array(array, copy=True))
    if requires_grad:
        t.requires_grad = True
    return t


def as_tensor(data: Any, dtype: DType | None = None) -> Tensor:
    if isinstance(data, Tensor):
        return data if dtype is None else cast(data, dtype)
    return tensor(data, dtype=dtype)


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing memory with `array` (eager), as torch.from_numpy."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy expects a numpy.ndarray, got {type(array).__name__}")
    dtypes.from_numpy(array.dtype)
    return dispatch.current().constant(array)


def zeros(*size, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    return full(_size(size), 0.0, dtype=dtype or dtypes.default_float, requires_grad=requires_grad)


def ones(*size, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    return full(_size(size), 1.0, dtype=dtype or dtypes.default_float, requires_grad=requires_grad)


def empty(*size, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    return zeros(*size, dtype=dtype, requires_grad=requires_grad)


def zeros_like(input: Tensor, *, dtype: DType | None = None) -> Tensor:
    return full(input.shape, 0, dtype=dtype or input.dtype)


def ones_like(input: Tensor, *, dtype: DType | None = None) -> Tensor:
    return full(input.shape, 1, dtype=dtype or input.dtype)


def full_like(input: Tensor, fill_value, *, dtype: DType | None = None) -> Tensor:
    return full(input.shape, fill_value, dtype=dtype or input.dtype)


def arange(start, end=None, step=1, *, dtype: DType | None = None) -> Tensor:
    if end is None:
        start, end = 0, start
    if dtype is None:
        is_float = builtins.any(isinstance(v, float) for v in (start, end, step))
        dtype = dtypes.default_float if is_float else dtypes.int64
    if step == 0:
        raise dispatch.user_error(GraphcError, "arange: step must be nonzero")
    n = builtins.max(0, int(np.ceil((end - start) / step)))
    return apply("arange", (), start=start, step=step, size=n, dtype=dtypes.get(dtype))


def rand(*size, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    shape = _size(size)
    seed, offset = dispatch.current().rng(int(np.prod(shape, dtype=np.int64)))
    t = apply("rng_uniform", (seed, offset), shape=shape, dtype=dtype or dtypes.default_float)
    if requires_grad:
        t.requires_grad = True
    return t


def randn(*size, dtype: DType | None = None, requires_grad: bool = False) -> Tensor:
    shape = _size(size)
    seed, offset = dispatch.current().rng(2 * int(np.prod(shape, dtype=np.int64)))
    t = apply("rng_normal", (seed, offset), shape=shape, dtype=dtype or dtypes.default_float)
    if requires_grad:
        t.requires_grad = True
    return t


def rand_like(input: Tensor) -> Tensor:
    return rand(input.shape, dtype=input.dtype)


def randn_like(input: Tensor) -> Tensor:
    return randn(input.shape, dtype=input.dtype)


def randint(low: int, high: int | None = None, size=(), *, dtype: DType | None = None) -> Tensor:
    if high is None:
        low, high = 0, low
    u = rand(size, dtype=dtypes.float64)
    return cast(add(mul(u, float(high - low)), float(low)), dtype or dtypes.int64)


# ---- Tensor methods -----------------------------------------------------------------------

_METHODS = [
    "exp",
    "log",
    "erf",
    "log1p",
    "expm1",
    "sqrt",
    "rsqrt",
    "tanh",
    "sigmoid",
    "relu",
    "abs",
    "neg",
    "sign",
    "square",
    "clamp",
    "clamp_min",
    "clamp_max",
    "clip",
    "lerp",
    "pow",
    "xlogy",
    "maximum",
    "minimum",
    "reshape",
    "view",
    "flatten",
    "unsqueeze",
    "squeeze",
    "permute",
    "transpose",
    "t",
    "expand",
    "sum",
    "mean",
    "var",
    "std",
    "amax",
    "amin",
    "max",
    "min",
    "argmax",
    "argmin",
    "any",
    "all",
    "matmul",
    "softmax",
    "log_softmax",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "add",
    "sub",
    "mul",
    "div",
    "logical_not",
    "logical_and",
    "logical_or",
]
for _name in _METHODS:
    setattr(Tensor, _name, globals()[_name])
Tensor.multiply = mul
Tensor.subtract = sub
Tensor.divide = div
Tensor.expand_as = lambda self, other: broadcast_to(self, other.shape)
Tensor.view_as = lambda self, other: reshape(self, other.shape)
Tensor.reshape_as = Tensor.view_as
Tensor.T = property(lambda self: permute(self, *reversed(range(self.ndim))))
