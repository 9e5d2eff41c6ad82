"""Creation ops (full, constant, arange, rng_uniform, rng_normal): rules vs references, values,
and the counter-based random streams' defining properties."""

from __future__ import annotations

import numpy as np
import pytest
from op_cases import CASES, F32, F64, I64, check_rule_and_ref, infer, params, run_ref, t

from graphc import dtypes
from graphc.errors import ShapeError
from graphc.interpreter import interpret
from graphc.ir import GraphBuilder


@pytest.mark.parametrize("c", params(CASES["creation"]))
def test_reference_keeps_the_rules_promise(c, rng):
    check_rule_and_ref(c, rng)


def test_full_and_arange_values():
    out = run_ref("full", [], {"value": -2.5, "shape": (2, 3), "dtype": F64})
    assert out.dtype == np.float64 and (out == -2.5).all() and out.shape == (2, 3)
    out = run_ref("arange", [], {"start": 0.5, "step": -0.25, "size": 5, "dtype": F32})
    np.testing.assert_array_equal(out, np.float32([0.5 + -0.25 * i for i in range(5)]))
    out = run_ref("arange", [], {"start": 3, "step": 2, "size": 4})
    assert out.dtype == np.int64 and out.tolist() == [3, 5, 7, 9]


@pytest.mark.parametrize("value", [np.array(3.5), np.arange(6.0).reshape(2, 3), np.array([True])])
def test_constant_keeps_its_shape_in_a_graph(value):
    """Builders pass raw arrays; nodes hold frozen copies: both must give the same type."""
    b = GraphBuilder()
    c = b.emit("constant", [], {"value": value})
    assert c.shape == value.shape
    (out,) = interpret(b.build([c]))
    np.testing.assert_array_equal(out, value)
    assert out.shape == value.shape and out.dtype == value.dtype


def _seed(v: int) -> np.ndarray:
    return np.array(v, np.int64)


def _uniform(seed, offset, n, dtype=F64):
    return run_ref("rng_uniform", [_seed(seed), _seed(offset)], {"shape": (n,), "dtype": dtype})


def _normal(seed, offset, n, dtype=F64):
    return run_ref("rng_normal", [_seed(seed), _seed(offset)], {"shape": (n,), "dtype": dtype})


def test_uniform_draws_are_counter_based():
    a = _uniform(7, 10, 50)
    assert ((a >= 0) & (a < 1)).all()
    np.testing.assert_array_equal(a[5:], _uniform(7, 15, 45))  # value i = f(seed, offset + i)
    assert not np.array_equal(a, _uniform(8, 10, 50))
    np.testing.assert_array_equal(_uniform(7, 10, 50, F32), a.astype(np.float32))


def test_normal_draws_use_two_counters_each():
    a = _normal(3, 0, 40)
    np.testing.assert_array_equal(a[4:], _normal(3, 8, 36))


def test_random_streams_have_the_right_moments():
    u = _uniform(1, 0, 20000)
    n = _normal(2, 0, 20000)
    # 20000 draws: standard errors are about 0.002 (uniform mean) and 0.007 (normal mean)
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
    assert abs(n.mean()) < 0.03 and abs(n.std() - 1) < 0.03


@pytest.mark.parametrize(
    "op, types, attrs, message",
    [
        ("arange", [], {"size": -1}, "negative size"),
        ("full", [], {"value": 1.0, "shape": (2, -1)}, "negative dimension"),
        ("rng_uniform", [t((), dtypes.int32), t((), I64)], {}, "must be i64\\[\\] scalars"),
        ("rng_normal", [t((1,), I64), t((), I64)], {}, "must be i64\\[\\] scalars"),
        ("rng_uniform", [t((), I64), t((), I64)], {"dtype": I64}, "must be floating point"),
    ],
)
def test_invalid_operands_are_refused(op, types, attrs, message):
    with pytest.raises(ShapeError, match=message):
        infer(op, *types, **attrs)
