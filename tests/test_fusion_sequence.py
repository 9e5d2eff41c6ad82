"""How sequence models compile: attention's softmax computes its scaling and mask as it reads
each row; an LSTM step is one matmul for all four gates, then one loop for all the gate
arithmetic; the embedding's gradient is an index_add, never a one-hot product. And the
fused kernels compute what the interpreter does."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
import graphc.nn as nn
import graphc.nn.functional as F
from graphc.codegen.backend import native_executable
from graphc.frontend.compile import CompiledFunction, interpreter_executable


def _planned(fn, *args):
    f = CompiledFunction(fn, backend=native_executable)
    f(*args)
    return f.last.graph


def test_attention_softmax_reads_its_scaled_masked_scores_without_storing_them(rng):
    q, k, v = (graphc.from_numpy(rng.standard_normal((2, 3, 5, 4)).astype(np.float32))
               for _ in range(3))  # fmt: skip
    pad = graphc.from_numpy(rng.random((2, 1, 1, 5)) < 0.3)

    def attend(q, k, v, pad):
        scores = (q @ k.transpose(-2, -1)) * 0.5
        return F.softmax(scores.masked_fill(pad, float("-inf")), -1) @ v

    graph = _planned(attend, q, k, v, pad)
    (kernel,) = [k for k in graph.meta["schedule"].kernels if k.kind == "softmax"]
    assert kernel.params.get("prologue")
    assert {n.op for n in kernel.nodes} >= {"mul", "where", "softmax"}
    assert "fused in" in kernel.reason
    want = CompiledFunction(attend, backend=interpreter_executable)(q, k, v, pad)
    got = CompiledFunction(attend, backend=native_executable)(q, k, v, pad)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_a_producer_read_elsewhere_is_not_fused_and_values_agree(op, rng):
    x = graphc.from_numpy(rng.standard_normal((4, 6)).astype(np.float32))
    b = graphc.from_numpy(rng.standard_normal(6).astype(np.float32))

    def f(x, b):
        shifted = x * 2 + b  # also returned: it must be stored, so it is not fused
        return getattr(F, op)(shifted, -1), getattr(F, op)(x.exp() - b, -1), shifted

    graph = _planned(f, x, b)
    fused = [k for k in graph.meta["schedule"].kernels if k.params.get("prologue")]
    assert len(fused) == 1 and "sub" in fused[0].reason and "exp" in fused[0].reason
    want = CompiledFunction(f, backend=interpreter_executable)
    for g, w in zip(CompiledFunction(f, backend=native_executable)(x, b), want(x, b), strict=True):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=1e-6)


def test_an_lstm_step_is_one_matmul_for_all_gates_and_one_loop_of_gate_arithmetic(rng):
    emb, lstm = nn.Embedding(20, 8, padding_idx=0), nn.LSTM(8, 16, batch_first=True)
    params = list(emb.parameters()) + list(lstm.parameters())
    opt = graphc.optim.SGD(params, lr=0.1)

    def step(tokens):
        opt.zero_grad()
        out, (h, c) = lstm(emb(tokens))
        loss = out.sum() + h.sum()
        loss.backward()
        opt.step()
        return loss

    graph = _planned(step, graphc.from_numpy(rng.integers(0, 20, (4, 7))))
    scans = graph.meta["scans"].bodies
    forward = [body for node, body in scans.items() if not node.attrs["reverse"]]
    assert len(forward) == 1
    kinds = [k.kind for k in forward[0].meta["schedule"].kernels]
    assert kinds.count("matmul") == 1  # h @ W_hh^T for the four gates at once
    loops = [k for k in forward[0].meta["schedule"].kernels if k.kind == "loop"]
    gates = [k for k in loops if {"sigmoid", "tanh", "mul", "add"} <= {n.op for n in k.nodes}]
    assert len(gates) == 1  # every sigmoid, tanh, c' and h' in one pass
    assert sum(n.op == "sigmoid" for n in gates[0].nodes) == 3
    ops = {n.op for n in graph.nodes}
    assert "index_add" in ops and "one_hot" not in ops  # the embedding's gradient
    assert not any(n.op == "matmul" and 20 in n.shape for n in graph.nodes)
