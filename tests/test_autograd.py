"""Eager autograd semantics, as in PyTorch: accumulation, no_grad, detach, retain_graph."""

import numpy as np
import pytest

import graphc
from graphc.errors import GraphcError


def leaf(values):
    return graphc.tensor(values, requires_grad=True)


def test_backward_accumulates_into_leaves():
    x = leaf([1.0, 2.0, 3.0])
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0, 6.0])
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [5.0, 7.0, 9.0])
    x.grad = None
    x.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.0, 1.0])


def test_reused_values_sum_their_cotangents():
    a = leaf([2.0])
    b = a + a
    c = b * b  # c = 4 a^2 -> dc/da = 8a
    c.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [16.0])


def test_no_grad_and_detach_cut_the_graph():
    x = leaf([1.0, 2.0])
    with graphc.no_grad():
        y = x * 2
    assert not y.requires_grad
    z = (x * x.detach()).sum()  # d/dx = x (the detached factor is a constant)
    z.backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 2.0])


def test_non_scalar_backward_needs_a_gradient():
    x = leaf([1.0, 2.0])
    y = x * 3
    with pytest.raises(GraphcError, match="scalar outputs"):
        y.backward()
    y.backward(graphc.tensor([1.0, 10.0]))
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 30.0])


def test_second_backward_needs_retain_graph():
    x = leaf([1.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [4.0])
    with pytest.raises(GraphcError, match="second time"):
        y.backward()


def test_in_place_update_of_a_saved_tensor_is_detected():
    x = leaf([1.0, 2.0])
    y = x * 1.0
    z = (y * y).sum()
    with graphc.no_grad():
        y.add_(1.0)
    with pytest.raises(GraphcError, match="modified by an in-place operation"):
        z.backward()


def test_in_place_on_a_leaf_that_requires_grad_is_refused():
    x = leaf([1.0])
    with pytest.raises(GraphcError, match="leaf tensor that requires grad"):
        x.add_(1.0)
    with graphc.no_grad():
        x.add_(1.0)
    np.testing.assert_allclose(x.detach().numpy(), [2.0])


def test_non_leaf_in_place_keeps_gradients_flowing():
    x = leaf([1.0, 2.0])
    y = x * 2
    y += x  # y = 3x
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])


def test_requires_grad_rules():
    with pytest.raises(GraphcError, match="floating-point"):
        graphc.tensor([1, 2]).requires_grad_()
    y = leaf([1.0]) * 2
    with pytest.raises(GraphcError, match="leaf"):
        y.requires_grad = False
    assert graphc.tensor([1.0]).is_leaf and not y.is_leaf


def test_gradient_through_max_pool_and_conv_matches_finite_differences(rng):
    x0 = rng.standard_normal((1, 2, 6, 6))
    w0 = rng.standard_normal((3, 2, 3, 3))

    def f(x, w):
        return graphc.nn.functional.max_pool2d(graphc.nn.functional.conv2d(x, w), 2).sum()

    x = graphc.tensor(x0, requires_grad=True)
    w = graphc.tensor(w0, requires_grad=True)
    f(x, w).backward()
    eps = 1e-6
    for idx in [(0, 1, 2, 2), (2, 0, 1, 1)]:
        wp, wm = w0.copy(), w0.copy()
        wp[idx] += eps
        wm[idx] -= eps
        fd = (
            f(graphc.tensor(x0), graphc.tensor(wp)).item()
            - f(graphc.tensor(x0), graphc.tensor(wm)).item()
        ) / (2 * eps)
        np.testing.assert_allclose(w.grad.numpy()[idx], fd, rtol=1e-6)
