"""A second backward() through the same graph: PyTorch's error without retain_graph, PyTorch's
accumulated gradients with it; eager and compiled alike (compiled: the error at trace time)."""

import inspect

import numpy as np
import pytest

import graphc
import graphc.nn as nn
import graphc.optim as optim
from graphc.errors import AutogradError

HERE = __file__.rsplit("/", 1)[-1]
MODES = [False, True]
IDS = ["eager", "compiled"]


def line_of(fn, marker: str) -> int:
    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, line in enumerate(lines) if marker in line)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(self.fc1(x).tanh())


def data():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    y = np.array([0, 1, 1, 0, 1], np.int64)
    return x, y


def twice_step(net, opt, retain: bool):
    def step(x, y):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward(retain_graph=retain)
        loss.backward()  # the second backward
        opt.step()
        return loss

    return step


def shared_step(net, opt, retain: bool):
    """Two losses sharing the forward pass: the second backward walks the shared part."""

    def step(x, y):
        opt.zero_grad()
        logits = net(x)
        nn.functional.cross_entropy(logits, y).backward(retain_graph=retain)
        (logits**2).mean().backward()  # the shared backward
        opt.step()
        return logits

    return step


@pytest.mark.parametrize("compiled", MODES, ids=IDS)
@pytest.mark.parametrize("make", [twice_step, shared_step], ids=["same loss", "shared graph"])
def test_second_backward_without_retain_graph_is_pytorchs_error(compiled, make):
    net = Net()
    opt = optim.SGD(net.parameters(), lr=0.1)
    before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    step = make(net, opt, retain=False)
    run = graphc.compile(step) if compiled else step
    x, y = data()
    with pytest.raises(AutogradError) as err:
        run(graphc.tensor(x), graphc.tensor(y))
    msg = str(err.value)
    assert "backward through the graph a second time" in msg
    assert "retain_graph=True" in msg  # what to do
    marker = "the second backward" if make is twice_step else "the shared backward"
    assert f"{HERE}:{line_of(step, marker)}" in msg
    assert isinstance(err.value, RuntimeError)  # as PyTorch's
    if compiled:
        assert "while tracing step" in msg
    for k, v in net.state_dict().items():  # the failed step changed nothing
        np.testing.assert_array_equal(v.numpy(), before[k])


def torch_result(torch, net, make, lr=0.1):
    """PyTorch's gradients and updated weights for the same step from the same weights."""
    tnet = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    sd = {k: torch.from_numpy(v.numpy().copy()) for k, v in net.state_dict().items()}
    tnet.load_state_dict({k.replace("fc1", "0").replace("fc2", "2"): v for k, v in sd.items()})
    opt = torch.optim.SGD(tnet.parameters(), lr=lr)
    x, y = data()
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    opt.zero_grad()
    logits = tnet(tx)
    loss = torch.nn.functional.cross_entropy(logits, ty)
    loss.backward(retain_graph=True)
    if make is twice_step:
        loss.backward()
    else:
        (logits**2).mean().backward()
    grads = {
        f"fc{1 + i // 2}.{'weight' if i % 2 == 0 else 'bias'}": p.grad.numpy().copy()
        for i, p in enumerate(tnet.parameters())
    }
    opt.step()
    weights = {
        k.replace("0.", "fc1.").replace("2.", "fc2."): v.numpy()
        for k, v in tnet.state_dict().items()
    }
    return grads, weights


@pytest.mark.parametrize("compiled", MODES, ids=IDS)
@pytest.mark.parametrize("make", [twice_step, shared_step], ids=["same loss", "shared graph"])
def test_retain_graph_accumulates_as_pytorch_does(torch, compiled, make):
    net = Net()
    opt = optim.SGD(net.parameters(), lr=0.1)
    want_grads, want_weights = torch_result(torch, net, make)
    step = make(net, opt, retain=True)
    run = graphc.compile(step) if compiled else step
    x, y = data()
    run(graphc.tensor(x), graphc.tensor(y))
    for name, p in net.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), want_grads[name], rtol=1e-6, atol=1e-7)
    for name, v in net.state_dict().items():
        np.testing.assert_allclose(v.numpy(), want_weights[name], rtol=1e-6, atol=1e-7)


def fc1_grad(backwards: int) -> np.ndarray:
    graphc.manual_seed(0)  # the same weights every time
    net = Net()

    @graphc.compile
    def step(x, y):
        net.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        for _ in range(backwards - 1):
            loss.backward(retain_graph=True)
        loss.backward()
        return loss

    x, y = data()
    step(graphc.tensor(x), graphc.tensor(y))
    return net.fc1.weight.grad.numpy()


def test_the_accumulated_gradient_is_the_sum_of_the_passes():
    """Really two (or three) backward passes: not one, not one too many."""
    once = fc1_grad(1)
    np.testing.assert_allclose(fc1_grad(2), 2 * once, rtol=1e-6)
    np.testing.assert_allclose(fc1_grad(3), 3 * once, rtol=1e-6)


@pytest.mark.parametrize("compiled", MODES, ids=IDS)
def test_separate_graphs_may_each_backward_once(compiled):
    """Only the freed part matters: a second loss built from the weights alone is fine."""
    net = Net()

    def step(x):
        net.zero_grad()
        net(x).sum().backward()
        (net.fc1.weight**2).sum().backward()  # a new graph: no retain_graph needed
        return net.fc1.weight.grad

    run = graphc.compile(step) if compiled else step
    x = graphc.tensor(data()[0])
    g = run(x)
    w = net.fc1.weight.detach().numpy()
    one = Net()
    one.load_state_dict(net.state_dict())
    one.zero_grad()
    one(x).sum().backward()
    np.testing.assert_allclose(g.numpy(), one.fc1.weight.grad.numpy() + 2 * w, rtol=1e-6, atol=1e-6)
