"""Elementwise ops: shape/dtype rules vs references, VJPs vs finite differences, refs vs torch,
tie-breaking conventions, and which dtypes each op accepts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from op_cases import (
    CASES,
    EW_SHAPES,
    OpCase,
    check_rule_and_ref,
    check_second_order,
    check_vjp,
    differentiable_cases,
    distinct,
    f32,
    infer,
    params,
    positive,
    real,
    run_ref,
    t,
    vjp,
)

from graphc import dtypes
from graphc.errors import ShapeError
from graphc.ops import OPS

ELEMENTWISE = sorted(n for n, op in OPS.items() if "elementwise" in op.traits)


@pytest.mark.parametrize("c", params(CASES["elementwise"]))
def test_reference_keeps_the_rules_promise(c, rng):
    check_rule_and_ref(c, rng)


@pytest.mark.parametrize("c", params(differentiable_cases(CASES["elementwise"])))
def test_vjp_matches_finite_differences(c, rng):
    check_vjp(c, rng)


SECOND_ORDER = {
    "exp": [real],
    "expm1": [real],
    "log1p": [positive],
    "erf": [real],
    "log": [positive],
    "sqrt": [positive],
    "rsqrt": [positive],
    "tanh": [real],
    "sigmoid": [real],
    "relu": [real],
    "abs": [real],
    "mul": [real, real],
    "div": [real, real],
    "maximum": [distinct(), distinct(0.5)],
}


@pytest.mark.parametrize("op", sorted(SECOND_ORDER) + ["pow"])
def test_second_derivatives(op, rng):
    """The VJPs' own ops differentiate correctly: grad of grad vs finite differences."""
    if op == "pow":
        for exponent in (3.0, 0.5, -1.5, 1.0):
            x = positive(rng, (2, 3), np.float64)
            check_second_order("pow", [x], {"exponent": exponent}, rng)
        return
    arrays = [dom(rng, (2, 3), np.float64) for dom in SECOND_ORDER[op]]
    check_second_order(op, arrays, {}, rng)


# ---- references against PyTorch ------------------------------------------------------------

UNARY_TORCH = {
    "neg": ("neg", real),
    "exp": ("exp", real),
    "expm1": ("expm1", real),
    "log1p": ("log1p", positive),
    "erf": ("erf", real),
    "log": ("log", positive),
    "sqrt": ("sqrt", positive),
    "rsqrt": ("rsqrt", positive),
    "tanh": ("tanh", real),
    "sigmoid": ("sigmoid", real),
    "relu": ("relu", real),
    "abs": ("abs", real),
    "sign": ("sign", real),
}
BINARY_TORCH = {
    "add": "add",
    "sub": "sub",
    "mul": "mul",
    "div": "div",
    "maximum": "maximum",
    "minimum": "minimum",
    "eq": "eq",
    "ne": "ne",
    "lt": "lt",
    "le": "le",
    "gt": "gt",
    "ge": "ge",
}


@pytest.mark.parametrize("op", sorted(UNARY_TORCH))
def test_unary_reference_matches_torch(op, torch, rng):
    name, domain = UNARY_TORCH[op]
    x = domain(rng, (4, 9), np.float32)
    x[0, :7] = [-80.0, -20.0, -1e-3, 0.0, 1e-3, 20.0, 80.0]  # saturation and the kink
    if domain is positive:
        x = np.abs(x) + np.float32(1e-3)
    expect = getattr(torch, name)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_ref(op, [x], {}), expect, rtol=2e-6, atol=1e-30)


@pytest.mark.parametrize("op", sorted(BINARY_TORCH))
def test_binary_reference_matches_torch(op, torch, rng):
    x = real(rng, (3, 7), np.float32)
    y = real(rng, (3, 7), np.float32)
    y[0] = x[0]  # equal operands exercise the comparisons and max/min at ties
    fn = getattr(torch, BINARY_TORCH[op])
    expect = fn(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    out = run_ref(op, [x, y], {})
    assert out.dtype == expect.dtype
    np.testing.assert_allclose(out, expect, rtol=1e-7)


def test_erf_reference_is_exact_to_float64(torch):
    """erf has no numpy function: its reference must match an independent float64 erf to
    an ulp, also in the tails and at the special values."""
    x = np.concatenate([np.linspace(-7, 7, 2001), [0.0, -0.0, 1e-300, -1e-12, np.inf, -np.inf]])
    expect = torch.special.erf(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_ref("erf", [x], {}), expect, rtol=4e-16, atol=0)
    assert np.isnan(run_ref("erf", [np.array([np.nan])], {})).all()
    x32 = x.astype(np.float32)  # float32 input: the float64 erf rounded once
    got32 = run_ref("erf", [x32], {})
    assert got32.dtype == np.float32
    expect32 = torch.special.erf(torch.from_numpy(x32.astype(np.float64))).numpy()
    np.testing.assert_array_equal(got32, expect32.astype(np.float32))


@pytest.mark.parametrize("op", ["log1p", "expm1"])
def test_log1p_expm1_keep_the_digits_of_tiny_inputs(op, torch):
    x = np.array([1e-30, -1e-12, 1e-8, 3e-5, 0.0, -0.0], np.float32)
    expect = getattr(torch, op)(torch.from_numpy(x)).numpy()
    got = run_ref(op, [x], {})
    np.testing.assert_allclose(got, expect, rtol=1e-7, atol=0)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(expect))


@pytest.mark.parametrize("exponent", [2.0, 3.0, 0.5, -1.5, 0.0, 1.0, 2.7])
def test_pow_matches_torch(exponent, torch, rng):
    x = positive(rng, (2, 5), np.float32)
    expect = torch.pow(torch.from_numpy(x), exponent).numpy()
    np.testing.assert_allclose(run_ref("pow", [x], {"exponent": exponent}), expect, rtol=2e-6)


# ---- ties: PyTorch's conventions ------------------------------------------------------------


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_maximum_minimum_split_ties_in_half(op, torch, rng):
    x = rng.integers(-2, 3, (4, 5)).astype(np.float64)
    y = rng.integers(-2, 3, (4, 5)).astype(np.float64)
    assert (x == y).any() and (x != y).any()
    ct = rng.standard_normal((4, 5))
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.tensor(y, requires_grad=True)
    getattr(torch, op)(xt, yt).backward(torch.tensor(ct))
    gx, gy = vjp(op, [x, y], {}, ct)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(gy, yt.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("op", ["relu", "abs"])
def test_kinks_take_torchs_subgradient(op, torch):
    x = np.array([-1.0, 0.0, 2.0])
    xt = torch.tensor(x, requires_grad=True)
    getattr(torch, op)(xt).sum().backward()
    (g,) = vjp(op, [x], {}, np.ones(3))
    np.testing.assert_array_equal(g, xt.grad.numpy())


# ---- dtypes ---------------------------------------------------------------------------------


def _operands(op: str, dtype: dtypes.DType) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    arity = OPS[op].arity
    vals = [rng.integers(1, 4, (2, 3)).astype(dtype.np) for _ in range(arity)]
    if op == "where":
        vals[0] = rng.random((2, 3)) < 0.5
    return vals


@pytest.mark.parametrize("op", ELEMENTWISE)
def test_rule_accepts_exactly_what_the_reference_can_compute(op):
    """For every dtype: the rule accepts and the ref honours it, or the rule says no."""
    for dtype in dtypes.ALL:
        arrays = _operands(op, dtype)
        types = [t(a.shape, dtypes.from_numpy(a.dtype)) for a in arrays]
        try:
            infer(op, *types)
        except ShapeError:
            continue
        run_ref(op, arrays, {})  # Op.evaluate raises if the result breaks the rule


@pytest.mark.parametrize(
    "op, types, attrs, message",
    [
        ("add", [t((3,)), t((4,))], {}, "operand shapes differ.*broadcast explicitly"),
        ("mul", [t((2, 3)), t((3, 2))], {}, "operand shapes differ"),
        ("add", [t((3,)), t((3,), dtypes.float64)], {}, "operand dtypes differ.*insert a cast"),
        ("div", [t((3,), dtypes.int64), t((3,), dtypes.int64)], {}, "needs a floating-point"),
        ("exp", [t((3,), dtypes.int64)], {}, "exp: needs a floating-point"),
        ("pow", [t((3,), dtypes.int32)], {"exponent": 2.0}, "pow: needs a floating-point"),
        ("pow", [t((3,))], {"exponent": "2"}, "exponent must be a Python number"),
        ("sub", [t((3,), dtypes.bool_), t((3,), dtypes.bool_)], {}, "bool.*logical_not"),
        ("neg", [t((3,), dtypes.bool_)], {}, "neg: not supported on bool"),
        ("relu", [t((3,), dtypes.bool_)], {}, "relu: not supported on bool"),
        ("logical_and", [t((3,)), t((3,))], {}, "needs bool tensors"),
        ("where", [t((3,)), t((3,)), t((3,))], {}, "condition must be bool"),
        ("where", [t((4,), dtypes.bool_), t((3,)), t((3,))], {}, "differ in shape"),
        ("lt", [t((3,)), t((3,), dtypes.int64)], {}, "operand dtypes differ"),
    ],
)
def test_invalid_operands_are_refused(op, types, attrs, message):
    with pytest.raises(ShapeError, match=message):
        infer(op, *types, **attrs)


def test_comparisons_and_logic_return_bool():
    for op in ("eq", "ne", "lt", "le", "gt", "ge"):
        assert infer(op, t((2, 3)), t((2, 3))).dtype == dtypes.bool_
    assert infer("logical_not", t((2,), dtypes.bool_)).dtype == dtypes.bool_


# ---- random shapes (property-based) ---------------------------------------------------------

_HYP_OPS = {
    "exp": real,
    "erf": real,
    "log": positive,
    "tanh": real,
    "sigmoid": real,
    "relu": real,
    "rsqrt": positive,
    "mul": real,
    "div": real,
    "maximum": None,
}


@settings(max_examples=40, deadline=None)
@given(
    op=st.sampled_from(sorted(_HYP_OPS)),
    shape=st.lists(st.integers(1, 6), max_size=4).map(tuple),
    seed=st.integers(0, 2**16),
)
def test_random_shapes(op, shape, seed):
    dom = _HYP_OPS[op]
    if op == "maximum":
        args = (f32(*shape, domain=distinct()), f32(*shape, domain=distinct(0.5)))
    else:
        args = tuple(f32(*shape, domain=dom) for _ in range(OPS[op].arity))
    c = OpCase(op, args)
    rng = np.random.default_rng(seed)
    check_rule_and_ref(c, rng)
    check_vjp(c, rng, max_coords=8)


def test_case_table_covers_odd_and_degenerate_shapes():
    shapes = {a.shape for c in CASES["elementwise"] for a in c.args}
    assert set(EW_SHAPES) <= shapes and any(0 in s for s in shapes)
    assert any(s and all(d % 16 for d in s) and max(s) > 16 for s in shapes)  # odd, > a vector
