"""Bad input gets a clear error naming the user's line; nothing crashes or hangs."""

import inspect

import numpy as np
import pytest

import graphc
import graphc.nn as nn
import graphc.nn.functional as F
import graphc.optim as optim
from graphc.errors import GraphcError, ShapeError, StateDictError, TraceError
from graphc.models import ConvNet

HERE = __file__.rsplit("/", 1)[-1]


def line_of(fn, text: str) -> int:
    lines, start = inspect.getsourcelines(fn)
    for i, line in enumerate(lines):
        if text in line:
            return start + i
    raise AssertionError(text)


class WrongLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(401, 10)

    def forward(self, x):
        return self.fc(x.view(x.shape[0], -1))  # the bad line


def make_step(net):
    opt = optim.SGD(net.parameters(), lr=0.01)

    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


@pytest.mark.parametrize("compiled", [False, True])
def test_shape_mismatch_inside_the_model_names_the_line(compiled):
    net = WrongLinear()
    step = make_step(net)
    if compiled:
        step = graphc.compile(step)
    x, y = graphc.randn(4, 400), graphc.zeros(4, dtype=graphc.int64)
    with pytest.raises(ShapeError) as err:
        step(x, y)
    msg = str(err.value)
    assert "401" in msg and "400" in msg
    assert f"{HERE}:{line_of(WrongLinear.forward, 'the bad line')}" in msg


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("op", ["add", "where", "matmul"])
def test_operands_that_do_not_broadcast_name_the_line(compiled, op):
    def f(a, b):
        if op == "add":
            return a + b  # the add line
        if op == "where":
            return graphc.where(a > 0, a, b)  # the where line
        return a.reshape(3, 1, 4) @ b.reshape(5, 4, 1)  # the matmul line

    run = graphc.compile(f) if compiled else f
    with pytest.raises(ShapeError, match="cannot be broadcast") as err:
        run(graphc.randn(3, 4), graphc.randn(5, 4))
    assert f"{HERE}:{line_of(f, f'the {op} line')}" in str(err.value)


def test_wrong_input_shape_to_a_compiled_step():
    step = graphc.compile(make_step(ConvNet()))
    y = graphc.zeros(4, dtype=graphc.int64)
    with pytest.raises(ShapeError) as err:
        step(graphc.randn(4, 3, 28, 28), y)
    assert "view/reshape" in str(err.value) and "models.py:" in str(err.value)
    assert "while tracing step" in str(err.value)


def test_wrong_input_dtype_to_a_compiled_step():
    step = graphc.compile(make_step(ConvNet()))
    x = graphc.randn(4, 3, 32, 32).double()
    with pytest.raises(ShapeError, match="same dtype"):
        step(x, graphc.zeros(4, dtype=graphc.int64))
    with pytest.raises(ShapeError, match="int64 class indices of shape \\[4\\]"):
        step(graphc.randn(4, 3, 32, 32), graphc.zeros(4))


def test_labels_out_of_range_are_an_error_not_a_silent_zero():
    step = graphc.compile(make_step(ConvNet()))
    labels = graphc.tensor([0, 1, 10, 2])
    with pytest.raises(GraphcError, match="class index 10 is out of range"):
        step(graphc.randn(4, 3, 32, 32), labels)


def test_data_dependent_if_raises_trace_error_with_the_line():
    @graphc.compile
    def f(x):
        if x.sum() > 0:  # data-dependent
            return x
        return -x

    with pytest.raises(TraceError) as err:
        f(graphc.ones(3))
    assert f"{HERE}:{line_of(f.fn, 'data-dependent')}" in str(err.value)
    assert "graphc.where" in str(err.value)


def test_item_inside_a_compiled_function_raises_trace_error():
    @graphc.compile
    def f(x):
        return x * x.mean().item()  # reads a value

    with pytest.raises(TraceError) as err:
        f(graphc.ones(3))
    assert f"{HERE}:{line_of(f.fn, 'reads a value')}" in str(err.value)
    assert ".item()" in str(err.value)


def test_a_traced_tensor_leaking_out_is_refused():
    leaked = []

    @graphc.compile
    def f(x):
        leaked.append(x * 2)
        return x

    f(graphc.ones(2))
    with pytest.raises(TraceError, match="used outside"):
        leaked[0] + 1


def test_load_state_dict_reports_every_problem():
    net = ConvNet()
    sd = {k: v.numpy() for k, v in net.state_dict().items()}
    del sd["fc3.bias"]
    sd["extra.weight"] = np.zeros(3, np.float32)
    sd["fc1.weight"] = np.zeros((120, 401), np.float32)
    with pytest.raises(StateDictError) as err:
        net.load_state_dict(sd)
    msg = str(err.value)
    assert '"fc3.bias"' in msg and '"extra.weight"' in msg
    assert "size mismatch for fc1.weight" in msg and "[120, 401]" in msg
    before = net.fc2.weight.detach().numpy().copy()
    result = ConvNet().load_state_dict({"fc2.weight": before}, strict=False)
    assert "fc1.weight" in result.missing_keys and result.unexpected_keys == []


def test_unhashable_argument_is_explained():
    f = graphc.compile(lambda x, opts: x)
    with pytest.raises(TraceError, match="unhashable"):
        f(graphc.ones(1), {1, 2})
