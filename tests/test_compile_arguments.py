"""What a compiled step accepts as arguments: numeric lists and numpy scalars become tensors
(as graphc.tensor makes them), tuples and numbers stay constants, lists of tensors stay lists.
The errors for what cannot be converted are rows of tests/test_bad_input.py."""

import numpy as np

import graphc
import graphc.nn as nn
import graphc.optim as optim

X = [[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]]
Y = [2, 0]


def make_step():
    graphc.manual_seed(0)
    net = nn.Linear(3, 4)
    opt = optim.SGD(net.parameters(), lr=0.1)

    def step(x, y):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss

    return net, step


def test_nested_lists_train_as_the_tensors_graphc_tensor_makes():
    net_a, step_a = make_step()
    net_b, step_b = make_step()
    compiled = graphc.compile(step_a)
    for _ in range(2):
        got = compiled(X, Y)
        want = step_b(graphc.tensor(X), graphc.tensor(Y))
        np.testing.assert_allclose(got.item(), want.item(), rtol=1e-6)
    for (name, a), b in zip(net_a.state_dict().items(), net_b.state_dict().values(), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7, err_msg=name)
    entry = compiled.last
    types = {n.name: str(n.type) for n in entry.traced.inputs if n.attrs["kind"] == "input"}
    assert types == {"x": "f32[2,3]", "y": "i64[2]"}  # floats -> float32, ints -> int64


def test_a_numpy_scalar_is_a_0d_tensor_input_not_a_constant():
    @graphc.compile
    def scale(x, s):
        return x * s

    x = graphc.tensor([1.0, 2.0])
    np.testing.assert_array_equal(scale(x, np.float32(3.0)).numpy(), [3.0, 6.0])
    np.testing.assert_array_equal(scale(x, np.float32(-1.0)).numpy(), [-1.0, -2.0])
    np.testing.assert_array_equal(scale(x, np.int64(2)).numpy(), [2.0, 4.0])
    # one trace per dtype, none per value: a new value does not recompile
    assert sum(len(v) for v in scale.cache.values()) == 2
    assert scale(x, np.float64(0.5)).dtype == graphc.float32  # a 0-d tensor does not promote


def test_tuples_numbers_and_lists_of_tensors_keep_their_meaning():
    @graphc.compile
    def f(x, shape, k, parts):
        return x.reshape(shape) * k + parts[0] + parts[1]

    x = graphc.arange(6).float()
    parts = [graphc.ones(2, 3), graphc.full((2, 3), 2.0)]
    out = f(x, (2, 3), 10, parts)
    np.testing.assert_array_equal(out.numpy(), np.arange(6).reshape(2, 3) * 10 + 3)
    out = f(x, (3, 2), 10, [graphc.ones(3, 2), graphc.ones(3, 2)])
    assert tuple(out.shape) == (3, 2)


def test_keyword_and_nested_arguments_are_converted_too():
    @graphc.compile
    def f(pair, *, bias):
        return pair[0] + pair[1] + bias

    out = f(([1.0, 2.0], graphc.ones(2)), bias=np.float32(0.5))
    np.testing.assert_array_equal(out.numpy(), [2.5, 3.5])
