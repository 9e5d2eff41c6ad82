"""Sequence models end to end: the built-in transformer and lstm text classifiers and a
bidirectional 2-layer GRU, loaded from a PyTorch state_dict unchanged and trained for 20
steps on the same token batches by PyTorch and by graphc (eagerly and compiled): the same
loss at every step (rtol 1e-4) and the same final parameters and Adam state.

The PyTorch models are the graphc models' own source run against torch
(graphc/bench/twin.py), or, for the GRU, one function building the model from either
library's nn."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
import graphc.nn as gnn
from graphc.models import TextLSTM, TextTransformer

STEPS = 20
VOCAB, CLASSES, LENGTH, BATCH = 50, 3, 12, 8
MODES = pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])


def gru_classifier(nn):
    lib = graphc if nn is gnn else __import__("torch")

    def torch_or_graphc_cat(parts):  # the one call that names the library
        return lib.cat(parts, 1)

    class GRUClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(VOCAB, 16, padding_idx=0)
            self.gru = nn.GRU(16, 12, num_layers=2, bidirectional=True)  # sequence-first
            self.fc = nn.Linear(24, CLASSES)

        def forward(self, tokens):
            out, h = self.gru(self.embed(tokens).transpose(0, 1))
            last = h[-1]
            return self.fc(out.mean(0) + torch_or_graphc_cat([last, last]) * 0.5)

    return GRUClassifier()


def _text_model(cls, **kw):
    def make(nn):
        if nn.__name__.startswith("graphc"):
            return cls(**kw)
        from graphc.bench.twin import torch_twin

        return torch_twin(cls)(**kw)

    return make


MODELS = {
    "transformer": _text_model(
        TextTransformer,
        vocab_size=VOCAB,
        num_classes=CLASSES,
        max_len=LENGTH,
        d_model=32,
        nhead=4,
        dim_feedforward=48,
    ),
    "lstm": _text_model(
        TextLSTM, vocab_size=VOCAB, num_classes=CLASSES, embed_dim=16, hidden_size=24
    ),
    "gru_bidirectional_2_layers": gru_classifier,
}


def batches(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for _ in range(STEPS):
        tokens = rng.integers(1, VOCAB, (BATCH, LENGTH))
        lengths = rng.integers(3, LENGTH + 1, BATCH)
        tokens[np.arange(LENGTH)[None, :] >= lengths[:, None]] = 0  # padding at the end
        out.append((tokens, rng.integers(0, CLASSES, BATCH)))
    return out


def _key_bias_entries(model) -> dict[str, slice]:
    """The key part of each attention in_proj_bias, by parameter and Adam-state name. Its
    gradient is exactly zero (adding a constant to every key's score leaves the softmax as
    it is), so both libraries compute rounding noise of ~1e-9 for it, which Adam turns into
    steps of +-lr in random directions: no two implementations agree on those entries."""
    out = {}
    for i, (name, p) in enumerate(model.named_parameters()):
        if name.endswith("in_proj_bias"):
            e = p.shape[0] // 3
            for key in (name, f"{i}.exp_avg", f"{i}.exp_avg_sq"):
                out[key] = slice(e, 2 * e)
    return out


def train(lib, model, data, compiled=False):
    opt = lib.optim.Adam(model.parameters(), lr=3e-3)
    criterion = lib.nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        opt.step()
        return loss

    fn = graphc.compile(step) if compiled else step
    losses = [fn(lib.tensor(x), lib.tensor(y)).item() for x, y in data]
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    moments = {
        f"{i}.{k}": v.numpy().copy()
        for i, st in opt.state_dict()["state"].items()
        for k, v in st.items()
        if k != "step"
    }
    return np.array(losses), state, moments, fn


@MODES
@pytest.mark.parametrize("name", list(MODELS))
def test_training_matches_torch(torch, compiled, name):
    torch.manual_seed(0)
    t_model = MODELS[name](torch.nn)
    g_model = MODELS[name](gnn)
    t_state = t_model.state_dict()
    assert list(g_model.state_dict()) == list(t_state)  # PyTorch's names, in its order
    result = g_model.load_state_dict(t_state)
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in g_model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), t_state[k].numpy(), err_msg=k)
    data = batches(np.random.default_rng(1))
    want, t_params, t_moments, _ = train(torch, t_model, data)
    got, g_params, g_moments, fn = train(graphc, g_model, data, compiled)
    np.testing.assert_allclose(got, want, rtol=1e-4, err_msg="losses, step by step")
    noise = _key_bias_entries(t_model)
    for k, v in {**t_params, **t_moments}.items():
        g = g_params.get(k, g_moments.get(k))
        if k in noise:  # see _key_bias_entries
            g, v = np.delete(g, noise[k]), np.delete(v, noise[k])
        scale = float(np.abs(v).max()) if v.size else 0.0
        np.testing.assert_allclose(g, v, rtol=1e-3, atol=1e-5 * max(scale, 1.0), err_msg=k)
    if compiled:
        assert sum(len(v) for v in fn.cache.values()) == 1  # traced once
        if name != "transformer":  # the recurrences are loops, not unrolled steps
            assert any(n.op == "scan" for n in fn.last.traced.nodes)
