"""Layout ops (reshape, transpose, broadcast_to, slice, pad_slice, concat): rules vs references,
VJPs vs finite differences (pad_slice's VJP is a slice: second order), numpy as the oracle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from op_cases import (
    CASES,
    F64,
    OpCase,
    check_rule_and_ref,
    check_vjp,
    differentiable_cases,
    f32,
    infer,
    params,
    run_ref,
    t,
    vjp,
)

from graphc.errors import ShapeError


@pytest.mark.parametrize("c", params(CASES["shape"]))
def test_reference_keeps_the_rules_promise(c, rng):
    check_rule_and_ref(c, rng)


@pytest.mark.parametrize("c", params(differentiable_cases(CASES["shape"])))
def test_vjp_matches_finite_differences(c, rng):
    check_vjp(c, rng)


# ---- references against numpy indexing ----------------------------------------------------


def test_layout_references_match_numpy(rng):
    x = rng.standard_normal((2, 3, 5))
    np.testing.assert_array_equal(run_ref("reshape", [x], {"shape": (6, 5)}), x.reshape(6, 5))
    np.testing.assert_array_equal(
        run_ref("transpose", [x], {"perm": (2, 0, 1)}), np.moveaxis(x, 2, 0)
    )
    np.testing.assert_array_equal(
        run_ref("broadcast_to", [x[:, :1]], {"shape": (4, 2, 3, 5)}),
        np.tile(x[None, :, :1], (4, 1, 3, 1)),
    )
    attrs = {"axis": 2, "start": 1, "stop": 5, "step": 3}
    np.testing.assert_array_equal(run_ref("slice", [x], attrs), x[:, :, 1:5:3])
    np.testing.assert_array_equal(run_ref("slice", [x], {"axis": 1, "start": 1}), x[:, 1:])
    parts = [x[:, :1], x[:, 1:]]
    np.testing.assert_array_equal(run_ref("concat", parts, {"axis": 1}), x)


def test_pad_slice_is_the_adjoint_of_slice(rng):
    """<slice(x), g> == <x, pad_slice(g)> for every x and g: the defining property."""
    x = rng.standard_normal((3, 11))
    for start, stop, step in [(0, 11, 2), (1, 10, 3), (4, 5, 1), (10, 11, 4), (2, 2, 1)]:
        attrs = {"axis": 1, "start": start, "stop": stop, "step": step}
        y = run_ref("slice", [x], attrs)
        g = rng.standard_normal(y.shape)
        pad = run_ref("pad_slice", [g], {"shape": x.shape, "axis": 1, "start": start, "step": step})
        np.testing.assert_allclose(np.sum(y * g), np.sum(x * pad), rtol=1e-12)


def test_pad_slice_vjp_when_the_last_step_overshoots_the_edge():
    # [0, 2, 4] of 5 rows: start + step * n = 6 lies past the end; the VJP must still slice
    g = np.arange(6.0).reshape(3, 2)
    ct = np.arange(10.0).reshape(5, 2)
    (dg,) = vjp("pad_slice", [g], {"shape": (5, 2), "axis": 0, "start": 0, "step": 2}, ct)
    np.testing.assert_array_equal(dg, ct[0::2])


# ---- invalid inputs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op, types, attrs, message",
    [
        ("reshape", [t((3, 4))], {"shape": (5, 2)}, r"cannot reshape f32\[3,4\] \(12 elements\)"),
        ("reshape", [t((4,))], {"shape": (-1, 4)}, "cannot reshape"),
        ("transpose", [t((3, 4))], {"perm": (0, 0)}, "not a permutation"),
        ("transpose", [t((3, 4))], {"perm": (0, 1, 2)}, "not a permutation"),
        ("broadcast_to", [t((3,))], {"shape": (4,)}, r"\[3\] and \[4\] cannot be broadcast"),
        ("broadcast_to", [t((2, 3))], {"shape": (3,)}, "cannot broadcast"),
        ("slice", [t((5,))], {"start": 2, "stop": 6}, r"\[2:6:1\] on axis 0 is invalid"),
        ("slice", [t((5,))], {"start": 3, "stop": 2}, "invalid"),
        ("slice", [t((5,))], {"step": 0}, "step >= 1"),
        ("slice", [t((5,))], {"axis": 1}, "axis 1 is out of range"),
        ("pad_slice", [t((3,))], {"shape": (5,), "start": 1, "step": 2}, "does not fit"),
        ("pad_slice", [t((3, 2))], {"shape": (3, 3), "axis": 0}, "does not fit"),
        ("pad_slice", [t((3,))], {"shape": (5,), "axis": 1}, "does not fit"),
        ("concat", [t((2, 3)), t((2, 4))], {"axis": 0}, "does not match"),
        ("concat", [t((2, 3)), t((2, 3), F64)], {"axis": 0}, "does not match"),
        ("concat", [t((2, 3)), t((2,))], {"axis": 0}, "does not match"),
        ("concat", [t((2, 3))], {"axis": 2}, "axis 2 is out of range"),
        ("concat", [], {"axis": 0}, "at least one"),
    ],
)
def test_invalid_operands_are_refused(op, types, attrs, message):
    with pytest.raises(ShapeError, match=message):
        infer(op, *types, **attrs)


# ---- random slices (property-based) -----------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    shape=st.lists(st.integers(1, 7), min_size=1, max_size=3).map(tuple),
    data=st.data(),
)
def test_random_slices(shape, data):
    axis = data.draw(st.integers(0, len(shape) - 1))
    n = shape[axis]
    start = data.draw(st.integers(0, n))
    stop = data.draw(st.integers(start, n))
    step = data.draw(st.integers(1, 4))
    c = OpCase("slice", (f32(*shape),), {"axis": axis, "start": start, "stop": stop, "step": step})
    rng = np.random.default_rng(n)
    out = check_rule_and_ref(c, rng)
    index = [slice(None)] * len(shape)
    index[axis] = slice(start, stop, step)
    assert out.shape == np.empty(shape)[tuple(index)].shape
    check_vjp(c, rng, max_coords=8)
