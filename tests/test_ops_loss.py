"""binary_cross_entropy: rule vs reference, VJP vs finite differences, and values and both
gradients vs PyTorch, at the ends of [0, 1] too, where PyTorch's clamps and gradient formula
decide."""

from __future__ import annotations

import numpy as np
import pytest
from op_cases import (
    CASES,
    check_rule_and_ref,
    check_vjp,
    differentiable_cases,
    infer,
    params,
    run_ref,
    t,
    vjp,
)

from graphc import dtypes
from graphc.errors import ShapeError


@pytest.mark.parametrize("c", params(CASES["loss"]))
def test_reference_keeps_the_rules_promise(c, rng):
    check_rule_and_ref(c, rng)


@pytest.mark.parametrize("c", params(differentiable_cases(CASES["loss"])))
def test_vjp_matches_finite_differences(c, rng):
    check_vjp(c, rng)


def _torch_bce(torch, x, y, ct):
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.tensor(y, requires_grad=True)
    out = torch.nn.functional.binary_cross_entropy(xt, yt, reduction="none")
    out.backward(torch.tensor(ct))
    return out.detach().numpy(), xt.grad.numpy(), yt.grad.numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch_on_random_values(torch, rng, dtype):
    x = rng.uniform(0.001, 0.999, (5, 7)).astype(dtype)
    y = rng.uniform(0, 1, (5, 7)).astype(dtype)
    y[0] = np.round(y[0])
    ct = rng.standard_normal((5, 7)).astype(dtype)
    want, want_gx, want_gy = _torch_bce(torch, x, y, ct)
    rtol = 2e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(run_ref("binary_cross_entropy", [x, y], {}), want, rtol=rtol)
    gx, gy = vjp("binary_cross_entropy", [x, y], {}, ct)
    np.testing.assert_allclose(gx, want_gx, rtol=rtol)
    np.testing.assert_allclose(gy, want_gy, rtol=rtol)


def test_ends_of_the_interval_follow_torchs_clamps_and_gradient(torch):
    ends = [0.0, 1.0, 1e-30, 1e-45, 1.0 - 2**-24, 0.5]
    x = np.array(ends * 2, np.float32)
    y = np.array([0.0] * 6 + [1.0] * 6, np.float32)
    ct = np.ones(12, np.float32)
    want, want_gx, _ = _torch_bce(torch, x, y, ct)
    out = run_ref("binary_cross_entropy", [x, y], {})
    np.testing.assert_allclose(out, want, rtol=1e-6)
    assert out.max() == 100.0  # a certain, wrong prediction costs 100, not inf
    (gx,) = vjp("binary_cross_entropy", [x, y], {}, ct, wrt=[0])
    np.testing.assert_allclose(gx, want_gx, rtol=1e-6)
    assert gx[6] == np.float32(-1e12)  # x = 0, y = 1: pushed up, not stuck at 0


def test_nan_propagates():
    x = np.array([np.nan, 0.5], np.float32)
    y = np.array([1.0, np.nan], np.float32)
    assert np.isnan(run_ref("binary_cross_entropy", [x, y], {})).all()


def test_operands_must_agree():
    with pytest.raises(ShapeError, match="operand shapes differ"):
        infer("binary_cross_entropy", t((3,)), t((4,)))
    with pytest.raises(ShapeError, match="needs a floating-point"):
        infer("binary_cross_entropy", t((3,), dtypes.int64), t((3,), dtypes.int64))
