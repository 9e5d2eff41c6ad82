"""Native code vs the reference interpreter on the same traced graphs."""

import numpy as np
import pytest

import graphc
import graphc.nn.functional as F
from graphc.codegen.backend import native_executable
from graphc.frontend.compile import CompiledFunction
from graphc.interpreter import ExecutionError


def both(fn, *args, seed=0):
    ref = CompiledFunction(fn)
    nat = CompiledFunction(fn, backend=native_executable)
    graphc.manual_seed(seed)
    expect = ref(*args)
    graphc.manual_seed(seed)
    got = nat(*args)
    return expect, got


def close(expect, got, rtol=1e-6, atol=1e-6):
    if isinstance(expect, (tuple, list)):
        for e, g in zip(expect, got, strict=True):
            close(e, g, rtol, atol)
        return
    e, g = expect.numpy(), got.numpy()
    assert e.dtype == g.dtype and e.shape == g.shape
    np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)


def arr(rng, *shape, dtype=np.float32):
    return graphc.from_numpy(rng.standard_normal(shape).astype(dtype))


CASES = {
    "broadcast_arith": lambda x, y: (x * 2 - y.sum(0, keepdim=True)) / (y.abs() + 1),
    "reduce_axes": lambda x, y: (x.sum((0, 2)), y.amax(1), x.mean(), y.sum(-1, keepdim=True)),
    "unary": lambda x, y: (
        x.exp(),
        y.abs().log(),
        x.tanh(),
        x.sigmoid(),
        y.abs().sqrt(),
        (y.abs() + 1).rsqrt(),
        x**3,
        x.relu(),
        x.erf(),
        (x * 1e-4).expm1(),
        (y.abs() * 1e-3).log1p(),
    ),
    "compare_where": lambda x, y: (
        graphc.where(x > 0, x, y[0]),
        (x <= 0.1).float(),
        graphc.maximum(x, y[1]),
        graphc.minimum(x, 0.5),
    ),
    "views": lambda x, y: (
        x.transpose(0, 2) + 1,
        x[:, 1:4:2] * 2,
        x.permute(2, 0, 1).sum(0),
        y.t().exp(),
    ),
    "casts": lambda x, y: ((x * 10).long(), (x > 0).sum(), x.double() * 2, (x * 3).int().float()),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_elementwise_reduction_and_view_kernels(name, rng):
    x, y = arr(rng, 3, 5, 7), arr(rng, 5, 7)
    close(*both(CASES[name], x, y))


@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=2, stride=2),
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=3, stride=1, padding=1, dilation=2),
        dict(kernel_size=2, stride=2, ceil_mode=True),
    ],
)
def test_max_pool_forward_and_backward(kw, rng):
    x = arr(rng, 2, 3, 9, 7)

    def g(x):
        return F.max_pool2d(x, **kw)

    close(*both(g, x))
    w = graphc.nn.Parameter(graphc.ones(2, 3, 9, 7))

    def grad_of_pool(x):
        w.grad = None
        F.max_pool2d(x * w, **kw).sum().backward()
        return w.grad

    close(*both(grad_of_pool, x))


@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=2, stride=2),
        dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
        dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
        dict(kernel_size=2, stride=1, divisor_override=3),
    ],
)
def test_avg_pool_forward_and_backward(kw, rng):
    x = arr(rng, 2, 3, 8, 7)
    close(*both(lambda x: F.avg_pool2d(x, **kw), x))
    w = graphc.nn.Parameter(graphc.ones(2, 3, 8, 7))

    def grad_of_pool(x):
        w.grad = None
        (F.avg_pool2d(x * w, **kw) ** 2).sum().backward()
        return w.grad

    close(*both(grad_of_pool, x), rtol=1e-5)


@pytest.mark.parametrize("dim", [0, 1, 2])
def test_softmax_family_and_argmax(dim, rng):
    x = arr(rng, 3, 4, 5) * 4
    close(*both(lambda x: (F.softmax(x, dim), F.log_softmax(x, dim), x.argmax(dim)), x), rtol=1e-5)


def test_cross_entropy_step_and_label_check(rng):
    logits, labels = arr(rng, 6, 5), graphc.tensor([0, 4, 2, -100, 1, 3])
    close(*both(lambda a, b: F.cross_entropy(a, b, label_smoothing=0.1), logits, labels))
    nat = CompiledFunction(lambda a, b: F.cross_entropy(a, b), backend=native_executable)
    with pytest.raises(ExecutionError, match="class index 5 is out of range"):
        nat(logits, graphc.tensor([0, 4, 2, 5, 1, 3]))


def test_random_draws_match_the_reference_stream():
    e, g = both(lambda: (graphc.rand(3, 33), graphc.randn(5, 7)), seed=7)
    np.testing.assert_array_equal(g[0].numpy(), e[0].numpy())  # uniform: exact
    np.testing.assert_allclose(g[1].numpy(), e[1].numpy(), rtol=1e-6, atol=1e-6)


def test_concat_slice_and_literals(rng):
    x = arr(rng, 4, 6)
    close(
        *both(
            lambda x: (
                graphc.cat([x, x[1:3] * 2], 0),
                graphc.tensor([1.5, -2.0]) * x[0, :2],
                graphc.arange(5) * 2,
                x[:, ::3],
            ),
            x,
        )
    )


def test_nan_propagates_like_numpy():
    x = graphc.tensor([1.0, float("nan"), -2.0, 0.5])
    e, g = both(
        lambda x: (x.relu(), graphc.maximum(x, graphc.zeros(4)), x.amax(), x.argmax(), x != x), x
    )
    for a, b in zip(e, g, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_state_updates_in_place(rng):
    p = graphc.nn.Parameter(arr(rng, 5, 3))
    buf = graphc.zeros(5, 3)
    data = p._data

    @graphc.compile
    def step(g):
        with graphc.no_grad():
            buf.mul_(0.9).add_(g)
            p.sub_(buf * 0.1)

    expect = p.detach().numpy().copy()
    b = np.zeros((5, 3), np.float32)
    g = np.ones((5, 3), np.float32)
    native = CompiledFunction(step.fn, backend=native_executable)
    for _ in range(3):
        native(graphc.from_numpy(g))
        b = b * np.float32(0.9) + g
        expect = expect - b * np.float32(0.1)
    np.testing.assert_allclose(p.detach().numpy(), expect, rtol=1e-6)
    assert p._data is data  # the parameter's own memory was updated, never replaced
    plan = native.last.graph.meta["memory"]
    kinds = {b.kind for b in plan.buffers.values()}
    assert "inplace" in kinds


def test_one_hot_ignore_index_that_is_a_class(rng):
    logits = arr(rng, 4, 3)
    labels = graphc.tensor([0, 1, 0, 2])
    close(*both(lambda a, b: F.cross_entropy(a, b, ignore_index=0), logits, labels))


def test_fused_pool_relu_bias_gradients_match(rng):
    conv = graphc.nn.Conv2d(2, 3, 3)
    x = arr(rng, 2, 2, 9, 9)

    def grads(x):
        conv.zero_grad()
        F.max_pool2d(F.relu(conv(x)), 2).sum().backward()
        return conv.weight.grad, conv.bias.grad

    e, g = both(grads, x)
    close(e, g, rtol=1e-5, atol=1e-6)


def test_sibling_reductions_share_one_pass(rng):
    """Sums over the same values and axes (BatchNorm's backward: sum(g), sum(g * (x - mean))
    and the weight's sum) are computed in one loop over the data, and agree with the
    reference."""
    conv = graphc.nn.Conv2d(2, 3, 1)  # its weight's gradient is made of BatchNorm's dx
    bn = graphc.nn.BatchNorm2d(3)
    x = arr(rng, 4, 2, 6, 7)
    ct = arr(rng, 4, 3, 6, 7)

    def grads(x, ct):
        conv.zero_grad()
        bn.zero_grad()
        (F.relu(bn(conv(x))) * ct).sum().backward()
        return conv.weight.grad, bn.weight.grad, bn.bias.grad

    e, g = both(grads, x, ct)
    close(e, g, rtol=1e-5, atol=1e-5)
    graph = CompiledFunction(grads, backend=native_executable).trace(x, ct).graph
    full = [
        k
        for k in graph.meta["schedule"].kernels
        if k.kind == "loop" and tuple(k.params["domain"]) == (4, 3, 6, 7)
    ]
    # mean, variance; then the sums of the backward pass (which recompute the normalised
    # output for the ReLU's mask); then dx with the sums that read it: four passes, where
    # one loop per reduction took seven
    assert len(full) == 4, [k.reason for k in full]
    assert [k.reason.count("reduce_sum") for k in full] == [1, 1, 2, 2]


def test_a_bias_computed_after_the_matmul_is_not_read_before_it_exists(rng):
    """x @ w + b * 2 traces the matmul before the scaled bias: fusing the add into the
    matmul's epilogue would read the bias before the kernel computing it has run."""
    x, w, b = arr(rng, 6, 3), arr(rng, 3, 4), arr(rng, 4)
    close(*both(lambda x, w, b: graphc.addmm(b, x, w, beta=2.0) + (x @ w + b * 3).relu(), x, w, b))
