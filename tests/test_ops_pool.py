"""Max and average pooling and their gradient ops: rules vs references, VJPs vs finite
differences, values and gradients vs PyTorch (padding, ceil_mode, dilation, count_include_pad,
divisor_override), and max pooling's gradient going to the first maximum of each window."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import torch_or_skip
from hypothesis import given, settings
from hypothesis import strategies as st
from op_cases import (
    CASES,
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


@pytest.mark.parametrize("c", params(CASES["pool"]))
def test_reference_keeps_the_rules_promise(c, rng):
    check_rule_and_ref(c, rng)


@pytest.mark.parametrize("c", params(differentiable_cases(CASES["pool"])))
def test_vjp_matches_finite_differences(c, rng):
    check_vjp(c, rng)


# (input shape, attrs); kernel_size and stride always given, as graphc's op requires
MAX_GEOMETRIES = [
    ((2, 3, 8, 8), {"kernel_size": (2, 2), "stride": (2, 2)}),
    ((1, 2, 7, 9), {"kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1)}),
    ((1, 2, 7, 9), {"kernel_size": (3, 2), "stride": (2, 2), "padding": (1, 1), "ceil_mode": True}),
    ((2, 1, 6, 5), {"kernel_size": (2, 3), "stride": (3, 1), "ceil_mode": True}),
    ((1, 2, 9, 8), {"kernel_size": (2, 2), "stride": (1, 2), "dilation": (2, 3)}),
    ((1, 1, 5, 7), {"kernel_size": (3, 3), "stride": (1, 1), "padding": (1, 1)}),
    ((1, 1, 1, 1), {"kernel_size": (1, 1), "stride": (1, 1)}),
    ((2, 6, 28, 28), {"kernel_size": (2, 2), "stride": (2, 2)}),  # the ConvNet's pool
]
AVG_GEOMETRIES = [
    ((2, 3, 8, 8), {"kernel_size": (2, 2), "stride": (2, 2)}),
    ((1, 2, 7, 9), {"kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1)}),
    (
        (1, 2, 7, 9),
        {"kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1), "count_include_pad": False},
    ),
    ((1, 2, 7, 9), {"kernel_size": (3, 2), "stride": (2, 2), "padding": (1, 1), "ceil_mode": True}),
    (
        (2, 1, 6, 7),
        {
            "kernel_size": (3, 3),
            "stride": (2, 2),
            "padding": (1, 1),
            "ceil_mode": True,
            "count_include_pad": False,
        },
    ),
    ((2, 1, 6, 5), {"kernel_size": (2, 3), "stride": (3, 1), "ceil_mode": True}),
    (
        (1, 2, 5, 6),
        {"kernel_size": (2, 2), "stride": (1, 2), "padding": (1, 1), "divisor_override": 3},
    ),
]


def _torch_pool(torch, kind, x, attrs):
    F = torch.nn.functional
    a = dict(attrs)
    k, s = a.pop("kernel_size"), a.pop("stride")
    pool = F.max_pool2d if kind == "max" else F.avg_pool2d
    return pool(x, k, s, **a)


def _check_against_torch(torch, kind, x, attrs, rng, rtol=1e-6):
    op = f"{kind}_pool2d"
    xt = torch.tensor(x, requires_grad=True)
    out = _torch_pool(torch, kind, xt, attrs)
    np.testing.assert_allclose(run_ref(op, [x], attrs), out.detach(), rtol=rtol, atol=1e-7)
    ct = rng.standard_normal(out.shape).astype(x.dtype)
    out.backward(torch.from_numpy(ct))
    (g,) = vjp(op, [x], attrs, ct)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=rtol, atol=1e-7)


@pytest.mark.parametrize("x_shape, attrs", MAX_GEOMETRIES, ids=str)
def test_max_pool_matches_torch(x_shape, attrs, torch, rng):
    _check_against_torch(torch, "max", rng.standard_normal(x_shape).astype(np.float32), attrs, rng)


@pytest.mark.parametrize("x_shape, attrs", MAX_GEOMETRIES, ids=str)
def test_max_pool_gradient_goes_to_the_first_maximum(x_shape, attrs, torch, rng):
    """With many ties (small integers), each window's cotangent lands on its first maximum
    in row-major window order, as PyTorch does — including windows that overlap padding."""
    x = rng.integers(-1, 2, x_shape).astype(np.float32)
    _check_against_torch(torch, "max", x, attrs, rng)


@pytest.mark.parametrize("x_shape, attrs", MAX_GEOMETRIES, ids=str)
def test_max_pool_padding_never_takes_the_gradient(x_shape, attrs, torch, rng):
    """Inputs of -inf tie with the -inf padding: the cotangent still goes to an input."""
    x = np.where(rng.random(x_shape) < 0.7, -np.inf, rng.standard_normal(x_shape))
    _check_against_torch(torch, "max", x.astype(np.float32), attrs, rng)


def test_max_pool_nan_is_the_maximum_and_its_first_nan_takes_the_gradient():
    x = np.array([[[[1.0, np.nan, 3.0, np.nan, 2.0, 0.5]]]])
    attrs = {"kernel_size": (1, 3), "stride": (1, 3)}
    out = run_ref("max_pool2d", [x], attrs)
    assert np.isnan(out[0, 0, 0, 0]) and np.isnan(out[0, 0, 0, 1])
    (g,) = vjp("max_pool2d", [x], attrs, np.array([[[[10.0, 20.0]]]]))
    np.testing.assert_array_equal(g, [[[[0.0, 10.0, 0.0, 20.0, 0.0, 0.0]]]])


@pytest.mark.parametrize("x_shape, attrs", AVG_GEOMETRIES, ids=str)
def test_avg_pool_matches_torch(x_shape, attrs, torch, rng):
    _check_against_torch(torch, "avg", rng.standard_normal(x_shape).astype(np.float32), attrs, rng)


@pytest.mark.parametrize("x_shape, attrs", AVG_GEOMETRIES, ids=str)
def test_avg_pool_grad_op_and_its_vjp_match_torch(x_shape, attrs, torch, rng):
    """avg_pool2d_grad equals torch's avg_pool2d backward, and its own VJP (the adjoint of
    the adjoint: avg_pool2d again) equals torch's double backward."""
    x = torch.tensor(rng.standard_normal(x_shape), requires_grad=True)
    out = _torch_pool(torch, "avg", x, attrs)
    g = torch.tensor(rng.standard_normal(out.shape), requires_grad=True)
    (dx,) = torch.autograd.grad(out, x, g, create_graph=True)
    grad_attrs = {"input_shape": x_shape, **attrs}
    np.testing.assert_allclose(
        run_ref("avg_pool2d_grad", [g.detach().numpy()], grad_attrs), dx.detach(), rtol=1e-12
    )
    ct = rng.standard_normal(x_shape)
    dx.backward(torch.from_numpy(ct))
    (dg,) = vjp("avg_pool2d_grad", [g.detach().numpy()], grad_attrs, ct)
    np.testing.assert_allclose(dg, g.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("x_shape, attrs", AVG_GEOMETRIES[:4], ids=str)
def test_second_derivatives_of_avg_pool(x_shape, attrs, rng):
    check_second_order("avg_pool2d", [rng.standard_normal(x_shape)], attrs, rng)


@pytest.mark.parametrize(
    "op, types, attrs, message",
    [
        (
            "max_pool2d",
            [t((1, 1, 5, 5))],
            {"kernel_size": (2, 2), "stride": (1, 1), "padding": (2, 0)},
            "padding .* must be at most half the kernel size",
        ),
        ("max_pool2d", [t((1, 5, 5))], {"kernel_size": (2, 2), "stride": (2, 2)}, "4-D NCHW"),
        ("max_pool2d", [t((1, 1, 1, 5))], {"kernel_size": (2, 2), "stride": (2, 2)}, "too small"),
        (
            "max_pool2d",
            [t((1, 1, 4, 4))],
            {"kernel_size": (2, 2), "stride": (0, 1)},
            "must be positive",
        ),
        (
            "avg_pool2d",
            [t((1, 1, 4, 4), dtypes.int64)],
            {"kernel_size": (2, 2), "stride": (2, 2)},
            "needs a floating-point",
        ),
        (
            "avg_pool2d_grad",
            [t((1, 1, 3, 3))],
            {"input_shape": (1, 1, 4, 4), "kernel_size": (2, 2), "stride": (2, 2)},
            r"cotangent f32\[1,1,3,3\] does not match the pooled f32\[1,1,2,2\]",
        ),
        (
            "max_pool2d_grad",
            [t((1, 1, 2, 3)), t((1, 1, 4, 4))],
            {"kernel_size": (2, 2), "stride": (2, 2)},
            "does not match the pooled",
        ),
    ],
)
def test_invalid_operands_are_refused(op, types, attrs, message):
    with pytest.raises(ShapeError, match=message):
        infer(op, *types, **attrs)


# ---- random geometries (property-based) -------------------------------------------------------


def _every_window_reads_the_input(size, k, s, p, d, n_out):
    # Otherwise a max window holds only padding: its value is -inf and PyTorch's gradient
    # for it writes out of bounds, so there is no oracle to compare with.
    return all(any(0 <= o * s - p + j * d < size for j in range(k)) for o in range(n_out))


@st.composite
def pool_geometry(draw):
    kind = draw(st.sampled_from(["max", "avg"]))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    attrs = {
        "kernel_size": k,
        "stride": (draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        "padding": (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2))),
        "ceil_mode": draw(st.booleans()),
    }
    if kind == "max":
        attrs["dilation"] = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    else:
        attrs["count_include_pad"] = draw(st.booleans())
        attrs["divisor_override"] = draw(st.sampled_from([None, None, 2, 7]))
    x = (1, 2, draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    return kind, x, attrs


@settings(max_examples=60, deadline=None)
@given(geometry=pool_geometry(), seed=st.integers(0, 2**16))
def test_random_geometries(geometry, seed):
    kind, x_shape, attrs = geometry
    d = attrs.get("dilation", (1, 1))
    sizes = [
        torch_out_size(
            x_shape[2 + i],
            attrs["kernel_size"][i],
            attrs["stride"][i],
            attrs["padding"][i],
            d[i],
            attrs["ceil_mode"],
        )
        for i in range(2)
    ]
    if min(sizes) <= 0:
        with pytest.raises(ShapeError, match="too small"):
            infer(f"{kind}_pool2d", t(x_shape), **attrs)
        return
    assert infer(f"{kind}_pool2d", t(x_shape), **attrs).shape == (*x_shape[:2], *sizes)
    covered = all(
        _every_window_reads_the_input(
            x_shape[2 + i], attrs["kernel_size"][i], attrs["stride"][i], attrs["padding"][i],
            d[i], sizes[i],
        )
        for i in range(2)
    )  # fmt: skip
    if not covered:
        return
    torch = torch_or_skip()
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, x_shape).astype(np.float64)  # ties on purpose
    _check_against_torch(torch, kind, x, attrs, rng, rtol=1e-12)
