"""The Module API and the containers behave as torch.nn's: names, order, traversal, mutation.

The same model source is instantiated with torch.nn and with graphc.nn, and every listing
(parameters, buffers, modules, children, state_dict) is compared name for name.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

import graphc
import graphc.nn as gnn


def build(nn, lib):
    """A model with nesting, containers, a shared submodule and both kinds of buffers."""

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.register_buffer("scale", lib.ones(4))
            self.register_buffer("scratch", lib.zeros(2), persistent=False)

        def forward(self, x):
            return self.bn(self.conv(x)) * self.scale.reshape(1, 4, 1, 1)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(Block(), nn.ReLU(), nn.MaxPool2d(2))
            self.heads = nn.ModuleList([nn.Linear(4 * 4 * 4, 3), nn.Linear(3, 2, bias=False)])
            self.extra = nn.ModuleDict({"b": nn.BatchNorm1d(3, affine=False), "a": nn.Identity()})
            self.shared = self.heads[0]  # the same module under a second name
            self.flat = nn.Flatten()

        def forward(self, x):
            x = self.flat(self.features(x))
            x = self.extra["a"](self.extra["b"](self.heads[0](x)))
            return self.heads[1](x)

    return Net()


@pytest.fixture
def pair(torch):
    return build(torch.nn, torch), build(gnn, graphc)


def names(items):
    return [n for n, _ in items]


def test_listings_match_torch(pair):
    t, g = pair
    assert names(g.named_parameters()) == names(t.named_parameters())
    assert names(g.named_buffers()) == names(t.named_buffers())
    assert names(g.named_modules()) == names(t.named_modules())
    assert names(g.named_children()) == names(t.named_children())
    assert [type(m).__name__ for m in g.modules()] == [type(m).__name__ for m in t.modules()]
    assert [type(m).__name__ for m in g.children()] == [type(m).__name__ for m in t.children()]
    for kw in (
        dict(remove_duplicate=False),
        dict(prefix="model"),
        dict(recurse=False),
    ):
        if "recurse" not in kw:
            assert names(g.named_modules(**kw)) == names(t.named_modules(**kw))
        assert names(g.named_parameters(**kw)) == names(t.named_parameters(**kw))
        assert names(g.named_buffers(**kw)) == names(t.named_buffers(**kw))
    assert names(g.features.named_parameters("features")) == names(
        t.features.named_parameters("features")
    )
    assert len(list(g.parameters())) == len(list(t.parameters()))  # shared ones once


def test_state_dict_keys_order_and_shapes_match_torch(pair):
    t, g = pair
    t_sd, g_sd = t.state_dict(), g.state_dict()
    assert [(k, tuple(v.shape)) for k, v in g_sd.items()] == [
        (k, tuple(v.shape)) for k, v in t_sd.items()
    ]
    assert "features.0.scratch" not in g_sd  # persistent=False
    assert list(g.state_dict(prefix="m.")) == list(t.state_dict(prefix="m."))
    assert g_sd["features.0.bn.num_batches_tracked"].dtype == graphc.int64
    # Values share memory with the module, as in PyTorch.
    g_sd["heads.1.weight"].numpy()[0, 0] = 7.0
    assert g.heads[1].weight.detach().numpy()[0, 0] == 7.0


@pytest.mark.parametrize("model", ["ConvNet", "LeNet5", "MLP"])
def test_builtin_models_have_torchs_state_dict_layout(torch, model):
    """graphc's built-in models load PyTorch weights of the same architecture unchanged."""
    g = getattr(graphc.models, model)()
    t = build_torch_twin(torch, model)
    assert [(k, tuple(v.shape)) for k, v in g.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in t.state_dict().items()
    ]


def build_torch_twin(torch, model):
    nn = torch.nn
    if model == "MLP":
        m = nn.Module()
        m.net = nn.Sequential(
            nn.Flatten(), nn.Linear(3072, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
            nn.Linear(512, 10),
        )  # fmt: skip
        return m
    m = nn.Module()
    m.conv1 = nn.Conv2d(3 if model == "ConvNet" else 1, 6, 5)
    if model == "ConvNet":
        m.pool = nn.MaxPool2d(2, 2)
    m.conv2 = nn.Conv2d(6, 16, 5)
    m.fc1, m.fc2, m.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)
    return m


def test_train_eval_reach_every_submodule(pair):
    t, g = pair
    for mode in ("eval", "train"):
        getattr(t, mode)()
        assert getattr(g, mode)() is g
        assert [m.training for m in g.modules()] == [m.training for m in t.modules()]
    g.extra.eval()
    assert g.training and not g.extra["b"].training and g.heads.training


def test_apply_visits_children_first_like_torch(pair):
    t, g = pair
    seen_t, seen_g = [], []
    t.apply(lambda m: seen_t.append(type(m).__name__))
    assert g.apply(lambda m: seen_g.append(type(m).__name__)) is g
    assert seen_g == seen_t


def test_forward_matches_torch_and_zero_grad(torch, pair):
    t, g = pair
    g.load_state_dict(t.state_dict())
    x = np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32)
    expect = t(torch.tensor(x))
    got = g(graphc.tensor(x))
    np.testing.assert_allclose(got.detach().numpy(), expect.detach().numpy(), rtol=1e-5, atol=1e-6)
    got.sum().backward()
    assert all(p.grad is not None for p in g.parameters())
    g.zero_grad(set_to_none=False)
    assert all(not p.grad.numpy().any() for p in g.parameters())
    g.zero_grad()
    assert all(p.grad is None for p in g.parameters())


def test_attribute_assignment_registers_like_torch():
    m = gnn.Module()
    m.w = gnn.Parameter(graphc.ones(2))
    m.sub = gnn.Linear(2, 2)
    m.plain = graphc.ones(3)  # a plain tensor attribute is neither a parameter nor a buffer
    m.register_buffer("buf", graphc.zeros(1))
    assert names(m.named_parameters()) == ["w", "sub.weight", "sub.bias"]
    assert names(m.named_buffers()) == ["buf"]
    m.buf = graphc.ones(1)  # reassigning a buffer keeps it a buffer
    assert m.state_dict()["buf"].item() == 1.0
    m.w = None
    assert names(m.named_parameters()) == ["sub.weight", "sub.bias"]
    assert "w" not in m.state_dict()  # None parameters are skipped
    with pytest.raises(TypeError):
        m.w = graphc.ones(2)  # a registered parameter slot takes a Parameter or None
    del m.sub
    assert names(m.named_parameters()) == []
    with pytest.raises(AttributeError):
        _ = m.sub
    with pytest.raises(AttributeError, match="before Module.__init__"):

        class Bad(gnn.Module):
            def __init__(self):
                self.lin = gnn.Linear(1, 1)

        Bad()
    with pytest.raises(KeyError):
        m.register_buffer("a.b", graphc.zeros(1))


def test_requires_grad_and_double():
    lin = gnn.Linear(3, 2)
    lin.requires_grad_(False)
    assert not any(p.requires_grad for p in lin.parameters())
    lin.double()
    assert all(p.dtype == graphc.float64 for p in lin.parameters())


# ---- containers -----------------------------------------------------------------------------


def layers(nn):
    return [nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)]


def kinds(seq):
    return [type(m).__name__ for m in seq]


def test_sequential_indexing_and_naming(torch):
    t, g = torch.nn.Sequential(*layers(torch.nn)), gnn.Sequential(*layers(gnn))
    assert len(g) == len(t) == 5
    for i in (0, 2, -1, -5):
        assert type(g[i]).__name__ == type(t[i]).__name__
    for sl in (slice(1, 4), slice(None, None, 2), slice(-2, None)):
        assert isinstance(g[sl], gnn.Sequential)
        assert names(g[sl].named_children()) == names(t[sl].named_children())
    with pytest.raises(IndexError):
        g[5]
    assert kinds(g) == kinds(t)
    for seq in (t, g):
        del seq[1]
        seq.append(type(seq[0])(4, 4))
        seq.insert(1, type(seq[0])(3, 3))
        seq[0] = type(seq[0])(2, 2)
    assert names(g.named_parameters()) == names(t.named_parameters())
    assert names(g.named_children()) == names(t.named_children())
    popped_t, popped_g = t.pop(2), g.pop(2)
    assert type(popped_g).__name__ == type(popped_t).__name__
    assert names(g.named_children()) == names(t.named_children())


def test_sequential_with_ordered_dict_names_and_forward(torch):
    def make(nn):
        return nn.Sequential(OrderedDict([("fc", nn.Linear(4, 3)), ("act", nn.Sigmoid())]))

    t, g = make(torch.nn), make(gnn)
    assert list(g.state_dict()) == list(t.state_dict()) == ["fc.weight", "fc.bias"]
    g.load_state_dict(t.state_dict())
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(
        g(graphc.tensor(x)).detach().numpy(), t(torch.tensor(x)).detach().numpy(), rtol=1e-6
    )
    assert g.fc is g[0] and g.act is g[-1]


def test_module_list(torch):
    t, g = torch.nn.ModuleList(layers(torch.nn)), gnn.ModuleList(layers(gnn))
    assert len(g) == 5 and kinds(g) == kinds(t)
    assert kinds(g[1:3]) == kinds(t[1:3]) and isinstance(g[1:3], gnn.ModuleList)
    assert type(g[-2]).__name__ == "Tanh"
    for ml, nn in ((t, torch.nn), (g, gnn)):
        ml.extend([nn.Linear(1, 1)])
        ml += [nn.Sigmoid()]
        ml.insert(0, nn.Linear(5, 5))
        del ml[2]
        ml[1] = nn.Linear(6, 6)
    assert kinds(g) == kinds(t)
    assert names(g.named_parameters()) == names(t.named_parameters())
    assert kinds(g + gnn.ModuleList([gnn.ReLU()])) == kinds(t) + ["ReLU"]


def test_module_dict(torch):
    def make(nn):
        return nn.ModuleDict({"z": nn.Linear(1, 2), "a": nn.ReLU()})

    t, g = make(torch.nn), make(gnn)
    assert list(g) == list(t) == ["z", "a"]
    assert list(g.keys()) == list(t.keys()) and len(g) == 2 and "z" in g and "q" not in g
    for md, nn in ((t, torch.nn), (g, gnn)):
        md["m"] = nn.Linear(2, 2)
        md.update([("b", nn.Tanh())])
        md.update({"z": nn.Linear(3, 3)})
        md.pop("a")
    assert [k for k, _ in g.items()] == [k for k, _ in t.items()]
    assert kinds(g.values()) == kinds(t.values())
    assert names(g.named_parameters()) == names(t.named_parameters())
    g.clear()
    assert len(g) == 0
