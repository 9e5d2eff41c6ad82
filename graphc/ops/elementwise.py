"""Elementwise ops: operands of one shape and dtype (broadcasting and promotion are explicit)."""

from __future__ import annotations

import math

import numpy as np

from graphc import dtypes
from graphc.errors import ShapeError
from graphc.ir import TensorType
from graphc.ops.registry import NoGrad, defop, require_float, same_type

EW = ("elementwise",)


def _unary_float(name: str):
    def rule(x: TensorType) -> TensorType:
        require_float(name, x)
        return x

    return rule


def _binary(name: str):
    def rule(a: TensorType, b: TensorType) -> TensorType:
        return same_type(name, a, b)

    return rule


def _binary_float(name: str):
    def rule(a: TensorType, b: TensorType) -> TensorType:
        t = same_type(name, a, b)
        require_float(name, t)
        return t

    return rule


def _numeric(name: str, why: str):
    """Rule of ops PyTorch refuses on bool tensors (numpy has no bool loop for them either)."""

    def rule(*ts: TensorType) -> TensorType:
        t = same_type(name, *ts)
        if t.dtype == dtypes.bool_:
            raise ShapeError(f"{name}: not supported on bool tensors {t}; {why}")
        return t

    return rule


INVERT_MASK = "to invert a mask use logical_not (~)"


def _flops_per_elem(k: int):
    return lambda out, *ins, **attrs: k * out.numel


# ---- arithmetic ---------------------------------------------------------------------------

defop(
    "add",
    type_rule=_binary("add"),
    ref=np.add,
    arity=2,
    traits=EW,
    flops=_flops_per_elem(1),
    vjp=lambda b, g, out, x, y: (g, g),
)
defop(
    "sub",
    type_rule=_numeric("sub", INVERT_MASK),
    ref=np.subtract,
    arity=2,
    traits=EW,
    flops=_flops_per_elem(1),
    vjp=lambda b, g, out, x, y: (g, b.neg(g)),
)
defop(
    "mul",
    type_rule=_binary("mul"),
    ref=np.multiply,
    arity=2,
    traits=EW,
    flops=_flops_per_elem(1),
    vjp=lambda b, g, out, x, y: (b.mul(g, y), b.mul(g, x)),
)
defop(
    "div",
    type_rule=_binary_float("div"),
    ref=np.divide,
    arity=2,
    traits=EW,
    flops=_flops_per_elem(1),
    # d(x/y)/dy = -x/y^2 = -out/y
    vjp=lambda b, g, out, x, y: (b.div(g, y), b.neg(b.div(b.mul(g, out), y))),
)
defop(
    "neg",
    type_rule=_numeric("neg", INVERT_MASK),
    ref=np.negative,
    arity=1,
    traits=EW,
    flops=_flops_per_elem(1),
    vjp=lambda b, g, out, x: (b.neg(g),),
)


def _max_min_vjp(cmp: str):
    # PyTorch: ties split the cotangent in half between the two operands.
    def vjp(b, g, out, x, y):
        zero = b.full_like(g, 0.0)
        half = b.mul(g, b.full_like(g, 0.5))
        tie = b.eq(x, y)
        x_wins = b.emit(cmp, [x, y])
        gx = b.where(tie, half, b.where(x_wins, g, zero))
        gy = b.where(tie, half, b.where(x_wins, zero, g))
        return gx, gy

    return vjp


defop(
    "maximum",
    type_rule=_binary("maximum"),
    ref=np.maximum,
    arity=2,
    traits=EW,
    flops=_flops_per_elem(1),
    vjp=_max_min_vjp("gt"),
)
defop(
    "minimum",
    type_rule=_binary("minimum"),
    ref=np.minimum,
    arity=2,
    traits=EW,
    flops=_flops_per_elem(1),
    vjp=_max_min_vjp("lt"),
)


def _pow_rule(x: TensorType, exponent: float) -> TensorType:
    require_float("pow", x)
    if isinstance(exponent, bool) or not isinstance(exponent, (int, float)):
        raise ShapeError(f"pow: the exponent must be a Python number, got {exponent!r}")
    return x


def _pow_ref(x, exponent):
    return np.power(x, x.dtype.type(exponent))


def _pow_vjp(b, g, out, x, exponent):
    if exponent == 0:
        return (b.full_like(x, 0.0),)
    d = b.mul(b.full_like(x, exponent), b.pow(x, exponent=exponent - 1.0))
    return (b.mul(g, d),)


defop(
    "pow",
    type_rule=_pow_rule,
    ref=_pow_ref,
    arity=1,
    traits=EW,
    attrs={"exponent": 2.0},
    flops=_flops_per_elem(1),
    vjp=_pow_vjp,
    doc="x ** exponent for a constant exponent",
)

# ---- transcendental -----------------------------------------------------------------------

defop(
    "exp",
    type_rule=_unary_float("exp"),
    ref=np.exp,
    arity=1,
    traits=EW,
    flops=_flops_per_elem(1),
    vjp=lambda b, g, out, x: (b.mul(g, out),),
)
defop(
    "log",
    type_rule=_unary_float("log"),
    ref=np.log,
    arity=1,
    traits=EW,
    flops=_flops_per_elem(1),
    vjp=lambda b, g, out, x: (b.div(g, x),),
)
defop(
    "sqrt",
    type_rule=_unary_float("sqrt"),
    ref=np.sqrt,
    arity=1,
    traits=EW,
    flops=_flops_per_elem(1),
    vjp=lambda b, g, out, x: (b.div(g, b.mul(b.full_like(out, 2.0), out)),),
)


def _rsqrt_ref(x):
    return (1.0 / np.sqrt(x)).astype(x.dtype, copy=False)


defop(
    "rsqrt",
    type_rule=_unary_float("rsqrt"),
    ref=_rsqrt_ref,
    arity=1,
    traits=EW,
    flops=_flops_per_elem(2),
    # d x^-1/2 = -1/2 x^-3/2 = -1/2 out^3
    vjp=lambda b, g, out, x: (
        b.mul(g, b.mul(b.full_like(out, -0.5), b.mul(out, b.mul(out, out)))),
    ),
)
defop(
    "tanh",
    type_rule=_unary_float("tanh"),
    ref=np.tanh,
    arity=1,
    traits=EW,
    flops=_flops_per_elem(1),
    vjp=lambda b, g, out, x: (b.mul(g, b.sub(b.full_like(out, 1.0), b.mul(out, out))),),
)

defop(
    "log1p",
    type_rule=_unary_float("log1p"),
    ref=np.log1p,
    arity=1,
    traits=EW,
    flops=_flops_per_elem(1),
    vjp=lambda b, g, out, x: (b.div(g, b.add(x, b.full_like(x, 1.0))),),
    doc="log(1 + x), accurate where x is tiny (log_sigmoid, softplus, binary cross-entropy)",
)
defop(
    "expm1",
    type_rule=_unary_float("expm1"),
    ref=np.expm1,
    arity=1,
    traits=EW,
    flops=_flops_per_elem(1),
    vjp=lambda b, g, out, x: (b.mul(g, b.add(out, b.full_like(out, 1.0))),),
    doc="exp(x) - 1, accurate where x is tiny (ELU)",
)

_ERF = np.frompyfunc(math.erf, 1, 1)


def _erf_ref(x):
    # numpy has no erf: the C library's double-precision erf, element by element, rounded
    # once to x's dtype. (A pure-numpy series was tried: slower and a few ulp less exact.)
    return np.asarray(_ERF(x.astype(np.float64)), np.float64).astype(x.dtype)


def _erf_vjp(b, g, out, x):
    # d erf(x) = 2/sqrt(pi) exp(-x^2)
    slope = b.exp(b.neg(b.mul(x, x)))
    return (b.mul(g, b.mul(b.full_like(x, 2.0 / math.sqrt(math.pi)), slope)),)


defop(
    "erf",
    type_rule=_unary_float("erf"),
    ref=_erf_ref,
    arity=1,
    traits=EW,
    flops=_flops_per_elem(1),
    vjp=_erf_vjp,
    doc="the error function (exact GELU)",
)


def _sigmoid_ref(x):
    # Stable for large |x|: never exponentiates a large positive number.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


defop(
    "sigmoid",
    type_rule=_unary_float("sigmoid"),
    ref=_sigmoid_ref,
    arity=1,
    traits=EW,
    flops=_flops_per_elem(3),
    vjp=lambda b, g, out, x: (b.mul(g, b.mul(out, b.sub(b.full_like(out, 1.0), out))),),
)


def _relu_vjp(b, g, out, x):
    # PyTorch's threshold_backward: the cotangent passes where the result is positive.
    zero = b.full_like(out, 0.0)
    return (b.where(b.gt(out, zero), g, zero),)


defop(
    "relu",
    type_rule=_numeric("relu", "cast to a number type first"),
    ref=lambda x: np.maximum(x, x.dtype.type(0)),
    arity=1,
    traits=EW,
    flops=_flops_per_elem(1),
    vjp=_relu_vjp,
)


def _sign_ref(x):
    # PyTorch: the sign of a bool is the bool itself (numpy has no bool loop for sign)
    return x.copy() if x.dtype == np.bool_ else np.sign(x)


defop(
    "abs",
    type_rule=_numeric("abs", "cast to a number type first"),
    ref=np.abs,
    arity=1,
    traits=EW,
    flops=_flops_per_elem(1),
    vjp=lambda b, g, out, x: (b.mul(g, b.sign(x)),),
)
defop(
    "sign",
    type_rule=lambda x: x,
    ref=_sign_ref,
    arity=1,
    traits=EW,
    flops=_flops_per_elem(1),
    vjp=NoGrad("sign is piecewise constant: its derivative is zero almost everywhere"),
)

# ---- comparisons and logic (bool results, no derivative) -----------------------------------


def _compare(name: str, fn):
    def rule(a: TensorType, b: TensorType) -> TensorType:
        return same_type(name, a, b).with_dtype(dtypes.bool_)

    defop(
        name,
        type_rule=rule,
        ref=fn,
        arity=2,
        traits=EW,
        flops=_flops_per_elem(1),
        vjp=NoGrad("comparisons have boolean results"),
    )


for _name, _fn in [
    ("eq", np.equal),
    ("ne", np.not_equal),
    ("lt", np.less),
    ("le", np.less_equal),
    ("gt", np.greater),
    ("ge", np.greater_equal),
]:
    _compare(_name, _fn)


def _logic_rule(name: str):
    def rule(*ts: TensorType) -> TensorType:
        t = same_type(name, *ts)
        if t.dtype != dtypes.bool_:
            raise ShapeError(f"{name}: needs bool tensors, got {t}")
        return t

    return rule


defop(
    "logical_and",
    type_rule=_logic_rule("logical_and"),
    ref=np.logical_and,
    arity=2,
    traits=EW,
    vjp=NoGrad("boolean"),
)
defop(
    "logical_or",
    type_rule=_logic_rule("logical_or"),
    ref=np.logical_or,
    arity=2,
    traits=EW,
    vjp=NoGrad("boolean"),
)
defop(
    "logical_not",
    type_rule=_logic_rule("logical_not"),
    ref=np.logical_not,
    arity=1,
    traits=EW,
    vjp=NoGrad("boolean"),
)


def _where_rule(c: TensorType, a: TensorType, b: TensorType) -> TensorType:
    if c.dtype != dtypes.bool_:
        raise ShapeError(f"where: the condition must be bool, got {c}")
    if c.shape != a.shape:
        raise ShapeError(f"where: condition {c} and values {a} differ in shape")
    return same_type("where", a, b)


def _where_vjp(b, g, out, c, x, y):
    zero = b.full_like(g, 0.0)
    return None, b.where(c, g, zero), b.where(c, zero, g)


defop(
    "where",
    type_rule=_where_rule,
    ref=np.where,
    arity=3,
    traits=EW,
    vjp=_where_vjp,
    doc="where(cond, a, b): a where cond holds, else b",
)


def _cast_ref(x, dtype):
    return x.astype(dtype.np)


def _cast_vjp(b, g, out, x, dtype):
    if not (x.dtype.is_floating_point and dtype.is_floating_point):
        return (None,)
    return (b.cast(g, dtype=x.dtype),)


defop(
    "cast",
    type_rule=lambda x, dtype: x.with_dtype(dtype),
    ref=_cast_ref,
    arity=1,
    attrs={"dtype": dtypes.float32},
    traits=EW,
    vjp=_cast_vjp,
    doc="converts the element type; only float-to-float casts carry a gradient",
)

defop(
    "copy",
    type_rule=lambda x: x,
    ref=lambda x: np.array(x, copy=True),
    arity=1,
    traits=EW,
    vjp=lambda b, g, out, x: (g,),
    doc="a fresh copy (Tensor.clone); values are immutable in the IR, so passes drop it",
)

defop(
    "stop_gradient",
    type_rule=lambda x: x,
    ref=lambda x: x,
    arity=1,
    traits=EW,
    vjp=lambda b, g, out, x: (None,),
    doc="identity whose derivative is zero: marks values computed with gradients disabled",
)
