"""The built-in CNN families trained against PyTorch: resnet20 (residual, BatchNorm),
mobilenet (depthwise-separable) and the autoencoder (transposed convolutions, MSE against
its input), 20 steps each from the same initial weights on the same batches, eagerly and
compiled.

PyTorch's model is the same source file run against torch (graphc.bench.twin), so the two
have the same structure, parameter names and layouts by construction; the initial weights
are PyTorch's default initialisation, loaded into graphc with load_state_dict.

- float64: every model's loss agrees with PyTorch's float64 run at every step to 1e-9
  (the acceptance asks 1e-4), where rounding cannot hide or fake a difference in a formula;
- float32: the loss agrees with PyTorch's float32 run at every step to rtol 1e-4, where that
  is a property of the computation and not of rounding luck. Measured (PyTorch float32 vs
  its own float64 run, 20 steps): the autoencoder stays within 2e-7 at lr 0.05; ResNet-20
  within 8e-5 at lr 2e-4 but 4e-4 at lr 1e-3 (SGD on random labels amplifies rounding), so
  it trains at lr 1e-4 here. MobileNet's float32 gradients are 1% off in PyTorch itself at
  initialisation: a BatchNorm after each depthwise convolution makes the loss invariant to
  the scale of the channel before it (ReLU and a per-channel convolution in between), so
  those gradient components are pure rounding noise that the next layers amplify. No
  float32 program that sums in another order can follow PyTorch's float32 run there; graphc
  is held to the float64 run instead, within NOISE times PyTorch's own float32 error.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc
import graphc.nn as gnn
from graphc.bench.twin import torch_twin
from graphc.models import MODELS
from graphc.training.objective import RECONSTRUCTION, criterion, objective_of

STEPS = 20
LOSS_RTOL = 1e-4
NOISE = 5.0

# model -> (batch size, float32 optimizer, float64 optimizer): small batches keep the eager
# runs quick; every BatchNorm still sees at least 16 values per channel.
CASES = {
    "resnet20": (
        8,
        lambda optim, p: optim.SGD(p, lr=2e-5, momentum=0.9),
        lambda optim, p: optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4),
    ),
    "mobilenet": (
        4,
        lambda optim, p: optim.SGD(p, lr=1e-3, momentum=0.9),
        lambda optim, p: optim.SGD(p, lr=2e-5, momentum=0.9),
    ),
    "autoencoder": (
        8,
        lambda optim, p: optim.SGD(p, lr=0.05, momentum=0.9),
        lambda optim, p: optim.Adam(p, lr=1e-3),
    ),
}
HELD_TO_FLOAT64 = {"mobilenet"}


def batches(batch: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (
            rng.standard_normal((batch, 3, 32, 32)).astype(np.float32),
            rng.integers(0, 10, batch).astype(np.int64),
        )
        for _ in range(STEPS)
    ]


def train(lib, model, make_opt, data, compiled: bool = False, dtype=None) -> np.ndarray:
    """Per-step losses of the DESIGN step (zero_grad, forward, loss, backward, step)."""
    loss_fn = criterion(lib.nn, objective_of(model))
    reconstruct = objective_of(model) == RECONSTRUCTION
    opt = make_opt(lib.optim, model.parameters())

    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), x if reconstruct else y)
        loss.backward()
        opt.step()
        return loss

    fn = graphc.compile(step) if compiled else step
    losses = []
    for x, y in data:
        xt, yt = lib.from_numpy(x), lib.from_numpy(y)
        if dtype is not None:
            xt = xt.to(dtype)
        losses.append(fn(xt, yt).item())
    if compiled:
        assert sum(len(v) for v in fn.cache.values()) == 1  # one trace served every step
    return np.array(losses)


def models(torch, name: str, float64: bool = False):
    """(PyTorch model, graphc model, initial state), with PyTorch's default initialisation."""
    cls = MODELS[name]
    torch.manual_seed(0)
    t_model = torch_twin(cls)()
    g_model = cls()
    if float64:
        t_model, g_model = t_model.double(), g_model.double()
    state = {k: v.detach().clone() for k, v in t_model.state_dict().items()}
    g_model.load_state_dict({k: graphc.from_numpy(v.numpy().copy()) for k, v in state.items()})
    return t_model, g_model, state


MODES = pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])


@MODES
@pytest.mark.parametrize("name", list(CASES))
def test_float32_training_matches_torch(torch, name, compiled):
    batch, make_opt, _ = CASES[name]
    t_model, g_model, state = models(torch, name)
    data = batches(batch)
    want = train(torch, t_model, make_opt, data)
    got = train(graphc, g_model, make_opt, data, compiled)
    rel = np.abs(got - want) / np.abs(want)
    if name not in HELD_TO_FLOAT64:
        assert rel.max() <= LOSS_RTOL, f"graphc {got}\ntorch  {want}\nrelative {rel}"
        return
    t64 = torch_twin(MODELS[name])().double()
    t64.load_state_dict(state)
    exact = train(torch, t64, make_opt, data, dtype=torch.float64)
    own = np.abs(want - exact) / np.abs(exact)  # PyTorch's own float32 error
    ours = np.abs(got - exact) / np.abs(exact)
    assert ours[0] <= LOSS_RTOL  # the first loss: the forward pass alone
    assert ours.max() <= max(LOSS_RTOL, NOISE * own.max()), (
        f"graphc {got}\ntorch  {want}\nfloat64 {exact}\nPyTorch's own error {own}"
    )


@MODES
@pytest.mark.parametrize("name", list(CASES))
def test_float64_training_matches_torch(torch, name, compiled):
    _, _, make_opt = CASES[name]
    t_model, g_model, _ = models(torch, name, float64=True)
    # two images: float64 kernels are scalar loops, and the formulas show at any batch size
    data = [(x.astype(np.float64), y) for x, y in batches(2, seed=1)]
    want = train(torch, t_model, make_opt, data)
    got = train(graphc, g_model, make_opt, data, compiled)
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_the_models_are_the_families_they_claim():
    """mobilenet is depthwise-separable (a groups = channels 3x3 conv before each 1x1 conv),
    the autoencoder decodes with stride-2 transposed convolutions back to its input's shape."""
    net = MODELS["mobilenet"]()
    convs = [m for m in net.modules() if isinstance(m, gnn.Conv2d)]
    depthwise = [m for m in convs if m.groups == m.in_channels == m.out_channels > 1]
    pointwise = [m for m in convs if m.kernel_size == (1, 1)]
    assert len(depthwise) == len(pointwise) == 13
    ae = MODELS["autoencoder"]()
    ups = [m for m in ae.modules() if isinstance(m, gnn.ConvTranspose2d)]
    assert len(ups) == 3 and all(m.stride == (2, 2) for m in ups)
    with graphc.no_grad():
        assert ae(graphc.zeros(2, 3, 32, 32)).shape == (2, 3, 32, 32)
