"""exp, tanh and erf of float32 as straight-line arithmetic, which LLVM's loop vectoriser turns
into vector code (a call to the C library's expf or tanhf keeps a loop scalar: tanhf cost
28 ns an element here, a quarter of an LSTM step's gate arithmetic).

exp(x) = 2^n * e^r with n = round(x / ln 2) and r = x - n ln 2 (ln 2 split in two parts, so
n ln 2 is exact), |r| <= ln(2)/2; e^r is its Taylor polynomial of degree 7 (the first term
left out is below 1e-8 relative); 2^n is built in the exponent bits, in two factors so that
results below the normal range round to subnormals and zero as they should. Within 2 ulp of
the correctly rounded value; inf, -inf and NaN give inf, 0 and NaN.

tanh(x) = sign(x) (1 - e) / (1 + e) with e = exp(-2|x|), except for |x| < 0.4, where that
form would cancel and tanh's own odd Taylor polynomial to x^13 is used (below 5e-9 relative
truncation).

erf(x) = sign(x) |x| P(x^2) for |x| < 0.9 and sign(x) (1 - exp(-x^2) Q(1/|x|)) up to
|x| = 4, beyond which float32's erf is 1; P (degree 6) and Q (degree 8) are least-squares
fits of erf(x)/x and erfc(x) exp(x^2), weighted for relative error, made for this file.
Within 2.5 ulp over [-6, 6]. Float64 keeps the C library's functions.
"""

from __future__ import annotations

from llvmlite import ir

LN2_HI = 0.693359375  # 8 significant bits: n * LN2_HI is exact for |n| < 2^16
LN2_LO = -2.12194440054690583e-4
LOG2E = 1.4426950408889634
EXP_MAX, EXP_MIN = 89.0, -104.0  # beyond them exp is inf and 0 in float32
TAYLOR_EXP = [1.0 / f for f in (1, 1, 2, 6, 24, 120, 720, 5040)]  # 1/k!, k = 0..7
TAYLOR_TANH = [1.0, -1 / 3, 2 / 15, -17 / 315, 62 / 2835, -1382 / 155925, 21844 / 6081075]
TANH_SMALL = 0.4  # below it the odd Taylor polynomial to x^13 (above: 1 - e loses digits)
ERF_SMALL, ERF_ONE = 0.9, 4.0
ERF_P = [1.128379225730896, -0.37612634897232056, 0.11283725500106812, -0.026860978454351425,
         0.005204870831221342, -0.0008185928454622626, 8.553019870305434e-05]  # fmt: skip
ERF_Q = [0.000308747316012159, 0.5583786964416504, 0.04682261124253273, -0.4907864034175873,
         0.542698860168457, -0.30934715270996094, 0.08380886167287827, -0.0010407232912257314,
         -0.003260004334151745]  # fmt: skip

F32, I32 = ir.FloatType(), ir.IntType(32)
FLAGS = ("contract", "nsz")


def _c(value: float) -> ir.Constant:
    return ir.Constant(F32, value)


def _intrinsic(b: ir.IRBuilder, name: str, *args):
    fn = b.module.declare_intrinsic(name, [F32])
    return b.call(fn, list(args))


def _horner(b: ir.IRBuilder, x, coefficients: list[float]):
    """c0 + x (c1 + x (c2 + ...))."""
    acc = _c(coefficients[-1])
    for c in reversed(coefficients[:-1]):
        acc = b.fadd(_c(c), b.fmul(x, acc, flags=FLAGS), flags=FLAGS)
    return acc


def _pow2(b: ir.IRBuilder, n):
    """2^n for an i32 n in [-126, 127], from its exponent bits."""
    bits = b.shl(b.add(n, ir.Constant(I32, 127)), ir.Constant(I32, 23))
    return b.bitcast(bits, F32)


def exp_f32(b: ir.IRBuilder, x):
    clamped = b.select(b.fcmp_ordered("<", x, _c(EXP_MIN)), _c(EXP_MIN), x)
    clamped = b.select(b.fcmp_ordered(">", clamped, _c(EXP_MAX)), _c(EXP_MAX), clamped)
    n_f = _intrinsic(b, "llvm.rint", b.fmul(clamped, _c(LOG2E)))
    r = b.fsub(clamped, b.fmul(n_f, _c(LN2_HI)), flags=FLAGS)
    r = b.fsub(r, b.fmul(n_f, _c(LN2_LO)), flags=FLAGS)
    p = _horner(b, r, TAYLOR_EXP)
    n = b.fptosi(n_f, I32)  # in [-150, 129]: two factors, each a normal power of two
    half = b.ashr(n, ir.Constant(I32, 1))
    scaled = b.fmul(b.fmul(p, _pow2(b, half)), _pow2(b, b.sub(n, half)))
    return b.select(b.fcmp_unordered("uno", x, x), x, scaled)


def tanh_f32(b: ir.IRBuilder, x):
    a = _intrinsic(b, "llvm.fabs", x)
    e = exp_f32(b, b.fmul(a, _c(-2.0)))
    one = _c(1.0)
    large = b.fdiv(b.fsub(one, e, flags=FLAGS), b.fadd(one, e, flags=FLAGS))
    large = _intrinsic_copysign(b, large, x)
    x2 = b.fmul(x, x, flags=FLAGS)
    small = b.fmul(x, _horner(b, x2, TAYLOR_TANH), flags=FLAGS)
    return b.select(b.fcmp_ordered("<", a, _c(TANH_SMALL)), small, large)


def erf_f32(b: ir.IRBuilder, x):
    a = _intrinsic(b, "llvm.fabs", x)
    a2 = b.fmul(a, a, flags=FLAGS)
    small = b.fmul(a, _horner(b, a2, ERF_P), flags=FLAGS)
    q = _horner(b, b.fdiv(_c(1.0), a), ERF_Q)
    large = b.fsub(_c(1.0), b.fmul(exp_f32(b, b.fneg(a2)), q, flags=FLAGS), flags=FLAGS)
    large = b.select(b.fcmp_ordered(">", a, _c(ERF_ONE)), _c(1.0), large)
    magnitude = b.select(b.fcmp_ordered("<", a, _c(ERF_SMALL)), small, large)
    return b.select(b.fcmp_unordered("uno", x, x), x, _intrinsic_copysign(b, magnitude, x))


def _intrinsic_copysign(b: ir.IRBuilder, magnitude, sign):
    name = "llvm.copysign.f32"  # (declare_intrinsic gives it one argument)
    fn = b.module.globals.get(name) or ir.Function(b.module, ir.FunctionType(F32, [F32, F32]), name)
    return b.call(fn, [magnitude, sign])
