"""Collective ops (all_reduce_start / all_reduce_wait) on a one-process local communicator:
rules vs references, VJPs vs finite differences, and invalid operands. Multi-rank behaviour
is the distributed tests' business; here a reduction of one rank's data is that data."""

from __future__ import annotations

import numpy as np
import pytest
from op_cases import (
    CASES,
    F32,
    I64,
    check_rule_and_ref,
    check_vjp,
    differentiable_cases,
    infer,
    local_comm,
    params,
    run_ref,
    t,
)

from graphc import dtypes
from graphc.errors import ShapeError

COMM = t((), I64)


@pytest.mark.parametrize("c", params(CASES["collective"]))
def test_reference_keeps_the_rules_promise(c, rng):
    check_rule_and_ref(c, rng)


@pytest.mark.parametrize("c", params(differentiable_cases(CASES["collective"])))
def test_vjp_matches_finite_differences(c, rng):
    check_vjp(c, rng)


def test_start_packs_and_wait_scales(rng):
    comm = local_comm(rng, (), np.int64)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((4,))
    packed = run_ref("all_reduce_start", [comm, a, b], {})
    np.testing.assert_array_equal(packed, np.concatenate([a.reshape(-1), b]))
    out = run_ref("all_reduce_wait", [comm, packed], {"scale": 0.5})
    np.testing.assert_allclose(out, 0.5 * packed, rtol=1e-15)


@pytest.mark.parametrize(
    "op, types, attrs, message",
    [
        ("all_reduce_start", [t((1,), I64), t((3,))], {}, r"communicator input must be an i64\[\]"),
        ("all_reduce_start", [COMM, t((3,))], {"reduction": "prod"}, "reduction must be one"),
        ("all_reduce_start", [COMM], {}, "at least one tensor"),
        ("all_reduce_start", [COMM, t((3,)), t((2,), I64)], {}, "must share one dtype"),
        ("all_reduce_start", [COMM, t((3,), dtypes.bool_)], {}, "must share one dtype"),
        ("all_reduce_wait", [COMM, t((3, 2))], {}, "expects the 1-D output"),
        ("all_reduce_wait", [COMM, t((3,), I64)], {"scale": 0.5}, "only floating-point"),
        ("all_reduce_wait", [COMM, t((3,), F32)], {"reduction": "avg"}, "reduction must be one"),
    ],
)
def test_invalid_operands_are_refused(op, types, attrs, message):
    with pytest.raises(ShapeError, match=message):
        infer(op, *types, **attrs)
