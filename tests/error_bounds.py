"""Reference values with a running error bound per element, for differential tests.

Native code and the numpy reference round differently (fused multiply-add, reassociated sums,
different libm), so "equal" means: within what rounding alone can explain. For every node of a
graph this module computes, next to the reference value, an array `err` bounding how far a
correct implementation may be from it (first-order error propagation, as in a running error
analysis):

- err == 0: the value must be reproduced exactly (data movement, integer and boolean ops, and
  float ops such as max, relu or where applied to exactly known operands);
- 0 < err < inf: float arithmetic; |native - reference| <= SLACK * err;
- err == inf: the element is *fragile* — a comparison, cast to integer or argmax decided by a
  near-tie of inexact operands — and either answer is correct.

Bounds count both sides' rounding (each op contributes about one rounding on each side, more
for library functions) and the operands' errors scaled by the op's sensitivity.

Accepted either way, because the loop kernels' fast-math flags (contract, nsz) allow it: the
sign of an infinity from dividing by a signed zero, and a NaN from adding to a product that
overflowed (a fused multiply-add keeps it finite). Sums may be reordered, which changes only
rounding. Also not checked: conv outputs where padding meets an inf/NaN weight or cotangent
(a known kernel issue, see _conv2d below).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from graphc.interpreter import interpret
from graphc.ir import Graph, Node
from graphc.ops import OPS

SLACK = 2.0  # headroom over the first-order bound
LIBM = 16  # roundings charged to a library function (exp, log, tanh, pow): a few ulp per side

Rule = Callable[[Node, list, list, np.ndarray], np.ndarray]
RULES: dict[str, Rule] = {}


def unit(dtype) -> float:
    """Unit roundoff of a dtype (0 for exact integer and bool types)."""
    dt = np.dtype(dtype)
    return float(np.finfo(dt).eps) / 2 if dt.kind == "f" else 0.0


def reference(graph: Graph, inputs: Sequence[np.ndarray]) -> tuple[dict, dict]:
    """(values, errs): every node's reference value and its error bound."""
    values = interpret(graph, list(inputs), keep=True).env
    errs: dict[Node, np.ndarray] = {}
    with np.errstate(all="ignore"):
        for n in graph.nodes:
            if n not in values:
                continue
            if n.is_input:
                errs[n] = np.zeros(n.shape)
                continue
            ins = [values[i] for i in n.inputs]
            e = RULES[n.op](n, ins, [errs[i] for i in n.inputs], values[n])
            e = np.broadcast_to(e, n.shape).astype(np.float64)
            errs[n] = np.where(np.isnan(e), np.inf, np.maximum(e, 0.0))
    return values, errs


def mismatches(got: np.ndarray, want: np.ndarray, err: np.ndarray) -> np.ndarray:
    """Boolean mask of elements where `got` is not explained by rounding."""
    if got.shape != want.shape or got.dtype != want.dtype:
        raise AssertionError(f"got {got.dtype}{list(got.shape)}, want {want.dtype}{want.shape}")
    fragile = np.isinf(err)
    if want.dtype.kind != "f":
        return (got != want) & ~fragile
    with np.errstate(all="ignore"):
        g, w = got.astype(np.float64), want.astype(np.float64)
        tiny = 4 * float(np.finfo(want.dtype).smallest_subnormal)
        close = np.abs(g - w) <= SLACK * err + tiny
        same = (g == w) | (np.isnan(g) & np.isnan(w))
        # An inexact value at the edge of the range may overflow on one side only.
        big = float(np.finfo(want.dtype).max) / 4
        edge = (err > 0) & (np.sign(g) == np.sign(w)) & (np.abs(g) >= big) & (np.abs(w) >= big)
    return ~(close | same | edge | fragile)


def rule(*names: str):
    def register(fn: Rule) -> Rule:
        for name in names:
            RULES[name] = fn
        return fn

    return register


# ---- helpers -------------------------------------------------------------------------------


def _float(n: Node) -> bool:
    return n.dtype.is_floating_point


def scaled(coef, err):
    """coef * err, where an exact operand (err 0) stays exact even if coef is inf or NaN."""
    with np.errstate(all="ignore"):
        return np.where(err == 0, 0.0, np.abs(coef) * err)


def rounding(k: float, out: np.ndarray, magnitude=None) -> np.ndarray:
    """k roundings of a finite result (non-finite results must match exactly)."""
    mag = np.abs(out if magnitude is None else magnitude).astype(np.float64)
    return np.where(np.isfinite(mag), k * unit(out.dtype) * mag, 0.0)


def fragile(mask) -> np.ndarray:
    return np.where(mask, np.inf, 0.0)


def any_fragile(errs: list) -> np.ndarray:
    """Non-float results: exact unless an operand is inexact somewhere."""
    total = sum((np.asarray(e) for e in errs), np.zeros(()))
    return fragile(total > 0)


def _nan_to_inf(e):
    return np.where(np.isnan(e), np.inf, e)


# Signed zeros: the kernels' fast-math flags include nsz, so 1/x, rsqrt(x) and x**-p at
# x = ±0 may come out as either infinity.


def _lower(x, e):
    """A lower bound of |x| given its error, or 0 where the error may reach zero."""
    return np.maximum(np.abs(x) - e, 0.0)


def _crosses_zero(x, e):
    """Where an inexact x may have either sign (or be NaN: then anything goes)."""
    with np.errstate(all="ignore"):
        return (e > 0) & ~(np.abs(x) > e)


# ---- elementwise ---------------------------------------------------------------------------


def contracted(n: Node, out: np.ndarray, ins: list) -> np.ndarray:
    """Where contraction may turn the reference's NaN into a number: a * b + c becomes one
    fused multiply-add, which never rounds a * b, so a product that overflows to inf in the
    reference (inf - inf = NaN) stays finite natively."""
    hit = np.zeros(out.shape, bool)
    for node, v in zip(n.inputs, ins, strict=True):
        if node.op == "mul":
            hit |= np.isinf(np.broadcast_to(v, out.shape))
    return fragile(np.isnan(out) & hit)


@rule("add", "sub")
def _add(n, ins, errs, out):
    if not _float(n):
        return any_fragile(errs)
    return errs[0] + errs[1] + rounding(2, out) + contracted(n, out, ins)


@rule("mul")
def _mul(n, ins, errs, out):
    if not _float(n):
        return any_fragile(errs)
    a, b = ins
    ea, eb = errs
    return scaled(b, ea) + scaled(a, eb) + ea * eb + rounding(2, out)


@rule("batch_norm")
def _batch_norm(n, ins, errs, out):
    # (x - mean) * invstd * weight + bias, as those four operations (a kernel may contract
    # the last two into a fused multiply-add: within the same bound)
    x, mean, invstd, weight, bias = ins
    ex, em, ei, ew, eb = errs
    with np.errstate(all="ignore"):
        d = x - mean
        ed = ex + em + rounding(2, d)
        p = d * invstd
        ep = scaled(invstd, ed) + scaled(d, ei) + ed * ei + rounding(2, p)
        q = p * weight
        eq = scaled(weight, ep) + scaled(p, ew) + ep * ew + rounding(2, q)
    return eq + eb + rounding(2, out)


@rule("div")
def _div(n, ins, errs, out):
    a, b = ins
    ea, eb = errs
    den = _lower(b, eb)
    with np.errstate(all="ignore"):
        e = scaled(1 / den, ea) + scaled(np.abs(a) / (den * np.abs(b)), eb)
    e = e + rounding(2, out)
    return np.where(_crosses_zero(b, eb) | (b == 0), np.inf, e)


@rule("neg", "abs", "relu", "copy", "stop_gradient")
def _lipschitz1(n, ins, errs, out):
    return errs[0] if _float(n) else any_fragile(errs)


@rule("maximum", "minimum")
def _maxmin(n, ins, errs, out):
    return np.maximum(errs[0], errs[1]) if _float(n) else any_fragile(errs)


@rule("sign")
def _sign(n, ins, errs, out):
    if not _float(n):
        return any_fragile(errs)
    return fragile(_crosses_zero(ins[0], errs[0]))


@rule("exp")
def _exp(n, ins, errs, out):
    with np.errstate(all="ignore"):
        spread = np.where(errs[0] == 0, 0.0, np.abs(out) * np.expm1(errs[0]))
    return spread + rounding(LIBM, out)


@rule("log")
def _log(n, ins, errs, out):
    x, e = ins[0], errs[0]
    with np.errstate(all="ignore"):
        spread = scaled(1 / _lower(x, e), e)
    return np.where(_crosses_zero(x, e), np.inf, spread + rounding(LIBM, out))


@rule("sqrt")
def _sqrt(n, ins, errs, out):
    x, e = ins[0], errs[0]
    with np.errstate(all="ignore"):
        slope = scaled(0.5 / np.sqrt(_lower(x, e)), e)
    spread = np.minimum(slope, np.sqrt(e))  # sqrt is 1/2-Hoelder: never worse than sqrt(e)
    return np.where(_crosses_zero(x, e), np.inf, spread + rounding(2, out))


@rule("rsqrt")
def _rsqrt(n, ins, errs, out):
    x, e = ins[0], errs[0]
    with np.errstate(all="ignore"):
        spread = scaled(0.5 * _lower(x, e) ** -1.5, e)
    bad = _crosses_zero(x, e) | (x == 0)
    return np.where(bad, np.inf, spread + rounding(4, out))


@rule("expm1")
def _expm1(n, ins, errs, out):
    with np.errstate(all="ignore"):
        spread = np.where(errs[0] == 0, 0.0, (np.abs(out) + 1) * np.expm1(errs[0]))
    return spread + rounding(LIBM, out)


@rule("log1p")
def _log1p(n, ins, errs, out):
    x, e = ins[0], errs[0]
    with np.errstate(all="ignore"):
        spread = scaled(1 / _lower(x + 1, e), e)
    return np.where(_crosses_zero(x + 1, e), np.inf, spread + rounding(LIBM, out))


@rule("erf")
def _erf(n, ins, errs, out):
    return 1.1284 * errs[0] + rounding(LIBM, out)  # erf' <= 2/sqrt(pi)


@rule("binary_cross_entropy")
def _binary_cross_entropy(n, ins, errs, out):
    x, y = (v.astype(np.float64) for v in ins)
    ex, ey = errs
    with np.errstate(all="ignore"):
        log_x, log_1mx = np.maximum(np.log(x), -100), np.maximum(np.log1p(-x), -100)
        slope_x = 1 / _lower(x, ex) + 1 / _lower(1 - x, ex)
        terms = np.abs(y * log_x) + np.abs((1 - y) * log_1mx) + np.abs(log_x) + np.abs(log_1mx)
    spread = scaled(slope_x, ex) + scaled(np.abs(log_1mx - log_x), ey)
    return spread + rounding(LIBM, out, magnitude=terms)


@rule("tanh")
def _tanh(n, ins, errs, out):
    return errs[0] + rounding(LIBM, out)


@rule("sigmoid")
def _sigmoid(n, ins, errs, out):
    return 0.25 * errs[0] + rounding(LIBM, out)


@rule("pow")
def _pow(n, ins, errs, out):
    x, e = ins[0], errs[0]
    p = float(n.attrs["exponent"])
    if p == 0:
        return np.zeros(out.shape)
    with np.errstate(all="ignore"):
        reach = np.abs(x) + e if p >= 1 else _lower(x, e)
        spread = scaled(abs(p) * reach ** (p - 1), e)
    bad = _crosses_zero(x, e) & ((p < 1) | (p != int(p))) | ((x == 0) & (p < 0))
    return np.where(bad, np.inf, spread + rounding(LIBM, out))


@rule("eq", "ne", "lt", "le", "gt", "ge")
def _compare(n, ins, errs, out):
    if not n.inputs[0].dtype.is_floating_point:
        return any_fragile(errs)
    a, b = ins
    e = errs[0] + errs[1]
    with np.errstate(all="ignore"):
        near = ~(np.abs(a.astype(np.float64) - b) > e)  # NaN distances are near, too
    return fragile((e > 0) & near)


@rule("logical_and", "logical_or", "logical_not")
def _logic(n, ins, errs, out):
    return any_fragile(errs)


@rule("where")
def _where(n, ins, errs, out):
    c, a, b = ins
    ec, ea, eb = errs
    picked = np.where(c, ea, eb)
    if not _float(n):
        return np.where(ec > 0, np.where(a == b, picked, np.inf), picked)
    with np.errstate(all="ignore"):
        either = np.abs(a.astype(np.float64) - b) + ea + eb
    either = np.where(a == b, np.maximum(ea, eb), either)
    return np.where(ec > 0, either, picked)


@rule("cast")
def _cast(n, ins, errs, out):
    (x,), (e,) = ins, errs
    src, dst = n.inputs[0].dtype, n.dtype
    if not src.is_floating_point:
        return any_fragile(errs)
    if dst.is_floating_point:
        return e + (rounding(2, out) if dst.itemsize < src.itemsize else 0.0)
    if dst.name == "bool":
        return fragile(_crosses_zero(x, e))
    # float -> integer truncates; out of range (or NaN) is undefined in C, LLVM and numpy.
    limit = 2.0 ** (8 * dst.itemsize - 1)
    with np.errstate(all="ignore"):
        x64 = x.astype(np.float64)
        moved = np.trunc(x64 - e) != np.trunc(x64 + e)
        undefined = ~(np.abs(x64) < limit)
    return fragile(((e > 0) & moved) | undefined)


# ---- reductions and rows -------------------------------------------------------------------


def _axes(n: Node) -> tuple[int, ...]:
    return tuple(n.attrs["axes"])


@rule("reduce_sum")
def _reduce_sum(n, ins, errs, out):
    axes, keep = _axes(n), n.attrs["keepdims"]
    if not _float(n):
        return fragile(np.sum(errs[0], axis=axes, keepdims=keep) > 0)
    count = int(np.prod([n.inputs[0].shape[a] for a in axes], dtype=np.int64))
    magnitude = np.sum(np.abs(ins[0].astype(np.float64)), axis=axes, keepdims=keep)
    spread = np.sum(errs[0], axis=axes, keepdims=keep)
    return spread + rounding(2 * (count + 1), out, magnitude)


@rule("reduce_max")
def _reduce_max(n, ins, errs, out):
    return np.max(errs[0], axis=_axes(n), keepdims=n.attrs["keepdims"])


@rule("argmax")
def _argmax(n, ins, errs, out):
    x, e = ins[0].astype(np.float64), errs[0]
    axis, keep = n.attrs["axis"], n.attrs["keepdims"]
    with np.errstate(all="ignore"):
        top = np.nanmax(np.where(np.isnan(x), -np.inf, x), axis=axis, keepdims=True)
        reach = np.max(e, axis=axis, keepdims=True)
        rivals = np.sum(x + e >= top - reach, axis=axis, keepdims=True)
    shaky = (reach > 0) & (rivals > 1)
    shaky |= np.any(np.isinf(e), axis=axis, keepdims=True)
    shaky = shaky if keep else np.squeeze(shaky, axis)
    return fragile(shaky)


@rule("softmax", "log_softmax")
def _softmax(n, ins, errs, out):
    axis = n.attrs["axis"]
    x = ins[0].astype(np.float64)
    count = n.inputs[0].shape[axis]
    spread = np.max(errs[0], axis=axis, keepdims=True)
    if n.op == "softmax":
        with np.errstate(all="ignore"):
            moved = np.where(spread == 0, 0.0, np.abs(out) * np.expm1(2 * spread))
        return moved + rounding(count + LIBM, out)
    finite = np.where(np.isfinite(x), np.abs(x), 0.0)  # -inf entries add nothing to the sum
    scale = finite + np.max(finite, axis=axis, keepdims=True) + np.log(count) + 1
    return errs[0] + spread + rounding(count + LIBM, out, scale)


# ---- data movement: the op's own reference moves the bounds along with the values -------


@rule("reshape", "transpose", "broadcast_to", "slice", "pad_slice")
def _moved(n, ins, errs, out):
    return OPS[n.op].ref(errs[0], **n.attrs)


@rule("concat")
def _concat(n, ins, errs, out):
    return np.concatenate(errs, n.attrs["axis"])


@rule("one_hot")
def _one_hot(n, ins, errs, out):
    return np.broadcast_to(fragile(errs[0] > 0)[..., None], out.shape)


@rule("full", "constant", "arange", "rng_uniform")
def _exact(n, ins, errs, out):
    return np.zeros(out.shape)


@rule("rng_normal")
def _normal(n, ins, errs, out):
    return rounding(4, out)


# ---- pooling -------------------------------------------------------------------------------


def _window(n: Node) -> int:
    kh, kw = n.attrs["kernel_size"]
    return kh * kw


@rule("max_pool2d")
def _max_pool(n, ins, errs, out):
    return OPS[n.op].ref(errs[0], **n.attrs)


@rule("avg_pool2d", "avg_pool2d_grad")
def _avg_pool(n, ins, errs, out):
    ref = OPS[n.op].ref
    magnitude = ref(np.abs(ins[0].astype(np.float64)), **n.attrs)
    return ref(errs[0], **n.attrs) + rounding(_window(n) + 4, out, magnitude)


@rule("max_pool2d_grad")
def _max_pool_grad(n, ins, errs, out):
    g, x = ins
    if np.any(errs[1] > 0):  # which element wins a window may depend on rounding
        return np.full(out.shape, np.inf)
    ref = OPS[n.op].ref
    magnitude = ref(np.abs(g.astype(np.float64)), x, **n.attrs)
    return ref(errs[0], x, **n.attrs) + rounding(2 * _window(n) + 2, out, magnitude)


# ---- contractions: |a| op |b| bounds the rounding of every partial sum ---------------------


def _contraction(terms: Callable[[Node], int]):
    def bound(n, ins, errs, out):
        ref = OPS[n.op].ref
        a, b = (np.abs(v.astype(np.float64)) for v in ins)
        ea, eb = errs
        with np.errstate(all="ignore"):
            e = rounding(2 * (terms(n) + 1), out, ref(a, b, **n.attrs))
            if np.any(ea > 0):
                e = e + _nan_to_inf(ref(ea, b, **n.attrs))
            if np.any(eb > 0):
                e = e + _nan_to_inf(ref(a, eb, **n.attrs))
            if np.any(ea > 0) and np.any(eb > 0):
                e = e + ref(ea, eb, **n.attrs)
        return e

    return bound


def _matmul_terms(n: Node) -> int:
    a = n.inputs[0]
    return a.shape[-2] if n.attrs["trans_a"] else a.shape[-1]


def _conv_terms(n: Node) -> int:
    _, cg, kh, kw = n.inputs[1].shape
    return cg * kh * kw


def _conv_input_grad_terms(n: Node) -> int:
    o, _, kh, kw = n.inputs[1].shape
    return o * kh * kw


def _conv_weight_grad_terms(n: Node) -> int:
    g = n.inputs[1]
    return g.shape[0] * g.shape[2] * g.shape[3]


# KNOWN ISSUES (test_fuzz_native.py::test_conv_kernels_multiply_padding_like_the_spec): the
# native conv2d and conv2d_weight_grad kernels skip padded rows instead of multiplying their
# zeros, so where a padding zero meets an inf/NaN weight (forward) or cotangent (weight
# gradient) they miss the NaN of the spec (and of PyTorch); conv2d_input_grad multiplies
# cotangents outside the output (as zeros) with the weights, a NaN the spec does not have.
# Those elements are not checked.


def _conv2d(n, ins, errs, out):
    e = _contraction(_conv_terms)(n, ins, errs, out)
    x, w = ins
    bad = (~np.isfinite(w)).astype(np.float64)
    if not np.any(bad) or not any(n.attrs["padding"]):
        return e
    inside = OPS["conv2d"].ref(np.ones(x.shape), bad, **n.attrs)
    total = bad.sum(axis=(1, 2, 3)).reshape(1, -1, 1, 1)
    return np.where(total - inside > 0.5, np.inf, e)


def _conv2d_input_grad(n, ins, errs, out):
    e = _contraction(_conv_input_grad_terms)(n, ins, errs, out)
    w = ins[1]
    if np.all(np.isfinite(w)):
        return e
    groups = n.attrs["groups"]
    o, cg = w.shape[:2]
    bad = ~np.isfinite(w).reshape(groups, o // groups, cg, -1)
    channels = bad.any(axis=(1, 3)).reshape(-1)  # input channel gi * cg + c
    return np.where(channels[None, :, None, None], np.inf, e)


def _conv2d_weight_grad(n, ins, errs, out):
    e = _contraction(_conv_weight_grad_terms)(n, ins, errs, out)
    x, g = ins
    bad = (~np.isfinite(g)).astype(np.float64)
    if not np.any(bad) or not any(n.attrs["padding"]):
        return e
    inside = OPS["conv2d_weight_grad"].ref(np.ones(x.shape), bad, **n.attrs)
    total = bad.sum(axis=(0, 2, 3)).reshape(-1, 1, 1, 1)
    return np.where(total - inside > 0.5, np.inf, e)


RULES["matmul"] = _contraction(_matmul_terms)
RULES["conv2d"] = _conv2d
RULES["conv2d_input_grad"] = _conv2d_input_grad
RULES["conv2d_weight_grad"] = _conv2d_weight_grad
