"""Sequence layers against PyTorch: Embedding, LayerNorm, MultiheadAttention,
scaled_dot_product_attention, TransformerEncoder(Layer), LSTM, GRU and their cells, and
clip_grad_norm_. Each loads PyTorch's state_dict unchanged (same keys, order and shapes)
and gives the same outputs and gradients, eagerly and compiled."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
import graphc.nn as gnn
import graphc.nn.functional as gF
from graphc.codegen.backend import native_executable
from graphc.errors import GraphcError, ShapeError
from graphc.frontend.compile import CompiledFunction

MODES = pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


LAYERS = {
    "embedding_padding": (
        lambda nn: nn.Embedding(11, 5, padding_idx=3),
        lambda rng: [rng.integers(0, 11, (4, 6))],
    ),
    "layer_norm_2d": (
        lambda nn: nn.LayerNorm((3, 4), eps=1e-4),
        lambda rng: [f32(rng, 2, 5, 3, 4)],
    ),
    "layer_norm_no_affine": (
        lambda nn: nn.LayerNorm(6, elementwise_affine=False),
        lambda rng: [f32(rng, 3, 6)],
    ),
    "mha_weights_masks": (
        lambda nn: nn.MultiheadAttention(8, 2),
        lambda rng: [
            f32(rng, 5, 3, 8),
            np.triu(np.ones((5, 5), bool), 1),
            rng.random((3, 5)) < 0.3,
        ],
    ),
    "mha_batch_first_cross": (
        lambda nn: nn.MultiheadAttention(8, 4, batch_first=True, bias=False),
        lambda rng: [f32(rng, 3, 5, 8), f32(rng, 3, 7, 8)],
    ),
    "encoder_post_norm_relu": (
        lambda nn: nn.TransformerEncoder(
            nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0), 2, enable_nested_tensor=False
        ),
        lambda rng: [f32(rng, 6, 3, 8), rng.random((3, 6)) < 0.3],
    ),
    "encoder_pre_norm_gelu_final_norm": (
        lambda nn: nn.TransformerEncoder(
            nn.TransformerEncoderLayer(
                8, 4, 12, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
            ),
            1,
            norm=nn.LayerNorm(8),
            enable_nested_tensor=False,
        ),
        lambda rng: [f32(rng, 3, 6, 8)],
    ),
    "lstm_2_layers_batch_first": (
        lambda nn: nn.LSTM(5, 6, num_layers=2, batch_first=True),
        lambda rng: [f32(rng, 3, 7, 5), f32(rng, 2, 3, 6), f32(rng, 2, 3, 6)],
    ),
    "lstm_bidirectional_unbatched": (
        lambda nn: nn.LSTM(4, 3, bidirectional=True, bias=False),
        lambda rng: [f32(rng, 6, 4)],
    ),
    "gru_2_layers_bidirectional": (
        lambda nn: nn.GRU(4, 5, num_layers=2, bidirectional=True),
        lambda rng: [f32(rng, 6, 2, 4), f32(rng, 4, 2, 5)],
    ),
    "lstm_cell": (
        lambda nn: nn.LSTMCell(4, 6),
        lambda rng: [f32(rng, 3, 4), f32(rng, 3, 6), f32(rng, 3, 6)],
    ),
    "gru_cell_unbatched": (lambda nn: nn.GRUCell(4, 6, bias=False), lambda rng: [f32(rng, 4)]),
}


def _call(name, layer, lib, ins):
    if name == "mha_weights_masks":
        x, mask, pad = ins
        out, w = layer(x, x, x, key_padding_mask=pad, attn_mask=mask, average_attn_weights=False)
        return out.sum() + (w * w).sum()
    if name == "mha_batch_first_cross":
        q, kv = ins
        out, w = layer(q, kv, kv)
        return out.sum() + w.sum()
    if name.startswith("encoder"):
        pad = ins[1] if len(ins) > 1 else None
        return (layer(ins[0], src_key_padding_mask=pad) ** 2).sum()
    if name.startswith("lstm") and name != "lstm_cell":
        hx = (ins[1], ins[2]) if len(ins) > 1 else None
        out, (h, c) = layer(ins[0], hx)
        return (out**2).sum() + h.sum() + (c * c).sum()
    if name.startswith("gru") and name != "gru_cell_unbatched":
        out, h = layer(*ins)
        return (out**2).sum() + h.sum()
    if name == "lstm_cell":
        h, c = layer(ins[0], (ins[1], ins[2]))
        return (h * c).sum() + h.sum()
    return (layer(*ins) ** 2).sum()


def _grads(lib, layer, name, arrays, compiled):
    ins = []
    for a in arrays:
        t = lib.tensor(a)
        if a.dtype.kind == "f":
            t.requires_grad_(True)
        ins.append(t)

    def step(*ts):
        loss = _call(name, layer, lib, list(ts))
        loss.backward()
        return loss

    loss = CompiledFunction(step, backend=native_executable)(*ins) if compiled else step(*ins)
    params = {k: p.grad.numpy() for k, p in layer.named_parameters()}
    inputs = [t.grad.numpy() for t in ins if t.is_floating_point()]
    return float(loss.item()), params, inputs


@MODES
@pytest.mark.parametrize("name", list(LAYERS))
def test_layers_match_torch(torch, compiled, name):
    make, data = LAYERS[name]
    torch.manual_seed(0)
    t_layer, g_layer = make(torch.nn), make(gnn)
    t_state = t_layer.state_dict()
    g_state = g_layer.state_dict()
    assert list(g_state) == list(t_state)
    assert [tuple(v.shape) for v in g_state.values()] == [tuple(v.shape) for v in t_state.values()]
    g_layer.load_state_dict(t_state)
    arrays = data(np.random.default_rng(1))
    t_loss, t_params, t_inputs = _grads(torch, t_layer, name, arrays, False)
    g_loss, g_params, g_inputs = _grads(graphc, g_layer, name, arrays, compiled)
    np.testing.assert_allclose(g_loss, t_loss, rtol=1e-5)
    for k, v in t_params.items():
        np.testing.assert_allclose(g_params[k], v, rtol=1e-4, atol=1e-5, err_msg=k)
    for g, v in zip(g_inputs, t_inputs, strict=True):
        np.testing.assert_allclose(g, v, rtol=1e-4, atol=1e-5)


@MODES
@pytest.mark.parametrize(
    "kw",
    [dict(is_causal=True), dict(mask="bool"), dict(mask="float", scale=0.3)],
    ids=["causal", "bool_mask", "float_mask_scale"],
)
def test_scaled_dot_product_attention_matches_torch(torch, compiled, kw):
    rng = np.random.default_rng(2)
    q, k, v = f32(rng, 2, 3, 5, 4), f32(rng, 2, 3, 6, 4), f32(rng, 2, 3, 6, 4)
    mask = None
    if kw.get("mask") == "bool":
        mask = rng.random((5, 6)) < 0.7
        mask[:, 0] = True  # every query attends to something
    elif kw.get("mask") == "float":
        mask = f32(rng, 2, 1, 5, 6)
    if kw.get("is_causal"):
        k, v = k[:, :, :5], v[:, :, :5]

    def run(lib, F, compiled=False):
        ts = [lib.tensor(a, requires_grad=True) for a in (q, k, v)]
        m = lib.tensor(mask) if mask is not None else None

        def step(q, k, v):
            out = F.scaled_dot_product_attention(
                q, k, v, m, is_causal=kw.get("is_causal", False), scale=kw.get("scale")
            )
            (out * out).sum().backward()
            return out

        out = CompiledFunction(step, backend=native_executable)(*ts) if compiled else step(*ts)
        return [out.detach().numpy()] + [t.grad.numpy() for t in ts]

    for g, t in zip(run(graphc, gF, compiled), run(torch, torch.nn.functional), strict=True):
        np.testing.assert_allclose(g, t, rtol=1e-4, atol=1e-5)


@MODES
@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf"), 3.0])
def test_clip_grad_norm_in_a_training_step_matches_torch(torch, compiled, norm_type):
    rng = np.random.default_rng(3)
    batches = [(f32(rng, 8, 5), f32(rng, 8, 2) * 5) for _ in range(4)]

    def train(lib, nn, model, compiled=False):
        opt = lib.optim.SGD(model.parameters(), lr=0.1)

        def step(x, y):
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            norm = nn.utils.clip_grad_norm_(model.parameters(), 0.5, norm_type)
            opt.step()
            return loss, norm

        fn = graphc.compile(step) if compiled else step
        out = [fn(lib.tensor(x), lib.tensor(y)) for x, y in batches]
        return [(a.item(), b.item()) for a, b in out], [
            p.detach().numpy() for p in model.parameters()
        ]

    torch.manual_seed(0)
    t_model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2))
    g_model = gnn.Sequential(gnn.Linear(5, 7), gnn.Tanh(), gnn.Linear(7, 2))
    g_model.load_state_dict(t_model.state_dict())
    want, t_params = train(torch, torch.nn, t_model)
    got, g_params = train(graphc, gnn, g_model, compiled)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for g, t in zip(g_params, t_params, strict=True):
        np.testing.assert_allclose(g, t, rtol=1e-5, atol=1e-6)


def test_the_padding_row_of_an_embedding_never_changes_in_training():
    emb = gnn.Embedding(6, 3, padding_idx=0)
    emb.weight.data.copy_(graphc.randn(6, 3))  # even a padding row that is not zero
    row = emb.weight.detach().numpy()[0].copy()
    opt = graphc.optim.SGD(emb.parameters(), lr=1.0)

    @graphc.compile
    def step(x):
        opt.zero_grad()
        emb(x).sum().backward()
        opt.step()

    step(graphc.tensor([[0, 1, 0, 2]]))
    np.testing.assert_array_equal(emb.weight.detach().numpy()[0], row)
    assert (emb.weight.detach().numpy()[1] != 0).all()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: gnn.MultiheadAttention(10, 3), "divisible by num_heads"),
        (lambda: gnn.LSTM(3, 4, dropout=1.5), "dropout should be a number in range"),
        (lambda: gnn.LSTM(3, 4, proj_size=2), "proj_size is not supported"),
        (lambda: gnn.Embedding(5, 2, padding_idx=7), "Padding_idx must be within"),
        (lambda: gnn.TransformerEncoderLayer(8, 2, activation="tanh"), "relu/gelu"),
    ],
)
def test_bad_layer_arguments_are_refused(make, message):
    with pytest.raises((ValueError, RuntimeError), match=message):
        make()


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: gnn.LSTM(3, 4)(graphc.zeros(5, 2, 6)), ShapeError, "input_size = 3"),
        (lambda: gnn.LSTM(3, 4)(graphc.zeros(5, 2, 3), (graphc.zeros(1, 3, 4),) * 2), ShapeError,
         "expected hidden size"),
        (lambda: gnn.Embedding(5, 2)(graphc.zeros(3)), ShapeError, "integer tensor"),
        (lambda: gnn.LayerNorm(4)(graphc.zeros(2, 3)), ShapeError, "normalized_shape"),
        (lambda: gnn.MultiheadAttention(4, 2)(*(graphc.zeros(3, 4),) * 3), ShapeError, "3-D"),
        (lambda: gF.scaled_dot_product_attention(*(graphc.zeros(2, 3),) * 3,
                                                  attn_mask=graphc.zeros(2, 2), is_causal=True),
         GraphcError, "should not be set"),
    ],
)  # fmt: skip
def test_bad_inputs_say_what_is_wrong(call, error, message):
    with pytest.raises(error, match=message):
        call()
