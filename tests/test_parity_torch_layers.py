"""End to end with the newer layers, losses and optimizers: the same models trained from the
same weights on the same batches by PyTorch and by graphc (eagerly and compiled) give the
same losses at every step and the same final parameters and optimizer state.

- an MLP with LeakyReLU, GELU, PReLU and BCEWithLogitsLoss(pos_weight), trained with
  centered RMSprop with momentum (the acceptance case);
- the classic MNIST example's network and loop (conv, ReLU, max pool, flatten, log_softmax,
  nll_loss, Adadelta(lr=1.0) with StepLR(gamma=0.7)), without its dropout, whose random
  masks are not PyTorch's;
- a regression net with ELU, SiLU, Hardswish, Softplus and SmoothL1/Huber/KL losses trained
  with Adagrad.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc
import graphc.nn as gnn

STEPS = 12
MODES = pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])


def mlp(nn):
    return nn.Sequential(
        nn.Linear(10, 32), nn.LeakyReLU(0.1), nn.Linear(32, 32), nn.GELU(),
        nn.Linear(32, 16), nn.PReLU(16), nn.Linear(16, 3),
    )  # fmt: skip


def mnist_net(nn):
    F = nn.functional

    class Net(nn.Module):  # pytorch/examples mnist/main.py, dropout left out
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, 1)
            self.conv2 = nn.Conv2d(8, 16, 3, 1)
            self.fc1 = nn.Linear(16 * 5 * 5, 32)
            self.fc2 = nn.Linear(32, 10)

        def forward(self, x):
            x = F.relu(self.conv1(x))
            x = F.relu(self.conv2(x))
            x = F.max_pool2d(x, 2)
            x = x.view(x.size(0), -1)
            x = F.relu(self.fc1(x))
            return F.log_softmax(self.fc2(x), dim=1)

    return Net()


def regression_net(nn):
    return nn.Sequential(
        nn.Linear(6, 24), nn.ELU(), nn.Linear(24, 24), nn.SiLU(), nn.Linear(24, 24),
        nn.Hardswish(), nn.Linear(24, 4), nn.Softplus(beta=2.0),
    )  # fmt: skip


def _bce_data(rng, n):
    return [
        (rng.standard_normal((16, 10)), (rng.random((16, 3)) < 0.3).astype(np.float32))
        for _ in range(n)
    ]


def _mnist_data(rng, n):
    return [(rng.standard_normal((8, 1, 14, 14)), rng.integers(0, 10, 8)) for _ in range(n)]


def _regression_data(rng, n):
    return [(rng.standard_normal((12, 6)), rng.uniform(0, 2, (12, 4))) for _ in range(n)]


def _regression_loss(F, out, y):
    # three losses in one: their gradients add up, as a multi-task model's would
    return (
        F.smooth_l1_loss(out, y, beta=0.5)
        + F.huber_loss(out, y, delta=0.8)
        + 0.1 * F.kl_div(F.log_softmax(out, 1), F.softmax(y, 1), reduction="batchmean")
    )


CASES = {
    "mlp_gelu_bce_rmsprop": dict(
        model=mlp,
        data=_bce_data,
        loss=lambda lib, F: lib.nn.BCEWithLogitsLoss(pos_weight=lib.tensor([2.0, 0.5, 1.0])),
        opt=lambda o, p: o.RMSprop(p, lr=2e-3, momentum=0.9, centered=True, weight_decay=1e-4),
        sched=None,
    ),
    "mnist_adadelta_steplr": dict(
        model=mnist_net,
        data=_mnist_data,
        loss=lambda lib, F: F.nll_loss,
        opt=lambda o, p: o.Adadelta(p, lr=1.0),
        sched=lambda s, opt: s.StepLR(opt, step_size=4, gamma=0.7),
    ),
    "regression_adagrad": dict(
        model=regression_net,
        data=_regression_data,
        loss=lambda lib, F: lambda out, y: _regression_loss(F, out, y),
        opt=lambda o, p: o.Adagrad(p, lr=0.05, lr_decay=0.01),
        sched=None,
    ),
}


def train(lib, model, case, batches, compiled=False):
    F = lib.nn.functional
    opt = case["opt"](lib.optim, model.parameters())
    sched = case["sched"](lib.optim.lr_scheduler, opt) if case["sched"] else None
    criterion = case["loss"](lib, F)

    def step(x, y):
        opt.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        opt.step()
        return loss

    fn = graphc.compile(step) if compiled else step
    losses = []
    for x, y in batches:
        xt = lib.tensor(x.astype(np.float32))
        yt = lib.tensor(y.astype(np.float32) if y.dtype.kind == "f" else y)
        losses.append(fn(xt, yt).item())
        if sched:
            sched.step()
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    opt_state = {
        f"{i}.{k}": v.numpy().copy()
        for i, st in opt.state_dict()["state"].items()
        for k, v in st.items()
    }
    return np.array(losses), state, opt_state, fn


@MODES
@pytest.mark.parametrize("name", list(CASES))
def test_training_matches_torch(torch, compiled, name):
    case = CASES[name]
    torch.manual_seed(0)
    t_model = case["model"](torch.nn)
    g_model = case["model"](gnn)
    g_model.load_state_dict(t_model.state_dict())
    batches = case["data"](np.random.default_rng(1), STEPS)
    want, t_state, t_opt, _ = train(torch, t_model, case, batches)
    got, g_state, g_opt, fn = train(graphc, g_model, case, batches, compiled)
    np.testing.assert_allclose(got, want, rtol=1e-5, err_msg="losses")
    assert list(g_state) == list(t_state) and list(g_opt) == list(t_opt)
    for k, v in {**t_state, **t_opt}.items():
        g = g_state.get(k, g_opt.get(k))
        scale = float(np.abs(v).max()) if v.size else 0.0
        np.testing.assert_allclose(g, v, rtol=1e-4, atol=1e-6 + 1e-5 * scale, err_msg=k)
    if compiled:
        assert sum(len(v) for v in fn.cache.values()) == 1  # the schedule never re-traced
