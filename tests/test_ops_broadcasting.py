"""Broadcasting and dtype promotion through the eager Tensor API (graphc.functions), where the
IR's explicit broadcast_to / cast nodes are inserted: values, result dtypes (PyTorch's rules),
and gradients of broadcast operands summed back to their shapes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import graphc

BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "maximum": lambda a, b: a.maximum(b),
    "minimum": lambda a, b: a.minimum(b),
}
SHAPE_PAIRS = [
    ((3, 1, 5), (4, 1)),
    ((), (2, 3)),
    ((1,), (7,)),
    ((2, 1), (1, 3)),
    ((5,), (5,)),
    ((4, 1, 1), (1, 3, 2)),
    ((2, 3), ()),
]


def _sum_to(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """numpy's reading of broadcasting's adjoint: sum the broadcast axes away."""
    lead = g.ndim - len(shape)
    g = g.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, d in enumerate(shape) if d == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True).reshape(shape)


def _eager_grads(fn, arrays, ct):
    xs = [graphc.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*xs)
    (out * graphc.tensor(ct)).sum().backward()
    return out.detach().numpy(), [x.grad.numpy() for x in xs]


def _finite_differences(fn, arrays, ct, eps=1e-6):
    def loss(xs):
        return float((fn(*[graphc.tensor(x) for x in xs]).numpy() * ct).sum())

    grads = []
    for i, a in enumerate(arrays):
        g = np.zeros(a.shape)
        for idx in np.ndindex(a.shape):
            xs = [x.copy() for x in arrays]
            xs[i][idx] += eps
            up = loss(xs)
            xs[i][idx] -= 2 * eps
            g[idx] = (up - loss(xs)) / (2 * eps)
        grads.append(g)
    return grads


def _operands(rng, shapes):
    # interleaved grids: no ties for maximum/minimum, nothing near 0 for div
    a = rng.permutation(np.arange(int(np.prod(shapes[0])))).reshape(shapes[0]) * 0.1 + 0.53
    b = rng.permutation(np.arange(int(np.prod(shapes[1])))).reshape(shapes[1]) * 0.1 + 0.58
    return [
        np.asarray(a * rng.choice([-1, 1], a.shape)),
        np.asarray(b * rng.choice([-1, 1], b.shape)),
    ]


@pytest.mark.parametrize("op", sorted(BINARY))
@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=str)
def test_broadcast_binary_ops(op, shapes, rng):
    """Values equal numpy's broadcasting; gradients are summed back to each operand's shape
    (checked against torch autograd when installed, else finite differences)."""
    fn = BINARY[op]
    arrays = _operands(rng, shapes)
    out_shape = np.broadcast_shapes(*shapes)
    ct = rng.standard_normal(out_shape)
    out, grads = _eager_grads(fn, arrays, ct)
    np_fn = {"maximum": np.maximum, "minimum": np.minimum}.get(op, fn)
    np.testing.assert_allclose(out, np_fn(*arrays), rtol=1e-12)
    try:
        import torch
    except ImportError:
        expect = _finite_differences(fn, arrays, ct)
        tol = {"rtol": 1e-6, "atol": 1e-7}
    else:
        ts = [torch.tensor(a, requires_grad=True) for a in arrays]
        (fn(*ts) * torch.tensor(ct)).sum().backward()
        expect = [x.grad.numpy() for x in ts]
        tol = {"rtol": 1e-12}
    for g, e, a in zip(grads, expect, arrays, strict=True):
        assert g.shape == a.shape
        np.testing.assert_allclose(g, e, **tol)


@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=str)
def test_where_and_comparisons_broadcast(shapes, rng):
    a, b = _operands(rng, shapes)
    ta, tb = graphc.tensor(a, requires_grad=True), graphc.tensor(b, requires_grad=True)
    cond = ta < tb
    assert cond.dtype == graphc.bool and tuple(cond.shape) == np.broadcast_shapes(*shapes)
    out = graphc.where(cond, ta, tb)
    np.testing.assert_array_equal(out.detach().numpy(), np.where(a < b, a, b))
    ct = rng.standard_normal(out.shape)
    (out * graphc.tensor(ct)).sum().backward()
    mask = np.broadcast_to(a < b, ct.shape)
    np.testing.assert_allclose(ta.grad.numpy(), _sum_to(np.where(mask, ct, 0), a.shape))
    np.testing.assert_allclose(tb.grad.numpy(), _sum_to(np.where(mask, 0, ct), b.shape))


def test_matmul_broadcasts_batch_dims(torch, rng):
    a = rng.standard_normal((2, 1, 3, 4))
    b = rng.standard_normal((5, 4, 2))
    ga, gb = graphc.tensor(a, requires_grad=True), graphc.tensor(b, requires_grad=True)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    out, expect = ga @ gb, ta @ tb
    np.testing.assert_allclose(out.detach().numpy(), expect.detach(), rtol=1e-12)
    ct = rng.standard_normal(tuple(expect.shape))
    (out * graphc.tensor(ct)).sum().backward()
    (expect * torch.tensor(ct)).sum().backward()
    np.testing.assert_allclose(ga.grad.numpy(), ta.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(gb.grad.numpy(), tb.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("a_shape, b_shape", [((4,), (4,)), ((4,), (4, 3)), ((2, 3, 4), (4,))])
def test_matmul_with_vectors(a_shape, b_shape, torch, rng):
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    out = graphc.tensor(a) @ graphc.tensor(b)
    expect = torch.tensor(a) @ torch.tensor(b)
    assert tuple(out.shape) == tuple(expect.shape)
    np.testing.assert_allclose(out.numpy(), expect, rtol=1e-12)


# ---- Python scalars and dtype promotion --------------------------------------------------


def _make(kind: str):
    """(graphc tensor, numpy array) pairs for the promotion table."""
    values = {
        "f32[3]": np.array([1.5, -2.0, 3.0], np.float32),
        "f64[3]": np.array([1.5, -2.0, 3.0]),
        "i64[3]": np.array([1, -2, 3]),
        "i32[3]": np.array([1, -2, 3], np.int32),
        "bool[3]": np.array([True, False, True]),
        "f64[]": np.array(2.5),
        "f32[]": np.array(2.5, np.float32),
        "i64[]": np.array(2),
        "bool[]": np.array(True),
    }
    if kind in values:
        return graphc.from_numpy(values[kind]), values[kind]
    return {"int": 2, "float": 2.5, "bool": True}[kind], None


# (left, right, result dtype): PyTorch's documented type promotion
PROMOTION = [
    ("i64[3]", "f32[3]", "float32"),
    ("bool[3]", "i64[3]", "int64"),
    ("bool[3]", "i32[3]", "int32"),
    ("i32[3]", "i64[3]", "int64"),
    ("f32[3]", "f64[3]", "float64"),
    ("f64[]", "f32[3]", "float32"),  # a 0-d tensor does not widen its category
    ("i64[]", "f32[3]", "float32"),
    ("f32[]", "i64[3]", "float32"),  # but it does lift the category
    ("i64[]", "i32[3]", "int32"),
    ("bool[]", "i32[3]", "int32"),
    ("f64[]", "f32[]", "float64"),
    ("f32[3]", "int", "float32"),  # Python scalars are weak
    ("f64[3]", "float", "float64"),
    ("i32[3]", "int", "int32"),
    ("i64[3]", "float", "float32"),
    ("bool[3]", "int", "int64"),
    ("bool[3]", "bool", "bool"),
    ("int", "i32[3]", "int32"),
    ("float", "i64[3]", "float32"),
]


@pytest.mark.parametrize("left, right, expect", PROMOTION, ids=str)
@pytest.mark.parametrize("op", ["add", "mul"])
def test_dtype_promotion(left, right, expect, op):
    a, a_np = _make(left)
    b, b_np = _make(right)
    out = getattr(graphc, op)(a, b)
    assert out.dtype.name == expect
    np_a = a_np if a_np is not None else a
    np_b = b_np if b_np is not None else b
    ref = np_a + np_b if op == "add" else np_a * np_b
    if expect == "bool":
        ref = (np.logical_or if op == "add" else np.logical_and)(np_a, np_b)
    np.testing.assert_allclose(out.numpy().astype(np.float64), np.asarray(ref, np.float64))


@pytest.mark.parametrize("left, right, expect", PROMOTION, ids=str)
def test_promotion_table_agrees_with_torch(left, right, expect, torch):
    def to_torch(kind):
        t, arr = _make(kind)
        return torch.from_numpy(arr) if arr is not None else t

    assert str((to_torch(left) + to_torch(right)).dtype) == f"torch.{expect}"


def test_true_division_of_integers_is_float():
    out = graphc.tensor([3, 4]) / 2
    assert out.dtype == graphc.float32
    np.testing.assert_allclose(out.numpy(), [1.5, 2.0])


def test_power_operator_and_its_gradient():
    x = graphc.tensor([0.5, -1.5, 2.0], requires_grad=True)
    y = x**3
    np.testing.assert_allclose(y.detach().numpy(), [0.125, -3.375, 8.0])
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.75, 6.75, 12.0])  # 3 x^2


def test_scalar_operands_and_their_gradients(torch):
    x0 = np.array([0.5, -1.25, 2.0])
    x = graphc.tensor(x0, requires_grad=True)
    xt = torch.tensor(x0, requires_grad=True)
    out = 2 - x * 3 + x / 4 - 1 / x + x**2 + 2.0**x
    expect = 2 - xt * 3 + xt / 4 - 1 / xt + xt**2 + 2.0**xt
    np.testing.assert_allclose(out.detach().numpy(), expect.detach(), rtol=1e-12)
    out.sum().backward()
    expect.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-12)


# ---- random broadcastable shapes (property-based) ------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4),
    op=st.sampled_from(["add", "sub", "mul"]),
    seed=st.integers(0, 2**16),
)
def test_random_broadcast_shapes(shapes, op, seed):
    """The gradient of a broadcast operand is the cotangent (times the other operand) summed
    over the broadcast axes: numpy computes that independently of graphc."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shapes.input_shapes[0])
    b = rng.standard_normal(shapes.input_shapes[1])
    ct = rng.standard_normal(shapes.result_shape)
    out, (ga, gb) = _eager_grads(BINARY[op], [a, b], ct)
    np.testing.assert_allclose(out, BINARY[op](a, b), rtol=1e-12)
    bcast = np.broadcast_arrays(a, b)
    da = {"add": ct, "sub": ct, "mul": ct * bcast[1]}[op]
    db = {"add": ct, "sub": -ct, "mul": ct * bcast[0]}[op]
    np.testing.assert_allclose(ga, _sum_to(da, a.shape), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gb, _sum_to(db, b.shape), rtol=1e-12, atol=1e-12)
