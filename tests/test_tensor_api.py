"""The tensor and module API people type without thinking, against PyTorch: max/min with a
dim, split/chunk/unbind/narrow, clamp_min/clamp_max, size/view/flatten/mean over dims,
parameter containers, device spellings and checkpoint spellings; eagerly and compiled."""

from __future__ import annotations

import io
from collections import OrderedDict

import numpy as np
import pytest

import graphc
import graphc.nn as nn
import graphc.nn.functional as F

MODES = pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])


def run(fn, compiled, *arrays):
    """fn on graphc tensors (the first requiring grad), eagerly or compiled; returns its
    outputs and the first input's gradient of sum(outputs * 1..n weights)."""
    x = graphc.tensor(arrays[0], requires_grad=True)
    rest = [graphc.tensor(a) for a in arrays[1:]]

    def step(x, *rest):
        outs = fn(x, *rest)
        loss = sum((o.float() * (i + 1)).sum() for i, o in enumerate(outs) if o.is_floating_point())
        loss.backward()
        return outs

    outs = (graphc.compile(step) if compiled else step)(x, *rest)
    return [o.detach().numpy() for o in outs], x.grad.numpy()


def torch_run(torch, fn, *arrays):
    x = torch.tensor(arrays[0], requires_grad=True)
    rest = [torch.tensor(a) for a in arrays[1:]]
    outs = fn(x, *rest)
    loss = sum((o.float() * (i + 1)).sum() for i, o in enumerate(outs) if o.is_floating_point())
    loss.backward()
    return [o.detach().numpy() for o in outs], x.grad.numpy()


def assert_same(torch, fn, compiled, *arrays, rtol=1e-6, atol=1e-7):
    want, want_grad = torch_run(torch, fn, *arrays)
    got, got_grad = run(fn, compiled, *arrays)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.dtype, w.dtype, g.shape, w.shape)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)  # sums may add in other orders
    np.testing.assert_allclose(got_grad, want_grad, rtol=rtol, atol=atol)


X = np.random.default_rng(0).standard_normal((4, 6, 3, 5)).astype(np.float32)


@MODES
@pytest.mark.parametrize(
    "name, fn",
    [
        ("max_dim", lambda x: tuple(x.max(1))),
        ("max_dim_keepdim", lambda x: tuple(x.max(dim=2, keepdim=True))),
        ("torch_max", lambda x: (lambda m: (m.values, m.indices))(_lib(x).max(x, -1))),
        ("min_dim", lambda x: tuple(x.min(0))),
        ("torch_min", lambda x: (_lib(x).min(x, 1)[0], _lib(x).min(x, 1)[1])),
        ("chunk", lambda x: x.chunk(4, 1)),
        ("torch_chunk", lambda x: _lib(x).chunk(x, 2, dim=-1)),
        ("split", lambda x: x.split(4, dim=1)),
        ("split_sizes", lambda x: _lib(x).split(x, [1, 2, 2], 3)),
        ("unbind", lambda x: x.unbind(2)),
        ("narrow", lambda x: (x.narrow(1, 2, 3), x.narrow(-1, 0, 1))),
        ("clamp", lambda x: (x.clamp(min=-0.5), x.clamp(max=0.3), _lib(x).clamp(x, -0.2, 0.4))),
        ("clamp_min_max", lambda x: (x.clamp_min(0.1), _lib(x).clamp_max(x, -0.1))),
        ("size_view", lambda x: (x.view(x.size(0), -1), x.reshape(x.size()[0], x.size(1), -1))),
        ("flatten", lambda x: (_lib(x).flatten(x, 1), x.flatten(2), x.flatten())),
        ("mean_dims", lambda x: (x.mean((2, 3)), x.mean((2, 3), keepdim=True), x.mean(-1))),
    ],
)
def test_tensor_api_matches_torch(torch, compiled, name, fn):
    assert_same(torch, fn, compiled, X)


def _lib(x):
    """graphc or torch, whichever x belongs to: one lambda serves both frameworks."""
    import torch

    return torch if isinstance(x, torch.Tensor) else graphc


def test_max_with_dim_is_a_named_pair():
    x = graphc.tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 7.0]])
    out = graphc.max(x, 1)
    values, indices = out
    assert out.values is values and out.indices is indices
    np.testing.assert_array_equal(values.numpy(), [5.0, 7.0])
    np.testing.assert_array_equal(indices.numpy(), [1, 0])  # the first of tied maxima
    assert indices.dtype == graphc.int64
    _, predicted = graphc.max(x, 1)  # the classic accuracy line
    assert (predicted == graphc.tensor([1, 0])).sum().item() == 2
    np.testing.assert_array_equal(x.min(dim=1).indices.numpy(), [0, 1])


def test_clamp_with_tensor_bounds_matches_torch(torch):
    rng = np.random.default_rng(1)
    x, lo, hi = (rng.standard_normal((3, 4)).astype(np.float32) for _ in range(3))
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    x[0, :2] = lo[0, :2]  # at the bound: the gradient passes (clamp's rule, not hardtanh's)
    assert_same(torch, lambda x, a, b: (x.clamp(a, b), x.clamp_min(a)), False, x, lo, hi)


def test_clamp_inplace_variants():
    x = graphc.tensor([-2.0, 0.0, 3.0])
    assert x.clamp_min_(-1.0) is x
    x.clamp_max_(1.0)
    np.testing.assert_array_equal(x.numpy(), [-1.0, 0.0, 1.0])


def test_split_chunk_edge_cases_match_torch(torch):
    for make in (
        lambda lib, x: lib.chunk(x, 4),  # 10 -> 3, 3, 3, 1
        lambda lib, x: lib.chunk(x, 6),  # 10 -> five pieces of 2: fewer than asked
        lambda lib, x: lib.split(x, 3),
        lambda lib, x: lib.split(x, 20),
        lambda lib, x: lib.split(x, [0, 10]),
    ):
        g = make(graphc, graphc.arange(10))
        t = make(torch, torch.arange(10))
        assert [list(p.shape) for p in g] == [list(p.shape) for p in t]
        for a, b in zip(g, t, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert len(graphc.chunk(graphc.zeros(0), 3)) == len(torch.chunk(torch.zeros(0), 3))


def test_split_errors_name_the_problem():
    x = graphc.arange(10)
    with pytest.raises(graphc.ShapeError, match="sum exactly to 10.*\\[3, 6\\]"):
        x.split([3, 6])
    with pytest.raises(graphc.ShapeError, match="split_size can only be 0"):
        x.split(0)
    with pytest.raises(graphc.GraphcError, match="greater than 0, got: 0"):
        x.chunk(0)
    with pytest.raises(graphc.ShapeError, match="exceeds dimension size"):
        x.narrow(0, 8, 3)
    with pytest.raises(graphc.ShapeError, match="(?s)no dimensions.*test_tensor_api"):
        graphc.tensor(1.0).unbind()


def test_xlogy_matches_torch(torch):
    x = np.array([0.0, 0.0, 2.0, 1.5, 0.0, 3.0], np.float32)
    y = np.array([0.0, 2.0, 0.5, 0.0, np.nan, -1.0], np.float32)
    want = torch.xlogy(torch.tensor(x), torch.tensor(y)).numpy()
    np.testing.assert_array_equal(graphc.xlogy(graphc.tensor(x), graphc.tensor(y)).numpy(), want)
    # d/dx = log y, and 0 where x = 0 (PyTorch's xlogy(x != 0, y)), even for y = 0
    assert_same(torch, lambda x, y: (_lib(x).xlogy(x, y),), False, x[:4], y[:4])


# ---- modules ----------------------------------------------------------------------------------


def _layers(lib):
    return lib.nn.Sequential(
        OrderedDict(
            [("fc", lib.nn.Linear(3, 4)), ("act", lib.nn.GELU()), ("out", lib.nn.Linear(4, 2))]
        )
    )


def test_sequential_of_an_ordered_dict_has_torchs_names(torch):
    g, t = _layers(graphc), _layers(torch)
    assert list(g.state_dict()) == list(t.state_dict())
    g.load_state_dict(t.state_dict())
    x = np.random.default_rng(2).standard_normal((5, 3)).astype(np.float32)
    np.testing.assert_allclose(
        g(graphc.tensor(x)).detach().numpy(), t(torch.tensor(x)).detach().numpy(), rtol=1e-5
    )
    assert isinstance(g.fc, nn.Linear) and g[1] is g.act


def add_heads(m, lib) -> None:
    """ModuleDict, ParameterList and ParameterDict in one model, as PyTorch users write them."""
    m.heads = lib.nn.ModuleDict({"a": lib.nn.Linear(3, 2), "b": lib.nn.Linear(3, 2)})
    m.scales = lib.nn.ParameterList([lib.nn.Parameter(lib.ones(2)) for _ in range(2)])
    m.extra = lib.nn.ParameterDict({"shift": lib.nn.Parameter(lib.zeros(2))})


def heads_forward(m, x):
    out = m.heads["a"](x) * m.scales[0] + m.heads["b"](x) * m.scales[1]
    return out + m.extra["shift"]


class Heads(nn.Module):
    def __init__(self):
        super().__init__()
        add_heads(self, graphc)

    forward = heads_forward


def torch_heads(torch):
    class TorchHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            add_heads(self, torch)

        forward = heads_forward

    return TorchHeads()


@MODES
def test_parameter_containers_train_like_torch(torch, compiled):
    torch.manual_seed(0)
    t = torch_heads(torch)
    g = Heads()
    assert list(g.state_dict()) == list(t.state_dict())
    assert [n for n, _ in g.named_parameters()] == [n for n, _ in t.named_parameters()]
    g.load_state_dict(t.state_dict())
    t_opt = torch.optim.SGD(t.parameters(), lr=0.1)
    g_opt = graphc.optim.SGD(g.parameters(), lr=0.1)
    rng = np.random.default_rng(3)

    def g_step(x, y):
        g_opt.zero_grad()
        loss = F.mse_loss(g(x), y)
        loss.backward()
        g_opt.step()
        return loss

    step = graphc.compile(g_step) if compiled else g_step
    for _ in range(3):
        x = rng.standard_normal((4, 3)).astype(np.float32)
        y = rng.standard_normal((4, 2)).astype(np.float32)
        t_opt.zero_grad()
        t_loss = torch.nn.functional.mse_loss(t(torch.tensor(x)), torch.tensor(y))
        t_loss.backward()
        t_opt.step()
        g_loss = step(graphc.tensor(x), graphc.tensor(y))
        np.testing.assert_allclose(g_loss.item(), t_loss.item(), rtol=1e-6)
    for k, v in t.state_dict().items():
        np.testing.assert_allclose(g.state_dict()[k].numpy(), v.numpy(), rtol=1e-5, err_msg=k)


def test_parameter_list_and_dict_behave_like_torchs(torch):
    for lib in (graphc, torch):
        pl = lib.nn.ParameterList([lib.ones(2)])  # plain tensors become parameters
        pl.append(lib.zeros(3))
        pl += [lib.zeros(1)]
        assert len(pl) == 3 and all(isinstance(p, lib.nn.Parameter) for p in pl)
        assert [tuple(p.shape) for p in pl[1:]] == [(3,), (1,)]
        pd = lib.nn.ParameterDict({"w": lib.ones(2)})
        pd["b"] = lib.zeros(2)
        pd.update([("c", lib.ones(1))])
        assert list(pd.keys()) == ["w", "b", "c"] and "b" in pd
        del pd["w"]
        assert list(dict(pd.named_parameters())) == ["b", "c"]


def test_module_and_tensor_device_spellings():
    model = nn.Linear(2, 2)
    device = graphc.device("cuda" if graphc.cuda.is_available() else "cpu")
    assert model.to(device) is model and model.cpu() is model and model.float() is model
    assert model.to("cpu", graphc.float64).weight.dtype == graphc.float64
    x = graphc.ones(3).to(device)
    assert x.device == "cpu" and x.device == graphc.device("cpu") and str(x.device) == "cpu"
    assert x.to("cpu", dtype=graphc.float64).dtype == graphc.float64
    assert x.to(device, non_blocking=True) is x
    with pytest.raises(ValueError, match="(?s)CPU only.*'cuda'.*test_tensor_api"):
        model.to("cuda")
    with pytest.raises(ValueError, match="'cuda:1' is not available"):
        x.to(graphc.device("cuda", 1))
    with pytest.raises(ValueError, match="CPU only"):
        model.cuda()
    with pytest.raises(TypeError, match="only accepts floating point dtypes"):
        model.to(graphc.int64)


def test_manual_seed_makes_initialisation_repeatable():
    graphc.manual_seed(7)
    a = nn.Linear(4, 3).weight.detach().numpy()
    graphc.manual_seed(7)
    b = nn.Linear(4, 3).weight.detach().numpy()
    np.testing.assert_array_equal(a, b)


# ---- checkpoints --------------------------------------------------------------------------------


def test_save_and_load_under_torchs_spellings(tmp_path):
    model = _layers(graphc)
    path = tmp_path / "mnist_cnn.pt"
    graphc.save(model.state_dict(), path)
    for kwargs in (
        {},
        {"map_location": "cpu"},
        {"map_location": graphc.device("cpu"), "weights_only": True},
        {"map_location": {"cuda:0": "cpu"}},
        {"map_location": lambda storage, loc: storage},
    ):
        fresh = _layers(graphc)
        fresh.load_state_dict(graphc.load(str(path), **kwargs))
        for k, v in model.state_dict().items():
            np.testing.assert_array_equal(fresh.state_dict()[k].numpy(), v.numpy())
    buffer = io.BytesIO()
    graphc.save({"model": model.state_dict(), "epoch": 3}, buffer)
    buffer.seek(0)
    assert graphc.load(buffer)["epoch"] == 3


def test_checkpoint_mistakes_are_explained(torch, tmp_path):
    model = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="save obj.state_dict\\(\\)"):
        graphc.save(model, tmp_path / "m.pt")
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "t.pt")
    with pytest.raises(graphc.DataError, match="is a PyTorch checkpoint"):
        graphc.load(tmp_path / "t.pt")
    graphc.save(model.state_dict(), tmp_path / "g.pt")
    with pytest.raises(ValueError, match="CPU only"):
        graphc.load(tmp_path / "g.pt", map_location="cuda:0")
