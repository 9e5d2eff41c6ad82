"""Scalar lowering of elementwise ops: one entry per op, matching its numpy reference.

Values live in registers as their natural LLVM types (bool as i1) and in memory as the
dtype's storage type (bool as i8). NaN behaves as in numpy: maximum/minimum/relu/reductions
propagate it, comparisons with it are false (except `ne`). Float ops carry fast-math flags
that allow contraction (FMA) but never assume the absence of NaN or infinity, nor replace a
division by a reciprocal multiplication. Only sums may be reassociated (that is what lets LLVM
vectorise a reduction, and it changes nothing but rounding): reassociating elementwise
expressions changes their NaN and inf results (x - 0.1*x at x = inf is NaN in numpy but
0.9*x is inf; exp(log(x)) would fold to x, which is not NaN for x < 0).
"""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from graphc import dtypes
from graphc.dtypes import DType
from graphc.ir import Node

FLAGS = ("reassoc", "contract", "nsz")  # accumulations; no arcp: x / c stays a division
ELEMENTWISE_FLAGS = ("contract", "nsz")  # no reassoc: see the module docstring
I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
F32, F64 = ir.FloatType(), ir.DoubleType()
PTR = ir.PointerType()

_MEMORY = {
    dtypes.float32: F32,
    dtypes.float64: F64,
    dtypes.int64: I64,
    dtypes.int32: I32,
    dtypes.bool_: I8,
}


def memory_type(dtype: DType) -> ir.Type:
    return _MEMORY[dtype]


def register_type(dtype: DType) -> ir.Type:
    return I1 if dtype == dtypes.bool_ else _MEMORY[dtype]


def constant(dtype: DType, value) -> ir.Constant:
    t = register_type(dtype)
    if dtype.is_floating_point:
        return ir.Constant(t, float(value))
    return ir.Constant(t, int(bool(value)) if dtype == dtypes.bool_ else int(value))


def load(b: ir.IRBuilder, ptr, dtype: DType, name: str = ""):
    v = b.load(ptr, typ=memory_type(dtype), name=name)
    return b.icmp_unsigned("!=", v, ir.Constant(I8, 0)) if dtype == dtypes.bool_ else v


def store(b: ir.IRBuilder, value, ptr, dtype: DType) -> None:
    if dtype == dtypes.bool_:
        value = b.zext(value, I8)
    b.store(value, ptr)


def intrinsic(b: ir.IRBuilder, name: str, t: ir.Type, *args):
    fn = b.module.declare_intrinsic(name, [t])
    return b.call(fn, list(args), fastmath=ELEMENTWISE_FLAGS if name != "llvm.pow" else ())


# ---- the lowering table --------------------------------------------------------------------

Lowering = Callable[[ir.IRBuilder, Node, list], ir.Value]
ELEMENTWISE: dict[str, Lowering] = {}


def lowers(*names: str):
    def register(fn: Lowering) -> Lowering:
        for n in names:
            ELEMENTWISE[n] = fn
        return fn

    return register


def _isf(node: Node) -> bool:
    return node.dtype.is_floating_point


@lowers("add", "sub", "mul")
def _arith(b, node, args):
    x, y = args
    if _isf(node):
        op = {"add": b.fadd, "sub": b.fsub, "mul": b.fmul}[node.op]
        return op(x, y, flags=ELEMENTWISE_FLAGS)
    if node.dtype == dtypes.bool_:  # numpy: bool + bool is `or`, bool * bool is `and`
        return {"add": b.or_, "mul": b.and_, "sub": b.xor}[node.op](x, y)
    return {"add": b.add, "sub": b.sub, "mul": b.mul}[node.op](x, y)


@lowers("div")
def _div(b, node, args):
    return b.fdiv(args[0], args[1], flags=ELEMENTWISE_FLAGS)


@lowers("neg")
def _neg(b, node, args):
    return b.fneg(args[0]) if _isf(node) else b.neg(args[0])


def _nan_or(b, x, picked):
    """picked, unless x is NaN (then x): numpy's NaN propagation for max-like ops."""
    return b.select(b.fcmp_unordered("uno", x, x), x, picked)


@lowers("maximum", "minimum")
def _maxmin(b, node, args):
    x, y = args
    if _isf(node):
        cmp = ">" if node.op == "maximum" else "<"
        picked = b.select(b.fcmp_ordered(cmp, x, y), x, y)
        return _nan_or(b, x, picked)
    if node.dtype == dtypes.bool_:
        return b.or_(x, y) if node.op == "maximum" else b.and_(x, y)
    cmp = ">" if node.op == "maximum" else "<"
    return b.select(b.icmp_signed(cmp, x, y), x, y)


@lowers("relu")
def _relu(b, node, args):
    (x,) = args
    zero = constant(node.dtype, 0)
    if _isf(node):  # x < 0 ? 0 : x keeps NaN (and -0.0, as numpy's maximum(-0.0, 0) does)
        return b.select(b.fcmp_ordered("<", x, zero), zero, x)
    return b.select(b.icmp_signed("<", x, zero), zero, x)


@lowers("abs")
def _abs(b, node, args):
    (x,) = args
    if _isf(node):
        return intrinsic(b, "llvm.fabs", x.type, x)
    return b.select(b.icmp_signed("<", x, constant(node.dtype, 0)), b.neg(x), x)


@lowers("sign")
def _sign(b, node, args):
    (x,) = args
    one, zero, minus = (constant(node.dtype, v) for v in (1, 0, -1))
    if _isf(node):
        pos = b.select(b.fcmp_ordered(">", x, zero), one, zero)
        s = b.select(b.fcmp_ordered("<", x, zero), minus, pos)
        return _nan_or(b, x, s)
    pos = b.select(b.icmp_signed(">", x, zero), one, zero)
    return b.select(b.icmp_signed("<", x, zero), minus, pos)


def _unary_intrinsic(name):
    def lower(b, node, args):
        return intrinsic(b, name, args[0].type, args[0])

    return lower


def exp(b: ir.IRBuilder, x, dtype: DType):
    """exp of a float32 as vectorisable arithmetic (codegen/vmath.py), else the intrinsic."""
    if dtype == dtypes.float32:
        from graphc.codegen.vmath import exp_f32

        return exp_f32(b, x)
    return intrinsic(b, "llvm.exp", x.type, x)


@lowers("exp")
def _exp(b, node, args):
    return exp(b, args[0], node.dtype)


ELEMENTWISE["log"] = _unary_intrinsic("llvm.log")
ELEMENTWISE["sqrt"] = _unary_intrinsic("llvm.sqrt")


@lowers("batch_norm")
def _batch_norm(b, node, args):
    x, mean, invstd, weight, bias = args
    centered = b.fsub(x, mean, flags=ELEMENTWISE_FLAGS)
    scaled = b.fmul(
        b.fmul(centered, invstd, flags=ELEMENTWISE_FLAGS), weight, flags=ELEMENTWISE_FLAGS
    )
    return b.fadd(scaled, bias, flags=ELEMENTWISE_FLAGS)


@lowers("rsqrt")
def _rsqrt(b, node, args):
    (x,) = args
    root = intrinsic(b, "llvm.sqrt", x.type, x)
    return b.fdiv(constant(node.dtype, 1.0), root)  # exact division, as the reference


@lowers("log1p", "expm1")
def _libm_unary(b, node, args):
    return _libm_call(b, node.op, node.dtype, args[0])


@lowers("erf")
def _erf(b, node, args):
    if node.dtype == dtypes.float32:
        from graphc.codegen.vmath import erf_f32

        return erf_f32(b, args[0])
    return _libm_call(b, "erf", node.dtype, args[0])


@lowers("tanh")
def _tanh(b, node, args):
    if node.dtype == dtypes.float32:
        from graphc.codegen.vmath import tanh_f32

        return tanh_f32(b, args[0])
    return _libm_call(b, "tanh", node.dtype, args[0])


def _libm_call(b, name: str, dtype: DType, x):
    # No LLVM intrinsic computes these: call the C library (tanhf/tanh, erff/erf, ...).
    name = _libm(name, dtype)
    fn = b.module.globals.get(name) or ir.Function(
        b.module, ir.FunctionType(x.type, [x.type]), name
    )
    return b.call(fn, [x])


def _libm(name: str, dtype: DType) -> str:
    return name + ("f" if dtype == dtypes.float32 else "")


@lowers("sigmoid")
def _sigmoid(b, node, args):
    # e = exp(-|x|); x >= 0 ? 1/(1+e) : e/(1+e)  (the reference's stable form)
    (x,) = args
    one = constant(node.dtype, 1.0)
    e = exp(b, b.fneg(intrinsic(b, "llvm.fabs", x.type, x)), node.dtype)
    denom = b.fadd(one, e, flags=ELEMENTWISE_FLAGS)
    pos = b.fdiv(one, denom)
    neg = b.fdiv(e, denom)
    return b.select(b.fcmp_ordered(">=", x, constant(node.dtype, 0.0)), pos, neg)


@lowers("binary_cross_entropy")
def _binary_cross_entropy(b, node, args):
    # (y - 1) * max(log1p(-x), -100) - y * max(log(x), -100), as the reference; the clamps
    # keep NaN (a NaN log is not below the floor)
    x, y = args
    floor = constant(node.dtype, -100.0)

    def clamped(v):
        return b.select(b.fcmp_ordered("<", v, floor), floor, v)

    log_x = clamped(intrinsic(b, "llvm.log", x.type, x))
    log_1mx = clamped(_libm_call(b, "log1p", node.dtype, b.fneg(x)))
    ym1 = b.fsub(y, constant(node.dtype, 1.0), flags=ELEMENTWISE_FLAGS)
    lhs = b.fmul(ym1, log_1mx, flags=ELEMENTWISE_FLAGS)
    return b.fsub(lhs, b.fmul(y, log_x, flags=ELEMENTWISE_FLAGS), flags=ELEMENTWISE_FLAGS)


@lowers("pow")
def _pow(b, node, args):
    (x,) = args
    e = node.attrs["exponent"]
    if e == 2.0:
        return b.fmul(x, x, flags=ELEMENTWISE_FLAGS)
    if e == 1.0:
        return x
    if e == 0.0:
        return constant(node.dtype, 1.0)
    if e == 0.5:
        return intrinsic(b, "llvm.sqrt", x.type, x)
    if e == -1.0:
        return b.fdiv(constant(node.dtype, 1.0), x)
    fn = b.module.declare_intrinsic("llvm.pow", [x.type])
    return b.call(fn, [x, ir.Constant(x.type, e)])


_CMP = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


@lowers(*_CMP)
def _compare(b, node, args):
    x, y = args
    src = node.inputs[0].dtype
    if src.is_floating_point:
        if node.op == "ne":
            return b.fcmp_unordered("!=", x, y)
        return b.fcmp_ordered(_CMP[node.op], x, y)
    if src == dtypes.bool_:
        return b.icmp_unsigned(_CMP[node.op], x, y)
    return b.icmp_signed(_CMP[node.op], x, y)


@lowers("logical_and")
def _and(b, node, args):
    return b.and_(*args)


@lowers("logical_or")
def _or(b, node, args):
    return b.or_(*args)


@lowers("logical_not")
def _not(b, node, args):
    return b.xor(args[0], ir.Constant(I1, 1))


@lowers("where")
def _where(b, node, args):
    return b.select(*args)


@lowers("copy", "stop_gradient")
def _identity(b, node, args):
    return args[0]


@lowers("cast")
def _cast(b, node, args):
    (x,) = args
    src, dst = node.inputs[0].dtype, node.dtype
    if src == dst:
        return x
    t = register_type(dst)
    if dst == dtypes.bool_:
        if src.is_floating_point:
            return b.fcmp_unordered("!=", x, ir.Constant(x.type, 0.0))
        return b.icmp_unsigned("!=", x, ir.Constant(x.type, 0))
    if src == dtypes.bool_:
        return b.uitofp(x, t) if dst.is_floating_point else b.zext(x, t)
    if src.is_floating_point and dst.is_floating_point:
        return b.fptrunc(x, t) if dst.itemsize < src.itemsize else b.fpext(x, t)
    if src.is_floating_point:
        return b.fptosi(x, t)
    if dst.is_floating_point:
        return b.sitofp(x, t)
    return b.trunc(x, t) if dst.itemsize < src.itemsize else b.sext(x, t)


# ---- reductions: (identity, combine) --------------------------------------------------------


def reduce_identity(op: str, dtype: DType):
    if op == "reduce_sum":
        return constant(dtype, 0)
    if dtype.is_floating_point:
        return constant(dtype, float("-inf"))
    return constant(dtype, -(2 ** (8 * dtype.itemsize - 1)))


def reduce_combine(b: ir.IRBuilder, op: str, dtype: DType, acc, x):
    if op == "reduce_sum":
        return b.fadd(acc, x, flags=FLAGS) if dtype.is_floating_point else b.add(acc, x)
    if dtype.is_floating_point:  # max that propagates NaN from either side
        picked = b.select(b.fcmp_ordered(">", x, acc), x, acc)
        return _nan_or(b, x, picked)
    return b.select(b.icmp_signed(">", x, acc), x, acc)
