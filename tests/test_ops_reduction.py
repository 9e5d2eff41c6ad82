"""Reductions (reduce_sum, reduce_max, argmax): rules vs references over several axes with and
without keepdims, VJPs vs finite differences, PyTorch's tie conventions (amax splits evenly,
argmax takes the first)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from op_cases import (
    CASES,
    OpCase,
    check_rule_and_ref,
    check_second_order,
    check_vjp,
    differentiable_cases,
    distinct,
    f32,
    infer,
    params,
    run_ref,
    t,
    vjp,
)

import graphc
from graphc import dtypes
from graphc.errors import ShapeError


@pytest.mark.parametrize("c", params(CASES["reduction"]))
def test_reference_keeps_the_rules_promise(c, rng):
    check_rule_and_ref(c, rng)


@pytest.mark.parametrize("c", params(differentiable_cases(CASES["reduction"])))
def test_vjp_matches_finite_differences(c, rng):
    check_vjp(c, rng)


@pytest.mark.parametrize("axes", [(0,), (1,), (0, 2), (0, 1, 2), ()])
@pytest.mark.parametrize("keepdims", [False, True])
def test_references_match_torch(axes, keepdims, torch, rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    xt = torch.from_numpy(x)
    attrs = {"axes": axes, "keepdims": keepdims}
    dims = list(axes)
    if axes:  # torch reads dim=() as "all dims"; graphc's axes=() reduces nothing
        np.testing.assert_allclose(
            run_ref("reduce_sum", [x], attrs), xt.sum(dims, keepdim=keepdims).numpy(), rtol=1e-6
        )
        np.testing.assert_array_equal(
            run_ref("reduce_max", [x], attrs), xt.amax(dims, keepdim=keepdims).numpy()
        )
    else:
        np.testing.assert_array_equal(run_ref("reduce_sum", [x], attrs), x)
    for axis in range(3):
        np.testing.assert_array_equal(
            run_ref("argmax", [x], {"axis": axis, "keepdims": keepdims}),
            xt.argmax(axis, keepdim=keepdims).numpy(),
        )


def test_reduce_max_splits_ties_evenly_like_amax(torch, rng):
    x = rng.integers(0, 3, (4, 6)).astype(np.float64)  # many ties
    ct = rng.standard_normal((4,))
    xt = torch.tensor(x, requires_grad=True)
    xt.amax(1).backward(torch.tensor(ct))
    (g,) = vjp("reduce_max", [x], {"axes": (1,), "keepdims": False}, ct)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-12)
    ct2 = rng.standard_normal(())
    xt.grad = None
    xt.amax((0, 1)).backward(torch.tensor(ct2))
    (g2,) = vjp("reduce_max", [x], {"axes": (0, 1), "keepdims": False}, ct2)
    np.testing.assert_allclose(g2, xt.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("op", ["reduce_sum", "reduce_max"])
def test_second_derivatives(op, rng):
    x = distinct()(rng, (3, 4, 2), np.float64)
    check_second_order(op, [x], {"axes": (0, 2), "keepdims": False}, rng)


def test_argmax_takes_the_first_maximum(torch):
    x = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]], np.float32)
    np.testing.assert_array_equal(
        run_ref("argmax", [x], {"axis": 1}), torch.from_numpy(x).argmax(1).numpy()
    )


def test_integer_sums_keep_their_dtype():
    x = np.array([[2**40, 1], [3, 4]], np.int64)
    out = run_ref("reduce_sum", [x], {"axes": (0, 1)})
    assert out.dtype == np.int64 and int(out) == 2**40 + 8


@pytest.mark.parametrize(
    "op, types, attrs, message",
    [
        ("reduce_sum", [t((3, 4))], {"axes": (1, 0)}, "axes must be sorted"),
        ("reduce_sum", [t((3, 4))], {"axes": (-1,)}, "axes must be sorted"),
        ("reduce_sum", [t((3, 4))], {"axes": (2,)}, "axis 2 is out of range.*rank 2"),
        ("reduce_sum", [t((3, 4))], {"axes": (1, 1)}, "repeated axis"),
        ("reduce_sum", [t((3,), dtypes.bool_)], {"axes": (0,)}, "cast bool tensors"),
        ("reduce_sum", [t(())], {"axes": (0,)}, "axes must be sorted"),
        ("reduce_max", [t((0, 3))], {"axes": (0,)}, "cannot reduce an empty axis"),
        ("reduce_max", [t((3,))], {"axes": (5,)}, "out of range"),
        ("argmax", [t((3, 4))], {"axis": 2}, "axis 2 is invalid"),
        ("argmax", [t((0,))], {"axis": 0}, "invalid"),
        ("argmax", [t(())], {"axis": 0}, "invalid"),
    ],
)
def test_invalid_operands_are_refused(op, types, attrs, message):
    with pytest.raises(ShapeError, match=message):
        infer(op, *types, **attrs)


def test_zero_dim_tensors_reduce_over_dim_0_like_torch(torch):
    """PyTorch lets a 0-d tensor name dim 0 or -1 (the scalar itself)."""
    x = graphc.tensor(2.5, requires_grad=True)
    for dim in (0, -1):
        y = x.sum(dim)
        assert y.shape == torch.tensor(2.5).sum(dim).shape
        assert y.item() == 2.5
    x.amax(0).backward()
    assert x.grad.item() == 1.0


# ---- random shapes and axes (property-based) --------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple),
    op=st.sampled_from(["reduce_sum", "reduce_max"]),
    keepdims=st.booleans(),
    data=st.data(),
)
def test_random_axes(shape, op, keepdims, data):
    axes = tuple(sorted(data.draw(st.sets(st.integers(0, len(shape) - 1)))))
    c = OpCase(op, (f32(*shape, domain=distinct()),), {"axes": axes, "keepdims": keepdims})
    rng = np.random.default_rng(len(shape))
    out = check_rule_and_ref(c, rng)
    x = c.args[0].make(np.random.default_rng(len(shape)))
    np_fn = np.sum if op == "reduce_sum" else np.max
    assert out.shape == np_fn(x, axis=axes, keepdims=keepdims).shape
    check_vjp(c, rng, max_coords=8)
