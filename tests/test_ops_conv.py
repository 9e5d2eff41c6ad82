"""conv2d and its gradient ops: rules vs references, VJPs vs finite differences (the gradient
ops' VJPs emit conv ops again: second order), and values and gradients vs PyTorch over
stride, padding, dilation and groups."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import torch_or_skip
from hypothesis import given, settings
from hypothesis import strategies as st
from op_cases import (
    CASES,
    F64,
    check_rule_and_ref,
    check_second_order,
    check_vjp,
    differentiable_cases,
    infer,
    params,
    run_ref,
    t,
    torch_out_size,
    vjp,
)

from graphc import dtypes
from graphc.errors import ShapeError


@pytest.mark.parametrize("c", params(CASES["conv"]))
def test_reference_keeps_the_rules_promise(c, rng):
    check_rule_and_ref(c, rng)


@pytest.mark.parametrize("c", params(differentiable_cases(CASES["conv"])))
def test_vjp_matches_finite_differences(c, rng):
    check_vjp(c, rng)


# (input shape, weight shape, attrs): odd sizes, every attribute, depthwise, 1x1
GEOMETRIES = [
    ((2, 3, 9, 7), (4, 3, 3, 3), {}),
    ((1, 2, 8, 11), (3, 2, 3, 2), {"stride": (2, 3), "padding": (1, 2)}),
    ((2, 2, 9, 9), (2, 2, 3, 2), {"dilation": (2, 3), "padding": (2, 1)}),
    ((1, 6, 7, 6), (4, 3, 3, 3), {"groups": 2, "padding": (1, 1)}),
    ((2, 4, 7, 7), (4, 1, 3, 3), {"groups": 4, "stride": (2, 2), "padding": (1, 1)}),
    ((1, 4, 10, 9), (6, 2, 2, 3), {"groups": 2, "stride": (3, 2), "dilation": (2, 2)}),
    ((3, 5, 4, 4), (2, 5, 1, 1), {}),
    ((1, 1, 5, 5), (1, 1, 5, 5), {"padding": (4, 4)}),  # every window partly padding
    ((1, 3, 32, 32), (6, 3, 5, 5), {}),  # the reference ConvNet's first layer
]


def _full(attrs):
    return {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1, **attrs}


def _ids(geometries):
    return [f"x{list(x)}-w{list(w)}-{a}" for x, w, a in geometries]


@pytest.mark.parametrize("x_shape, w_shape, attrs", GEOMETRIES, ids=_ids(GEOMETRIES))
def test_conv2d_matches_torch(x_shape, w_shape, attrs, torch, rng):
    F = torch.nn.functional
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    out = F.conv2d(xt, wt, **_full(attrs))
    np.testing.assert_allclose(run_ref("conv2d", [x, w], attrs), out.detach(), rtol=1e-4, atol=1e-4)
    ct = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(torch.from_numpy(ct))
    gx, gw = vjp("conv2d", [x, w], attrs, ct)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gw, wt.grad.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("x_shape, w_shape, attrs", GEOMETRIES, ids=_ids(GEOMETRIES))
def test_gradient_ops_match_torch_nn_grad(x_shape, w_shape, attrs, torch, rng):
    """conv2d_input_grad is a transposed convolution; both match torch.nn.grad, and their
    own VJPs match torch's double backward through conv_transpose2d / conv2d."""
    full = _full(attrs)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    out_shape = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), **full).shape
    g = rng.standard_normal(out_shape).astype(np.float32)
    gt = torch.tensor(g, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    dx_t = torch.nn.grad.conv2d_input(x_shape, wt, gt, **full)
    dx = run_ref("conv2d_input_grad", [g, w], {"input_shape": x_shape, **attrs})
    np.testing.assert_allclose(dx, dx_t.detach(), rtol=1e-4, atol=1e-4)
    dw = run_ref("conv2d_weight_grad", [x, g], {"weight_shape": w_shape, **attrs})
    dw_t = torch.nn.grad.conv2d_weight(torch.from_numpy(x), w_shape, torch.from_numpy(g), **full)
    np.testing.assert_allclose(dw, dw_t, rtol=1e-4, atol=1e-4)

    ct = rng.standard_normal(x_shape).astype(np.float32)
    dx_t.backward(torch.from_numpy(ct))
    d_g, d_w = vjp("conv2d_input_grad", [g, w], {"input_shape": x_shape, **attrs}, ct)
    np.testing.assert_allclose(d_g, gt.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(d_w, wt.grad.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("x_shape, w_shape, attrs", GEOMETRIES[:6], ids=_ids(GEOMETRIES[:6]))
def test_second_derivatives_of_conv2d(x_shape, w_shape, attrs, rng):
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    check_second_order("conv2d", [x, w], attrs, rng)


@pytest.mark.parametrize(
    "op, types, attrs, message",
    [
        (
            "conv2d",
            [t((1, 4, 5, 5)), t((2, 3, 3, 3))],
            {},
            r"weight of size \[2, 3, 3, 3\] expects the input to have 3 channels, but got 4",
        ),
        ("conv2d", [t((1, 4, 5, 5)), t((3, 2, 3, 3))], {"groups": 2}, "not divisible by groups"),
        ("conv2d", [t((1, 3, 5, 5)), t((3, 1, 3, 3))], {"groups": 0}, "groups=0"),
        ("conv2d", [t((1, 3, 2, 5)), t((2, 3, 3, 3))], {}, "smaller than the dilated kernel"),
        ("conv2d", [t((1, 3, 5, 5)), t((2, 3, 3, 3))], {"dilation": (3, 1)}, "dilated kernel 7x3"),
        ("conv2d", [t((3, 5, 5)), t((2, 3, 3, 3))], {}, "4-D NCHW input and OIHW weight"),
        ("conv2d", [t((1, 3, 5, 5)), t((2, 3, 3, 3), F64)], {}, "must have the same dtype"),
        ("conv2d", [t((1, 3, 5, 5), dtypes.int64)] * 2, {}, "needs a floating-point"),
        ("conv2d", [t((1, 3, 5, 5)), t((2, 3, 3, 3))], {"stride": (0, 1)}, "invalid stride"),
        ("conv2d", [t((1, 3, 5, 5)), t((2, 3, 3, 3))], {"padding": (-1, 0)}, "invalid stride"),
        (
            "conv2d_input_grad",
            [t((1, 2, 4, 4)), t((2, 3, 3, 3))],
            {"input_shape": (1, 3, 5, 5)},
            r"cotangent f32\[1,2,4,4\] does not match output \[1,2,3,3\]",
        ),
        (
            "conv2d_weight_grad",
            [t((1, 3, 5, 5)), t((1, 2, 3, 3))],
            {"weight_shape": (2, 4, 3, 3)},
            "expects the input to have 4 channels",
        ),
    ],
)
def test_invalid_operands_are_refused(op, types, attrs, message):
    with pytest.raises(ShapeError, match=message):
        infer(op, *types, **attrs)


# ---- random geometries (property-based) -------------------------------------------------------


@st.composite
def conv_geometry(draw):
    groups = draw(st.integers(1, 3))
    x = (draw(st.integers(1, 2)), groups * draw(st.integers(1, 2)))
    x += (draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    w = (groups * draw(st.integers(1, 2)), x[1] // groups)
    w += (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    attrs = {
        "stride": (draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        "padding": (draw(st.integers(0, 2)), draw(st.integers(0, 2))),
        "dilation": (draw(st.integers(1, 2)), draw(st.integers(1, 2))),
        "groups": groups,
    }
    return x, w, attrs


@settings(max_examples=40, deadline=None)
@given(geometry=conv_geometry(), seed=st.integers(0, 2**16))
def test_random_geometries(geometry, seed):
    """The rule agrees with PyTorch's documented size formula (and refuses empty outputs);
    with PyTorch installed, values and gradients agree with it too."""
    x_shape, w_shape, attrs = geometry
    oh, ow = (
        torch_out_size(x_shape[2 + i], w_shape[2 + i], attrs["stride"][i], attrs["padding"][i],
                       attrs["dilation"][i])
        for i in range(2)
    )  # fmt: skip
    if oh <= 0 or ow <= 0:
        with pytest.raises(ShapeError, match="smaller than the dilated kernel"):
            infer("conv2d", t(x_shape), t(w_shape), **attrs)
        return
    assert infer("conv2d", t(x_shape), t(w_shape), **attrs).shape == (
        x_shape[0],
        w_shape[0],
        oh,
        ow,
    )
    torch = torch_or_skip()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    out = torch.nn.functional.conv2d(xt, wt, **attrs)
    np.testing.assert_allclose(
        run_ref("conv2d", [x, w], attrs), out.detach(), rtol=1e-10, atol=1e-12
    )
    ct = rng.standard_normal(out.shape)
    out.backward(torch.from_numpy(ct))
    gx, gw = vjp("conv2d", [x, w], attrs, ct)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gw, wt.grad.numpy(), rtol=1e-10, atol=1e-12)
