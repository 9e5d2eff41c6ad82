"""matmul with its transpose flags and batch dims: rule vs reference, VJP vs finite differences,
values and gradients vs PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
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
    vjp,
)

from graphc import dtypes
from graphc.errors import ShapeError


@pytest.mark.parametrize("c", params(CASES["linalg"]))
def test_reference_keeps_the_rules_promise(c, rng):
    check_rule_and_ref(c, rng)


@pytest.mark.parametrize("c", params(differentiable_cases(CASES["linalg"])))
def test_vjp_matches_finite_differences(c, rng):
    check_vjp(c, rng)


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("batch", [(), (2,), (2, 3)])
def test_matmul_matches_torch(trans_a, trans_b, batch, torch, rng):
    m, k, n = 5, 7, 3
    a = rng.standard_normal(batch + ((k, m) if trans_a else (m, k))).astype(np.float32)
    b = rng.standard_normal(batch + ((n, k) if trans_b else (k, n))).astype(np.float32)
    at = torch.tensor(a, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    out = (at.mT if trans_a else at) @ (bt.mT if trans_b else bt)
    attrs = {"trans_a": trans_a, "trans_b": trans_b}
    np.testing.assert_allclose(run_ref("matmul", [a, b], attrs), out.detach(), rtol=1e-5, atol=1e-6)
    ct = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(torch.from_numpy(ct))
    ga, gb = vjp("matmul", [a, b], attrs, ct)
    np.testing.assert_allclose(ga, at.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gb, bt.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_second_derivatives(trans_a, trans_b, rng):
    m, k, n = 4, 3, 5
    a = rng.standard_normal((2, k, m) if trans_a else (2, m, k))
    b = rng.standard_normal((2, n, k) if trans_b else (2, k, n))
    check_second_order("matmul", [a, b], {"trans_a": trans_a, "trans_b": trans_b}, rng)


def test_flops_count_multiply_adds():
    from graphc.ops import OPS

    op = OPS["matmul"]
    a, b = t((2, 7, 5)), t((2, 3, 7))
    attrs = {"trans_a": True, "trans_b": True}
    out = infer("matmul", a, b, **attrs)
    assert out.shape == (2, 5, 3)
    assert op.flops(out, a, b, **attrs) == 2 * 2 * 5 * 3 * 7


@pytest.mark.parametrize(
    "types, attrs, message",
    [
        ([t((3, 4)), t((5, 2))], {}, r"a is \[3x4\] but b is \[5x2\]"),
        ([t((3, 4)), t((3, 2))], {"trans_b": True}, r"a is \[3x4\] but b\^T is \[2x3\]"),
        ([t((4, 3)), t((4, 2))], {"trans_a": False}, "inner dimensions differ"),
        ([t((2, 3, 4)), t((3, 4, 5))], {}, "equal batch dimensions"),
        ([t((4,)), t((4, 2))], {}, "needs matrices"),
        ([t((3, 4)), t((4, 2), F64)], {}, "share a floating dtype"),
        ([t((3, 4), dtypes.int64), t((4, 2), dtypes.int64)], {}, "share a floating dtype"),
    ],
)
def test_invalid_operands_are_refused(types, attrs, message):
    with pytest.raises(ShapeError, match=message):
        infer("matmul", *types, **attrs)
