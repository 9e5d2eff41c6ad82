"""Model and optimizer state_dicts: PyTorch's format, both directions, errors, exact resume."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import graphc
import graphc.nn as gnn
import graphc.optim as goptim
from graphc.errors import StateDictError
from graphc.models import ConvNet

MODES = pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])


def mlp(nn):
    """Small and smooth (tanh): short continued runs stay far from float32 chaos."""
    return nn.Sequential(
        nn.Linear(6, 16), nn.Tanh(), nn.BatchNorm1d(16), nn.Linear(16, 16), nn.Tanh(),
        nn.Linear(16, 3),
    )  # fmt: skip


def data(n_steps: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal((8, 6)).astype(np.float32), rng.integers(0, 3, 8))
        for _ in range(n_steps)
    ]


def to_torch(torch, obj):
    """A graphc state_dict (model or optimizer) as PyTorch tensors, via numpy."""
    if isinstance(obj, graphc.Tensor):
        return torch.from_numpy(obj.numpy().copy())
    if isinstance(obj, dict):
        return {k: to_torch(torch, v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_torch(torch, v) for v in obj]
    return obj


def snapshot(obj):
    """A deep copy of a graphc state_dict as numpy arrays (what a checkpoint keeps)."""
    if isinstance(obj, graphc.Tensor):
        return obj.numpy().copy()
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [snapshot(v) for v in obj]
    return copy.deepcopy(obj)


def graphc_trainer(model, opt, compiled):
    crit = gnn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad()
        loss = crit(model(x), y)
        loss.backward()
        opt.step()
        return loss

    fn = graphc.compile(step) if compiled else step
    return lambda batches: [fn(graphc.tensor(x), graphc.tensor(y)).item() for x, y in batches]


def torch_trainer(torch, model, opt):
    crit = torch.nn.CrossEntropyLoss()

    def run(batches):
        losses = []
        for x, y in batches:
            opt.zero_grad()
            loss = crit(model(torch.tensor(x)), torch.tensor(y))
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    return run


# ---- model state_dicts ----------------------------------------------------------------------


def test_torch_weights_load_into_graphc_and_give_torchs_outputs(torch):
    t = mlp(torch.nn)
    g = mlp(gnn)
    result = g.load_state_dict(t.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    for k, v in t.state_dict().items():
        np.testing.assert_array_equal(g.state_dict()[k].numpy(), v.numpy(), err_msg=k)
    t.eval()
    g.eval()
    x = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)
    np.testing.assert_allclose(
        g(graphc.tensor(x)).detach().numpy(), t(torch.tensor(x)).detach().numpy(), rtol=1e-5
    )


def test_graphc_weights_load_into_torch(torch):
    g = ConvNet()
    t = ConvNet_torch(torch)
    t.load_state_dict(to_torch(torch, g.state_dict()))
    x = np.random.default_rng(4).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(
        t(torch.tensor(x)).detach().numpy(),
        g(graphc.tensor(x)).detach().numpy(),
        rtol=1e-5,
        atol=1e-6,
    )
    # BatchNorm buffers, num_batches_tracked included, go across as well.
    gb, tb = gnn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    gb(graphc.randn(4, 3, 2, 2))
    tb.load_state_dict(to_torch(torch, gb.state_dict()))
    assert tb.num_batches_tracked.item() == 1 and tb.num_batches_tracked.dtype == torch.int64
    np.testing.assert_array_equal(tb.running_var.numpy(), gb.running_var.numpy())


def ConvNet_torch(torch):  # noqa: N802  (a class-like factory)
    nn = torch.nn
    m = nn.Module()
    m.conv1, m.pool, m.conv2 = nn.Conv2d(3, 6, 5), nn.MaxPool2d(2, 2), nn.Conv2d(6, 16, 5)
    m.fc1, m.fc2, m.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)
    F = nn.functional

    def forward(x):
        x = m.pool(F.relu(m.conv1(x)))
        x = m.pool(F.relu(m.conv2(x)))
        x = F.relu(m.fc1(x.flatten(1)))
        return m.fc3(F.relu(m.fc2(x)))

    m.forward = forward
    return m


def test_strict_load_reports_missing_unexpected_and_misshaped_keys():
    g = mlp(gnn)
    before = snapshot(g.state_dict())
    sd = dict(g.state_dict())
    del sd["0.bias"]
    del sd["2.running_var"]
    sd["9.weight"] = graphc.zeros(2)
    sd["3.weight"] = graphc.zeros(16, 15)
    with pytest.raises(StateDictError) as err:
        g.load_state_dict(sd)
    msg = str(err.value)
    assert 'Missing key(s) in state_dict: "0.bias", "2.running_var".' in msg
    assert 'Unexpected key(s) in state_dict: "9.weight".' in msg
    assert "size mismatch for 3.weight" in msg and "[16, 15]" in msg and "[16, 16]" in msg
    for k, v in g.state_dict().items():  # nothing was loaded
        np.testing.assert_array_equal(v.numpy(), before[k])


def test_non_strict_load_returns_the_key_lists_like_torch(torch):
    g, t = mlp(gnn), mlp(torch.nn)
    sd = {k: v for k, v in t.state_dict().items() if not k.startswith("3.")}
    sd["extra.weight"] = torch.zeros(1)
    sd["0.weight"] = torch.full((16, 6), 0.5)
    got = g.load_state_dict(sd, strict=False)
    want = t.load_state_dict(sd, strict=False)
    assert got.missing_keys == want.missing_keys
    assert got.unexpected_keys == want.unexpected_keys
    assert (g[0].weight.detach().numpy() == 0.5).all()  # what matched was loaded
    with pytest.raises(StateDictError, match="size mismatch"):  # as PyTorch: even non-strict
        g.load_state_dict({"0.weight": graphc.zeros(3, 3)}, strict=False)


def test_non_persistent_buffers_are_neither_saved_nor_expected():
    m = gnn.Linear(2, 2)
    m.register_buffer("cache", graphc.zeros(5), persistent=False)
    assert "cache" not in m.state_dict() and "cache" in dict(m.named_buffers())
    m.load_state_dict(gnn.Linear(2, 2).state_dict())  # strict, and no complaint


def test_loading_in_place_keeps_a_compiled_function_valid():
    model, other = gnn.Linear(3, 2), gnn.Linear(3, 2)
    f = graphc.compile(lambda x: model(x))
    x = graphc.ones(1, 3)
    f(x)
    model.load_state_dict(other.state_dict())
    np.testing.assert_allclose(f(x).numpy(), other(x).detach().numpy(), rtol=1e-6)
    assert sum(len(v) for v in f.cache.values()) == 1


# ---- optimizer state_dicts ------------------------------------------------------------------

OPTS = {
    "sgd_momentum": lambda o, p: o.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "adam": lambda o, p: o.Adam(p, lr=1e-2),
    "adamw_amsgrad": lambda o, p: o.AdamW(p, lr=1e-2, amsgrad=True),
    "rmsprop_centered_momentum": lambda o, p: o.RMSprop(p, lr=1e-3, momentum=0.9, centered=True),
    "adagrad": lambda o, p: o.Adagrad(p, lr=0.05, lr_decay=0.01, initial_accumulator_value=0.1),
    "adadelta": lambda o, p: o.Adadelta(p, weight_decay=1e-3),
}


@pytest.mark.parametrize("name", list(OPTS))
def test_optimizer_state_dict_has_torchs_structure(torch, name):
    t_model, g_model = mlp(torch.nn), mlp(gnn)
    g_model.load_state_dict(t_model.state_dict())
    t_opt, g_opt = (
        OPTS[name](torch.optim, t_model.parameters()),
        OPTS[name](goptim, g_model.parameters()),
    )
    torch_trainer(torch, t_model, t_opt)(data(2))
    graphc_trainer(g_model, g_opt, False)(data(2))
    t_sd, g_sd = t_opt.state_dict(), g_opt.state_dict()
    assert g_sd["param_groups"] == t_sd["param_groups"]
    assert list(g_sd["state"]) == list(t_sd["state"])
    for i, st in t_sd["state"].items():
        assert list(g_sd["state"][i]) == list(st)
        for k, v in st.items():
            assert tuple(g_sd["state"][i][k].shape) == tuple(v.shape)
            assert g_sd["state"][i][k].dtype.name == str(v.dtype).removeprefix("torch.")


@MODES
@pytest.mark.parametrize("name", list(OPTS))
def test_resuming_from_saved_state_continues_exactly(compiled, name):
    batches = data(8, seed=1)
    graphc.manual_seed(5)
    model = mlp(gnn)
    opt = OPTS[name](goptim, model.parameters())
    train = graphc_trainer(model, opt, compiled)
    train(batches[:4])
    saved_model, saved_opt = snapshot(model.state_dict()), snapshot(opt.state_dict())
    expect = train(batches[4:])  # the uninterrupted run

    graphc.manual_seed(99)  # different initial weights: everything must come from the load
    model2 = mlp(gnn)
    opt2 = OPTS[name](goptim, model2.parameters())
    model2.load_state_dict(saved_model)
    opt2.load_state_dict(saved_opt)
    got = graphc_trainer(model2, opt2, compiled)(batches[4:])
    assert got == expect
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(model2.state_dict()[k].numpy(), v.numpy(), err_msg=k)


@MODES
@pytest.mark.parametrize("name", list(OPTS))
def test_torch_optimizer_state_loads_and_training_continues_like_torch(torch, compiled, name):
    batches = data(10, seed=2)
    t_model = mlp(torch.nn)
    t_opt = OPTS[name](torch.optim, t_model.parameters())
    t_train = torch_trainer(torch, t_model, t_opt)
    t_train(batches[:5])

    g_model = mlp(gnn)
    g_opt = OPTS[name](goptim, g_model.parameters())
    g_model.load_state_dict(t_model.state_dict())
    g_opt.load_state_dict(t_opt.state_dict())  # torch tensors, torch's format
    got = graphc_trainer(g_model, g_opt, compiled)(batches[5:])
    want = t_train(batches[5:])
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for k, v in t_model.state_dict().items():
        np.testing.assert_allclose(
            g_model.state_dict()[k].numpy(), v.numpy(), rtol=1e-4, atol=1e-6, err_msg=k
        )


@pytest.mark.parametrize("name", list(OPTS))
def test_graphc_optimizer_state_loads_into_torch(torch, name):
    batches = data(10, seed=3)
    g_model = mlp(gnn)
    g_opt = OPTS[name](goptim, g_model.parameters())
    g_train = graphc_trainer(g_model, g_opt, False)
    g_train(batches[:5])

    t_model = mlp(torch.nn)
    t_opt = OPTS[name](torch.optim, t_model.parameters())
    t_model.load_state_dict(to_torch(torch, g_model.state_dict()))
    t_opt.load_state_dict(to_torch(torch, g_opt.state_dict()))
    want = torch_trainer(torch, t_model, t_opt)(batches[5:])
    got = g_train(batches[5:])
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_optimizer_load_errors_leave_the_optimizer_unchanged():
    model = mlp(gnn)
    opt = goptim.Adam(model.parameters(), lr=0.01)
    graphc_trainer(model, opt, False)(data(1))
    good = snapshot(opt.state_dict())
    before = snapshot(opt.state_dict())

    bad_groups = copy.deepcopy(good)
    bad_groups["param_groups"].append(dict(good["param_groups"][0]))
    with pytest.raises(StateDictError, match="different number of parameter groups"):
        opt.load_state_dict(bad_groups)

    bad_size = copy.deepcopy(good)
    bad_size["param_groups"][0]["params"] = bad_size["param_groups"][0]["params"][:-1]
    with pytest.raises(StateDictError, match="doesn't match the size"):
        opt.load_state_dict(bad_size)

    bad_shape = copy.deepcopy(good)
    bad_shape["param_groups"][0]["lr"] = 123.0
    bad_shape["state"][1]["exp_avg"] = np.zeros(3, np.float32)
    with pytest.raises(StateDictError, match="'exp_avg' has shape \\[3\\]"):
        opt.load_state_dict(bad_shape)

    after = snapshot(opt.state_dict())
    assert after["param_groups"] == before["param_groups"]
    for i, st in before["state"].items():
        for k, v in st.items():
            np.testing.assert_array_equal(after["state"][i][k], v)


def test_checkpoint_round_trip_through_graphc_save(tmp_path):
    model = mlp(gnn)
    opt = goptim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train = graphc_trainer(model, opt, False)
    train(data(3))
    path = tmp_path / "ckpt.safetensors"
    graphc.save({"model": model.state_dict(), "optim": opt.state_dict()}, path)
    expect = train(data(3, seed=7))

    ckpt = graphc.load(path)
    model2 = mlp(gnn)
    opt2 = goptim.SGD(model2.parameters(), lr=0.1, momentum=0.9)
    model2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["optim"])
    assert graphc_trainer(model2, opt2, False)(data(3, seed=7)) == expect
