"""softmax, log_softmax and one_hot: rules vs references, VJPs vs finite differences, values
and gradients vs PyTorch (including inputs large enough to overflow a naive exp)."""

from __future__ import annotations

import numpy as np
import pytest
from op_cases import (
    CASES,
    F64,
    I64,
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
from graphc.interpreter import ExecutionError, interpret
from graphc.ir import GraphBuilder


@pytest.mark.parametrize("c", params(CASES["nn"]))
def test_reference_keeps_the_rules_promise(c, rng):
    check_rule_and_ref(c, rng)


@pytest.mark.parametrize("c", params(differentiable_cases(CASES["nn"])))
def test_vjp_matches_finite_differences(c, rng):
    check_vjp(c, rng)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape, axis", [((4, 10), 1), ((4, 10), 0), ((2, 3, 5), 1), ((7,), 0)])
def test_softmax_family_matches_torch(op, shape, axis, torch, rng):
    x = (rng.standard_normal(shape) * 30).astype(np.float32)  # exp would overflow unshifted
    x.reshape(-1)[0] = 200.0
    xt = torch.tensor(x, requires_grad=True)
    out = getattr(torch, op)(xt, axis)
    np.testing.assert_allclose(run_ref(op, [x], {"axis": axis}), out.detach(), rtol=1e-5, atol=1e-6)
    ct = rng.standard_normal(shape).astype(np.float32)
    out.backward(torch.from_numpy(ct))
    (g,) = vjp(op, [x], {"axis": axis}, ct)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_second_derivatives_of_softmax_family(op, rng):
    check_second_order(op, [rng.standard_normal((3, 5))], {"axis": 1}, rng)


def test_one_hot_matches_torch(torch, rng):
    labels = rng.integers(0, 7, (3, 5))
    expect = torch.nn.functional.one_hot(torch.from_numpy(labels), 7).numpy()
    out = run_ref("one_hot", [labels], {"num_classes": 7, "dtype": I64})
    np.testing.assert_array_equal(out, expect)


@pytest.mark.parametrize("ignore_index", [-100, 0, 3])
def test_one_hot_rows_equal_to_ignore_index_are_zero(ignore_index, torch):
    labels = np.array([3, ignore_index, 0, 1, ignore_index, 2])
    keep = labels != ignore_index
    # oracle: torch's one_hot of the kept labels, zero rows elsewhere
    expect = np.zeros((6, 4), np.float32)
    expect[keep] = torch.nn.functional.one_hot(torch.from_numpy(labels[keep]), 4).numpy()
    out = run_ref("one_hot", [labels], {"num_classes": 4, "ignore_index": ignore_index})
    np.testing.assert_array_equal(out, expect)


def test_out_of_range_class_is_an_execution_error():
    b = GraphBuilder()
    y = b.add_input("y", t((3,), I64))
    graph = b.build([b.one_hot(y, num_classes=4)])
    with pytest.raises(ExecutionError, match="class index 4 is out of range for 4 classes"):
        interpret(graph, [np.array([0, 4, 1])])
    with pytest.raises(ExecutionError, match="class index -1"):
        interpret(graph, [np.array([0, -1, 1])])


@pytest.mark.parametrize(
    "op, types, attrs, message",
    [
        ("softmax", [t((3, 4))], {"axis": 2}, "axis 2 is out of range"),
        ("log_softmax", [t((3, 4))], {"axis": -1}, "axis -1 is out of range"),
        ("log_softmax", [t(())], {"axis": 0}, "out of range"),
        ("softmax", [t((3,), dtypes.int64)], {"axis": 0}, "needs a floating-point"),
        ("one_hot", [t((3,))], {"num_classes": 4}, r"integer tensor.*\.long\(\)"),
        ("one_hot", [t((3,), I64)], {"num_classes": 0}, "num_classes must be positive"),
    ],
)
def test_invalid_operands_are_refused(op, types, attrs, message):
    with pytest.raises(ShapeError, match=message):
        infer(op, *types, **attrs)


def test_one_hot_result_type_follows_dtype_attr():
    assert infer("one_hot", t((2, 3), I64), num_classes=5, dtype=F64) == t((2, 3, 5), F64)


@pytest.mark.parametrize(
    "shape, affine",
    [((4, 3, 5, 6), True), ((7, 3), True), ((3, 2, 9), False), ((2, 3, 4, 4), False)],
)
def test_batch_norm_in_training_differentiates_through_its_statistics(shape, affine, rng):
    """F.batch_norm in training emits one batch_norm op whose VJP is the whole derivative
    through the batch mean and variance (PyTorch's formula): against float64 central
    differences of the normalisation written out in numpy."""
    import graphc
    import graphc.nn.functional as F

    c = shape[1]
    axes = tuple(i for i in range(len(shape)) if i != 1)
    eps = 1e-5
    x0 = rng.standard_normal(shape)
    w0, b0 = rng.standard_normal(c), rng.standard_normal(c)
    ct = rng.standard_normal(shape)
    per_channel = [1, c] + [1] * (len(shape) - 2)

    def loss(x, w, b):
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
        y = (x - mean) / np.sqrt(var + eps)
        if affine:
            y = y * w.reshape(per_channel) + b.reshape(per_channel)
        return float((y * ct).sum())

    x = graphc.tensor(x0, requires_grad=True)
    w = graphc.tensor(w0, requires_grad=True) if affine else None
    b = graphc.tensor(b0, requires_grad=True) if affine else None
    y = F.batch_norm(x, None, None, w, b, training=True, eps=eps)
    (y * graphc.tensor(ct)).sum().backward()
    grads = [(x0, x.grad)] + ([(w0, w.grad), (b0, b.grad)] if affine else [])
    for k, (value, got) in enumerate(grads):
        h = 1e-6
        expect = np.empty(value.size)
        for i in range(value.size):
            args = [x0.copy(), w0.copy(), b0.copy()]
            flat = args[k].reshape(-1)
            flat[i] += h
            up = loss(*args)
            flat[i] -= 2 * h
            expect[i] = (up - loss(*args)) / (2 * h)
        np.testing.assert_allclose(got.numpy().reshape(-1), expect, rtol=1e-5, atol=1e-6)
