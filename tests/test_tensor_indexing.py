"""The indexing and contraction API (index_select, gather, take_along_dim, scatter_add,
index_add, masked_fill, tril/triu, cumsum, bmm/baddbmm/addmm, einsum) against PyTorch:
values and gradients, eagerly and compiled to native code."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.codegen.backend import native_executable
from graphc.errors import ShapeError
from graphc.frontend.compile import CompiledFunction

MODES = pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])


def _index_cases(rng):
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    return {
        "index_select": (lambda L, x, i: L.index_select(x, 1, i), [x, rng.integers(0, 6, 5)]),
        "gather_narrower_index": (
            lambda L, x, i: L.gather(x, 1, i),
            [x, rng.integers(0, 6, (3, 8, 2))],  # smaller than x on dims 0 and 2
        ),
        "take_along_dim": (
            lambda L, x, i: L.take_along_dim(x, i, 2),
            [x, rng.integers(0, 3, (1, 6, 4))],  # broadcasts over dim 0
        ),
        "take_along_dim_flat": (
            lambda L, x, i: L.take_along_dim(x, i),
            [x, rng.integers(0, 72, 9)],
        ),
        "scatter_add": (
            lambda L, x, i: L.scatter_add(x, 1, i, x[:, :4] * 2),
            [x, rng.integers(0, 6, (4, 4, 3))],
        ),
        "scatter_add_corner": (
            lambda L, x, i: x.scatter_add(0, i, x[:2, :5] * 3),
            [x, rng.integers(0, 4, (2, 5, 3))],  # the index covers a corner of x
        ),
        "index_add": (
            lambda L, x, i: L.index_add(x, 1, i, x[:, :5], alpha=2.0),
            [x, rng.integers(0, 6, 5)],
        ),
        "masked_fill": (lambda L, x, m: x.masked_fill(m, -1.5), [x, rng.random((6, 1)) < 0.5]),
        "tril_triu": (lambda L, x: L.tril(x, -1) * 2 + L.triu(x, 1), [x]),
        "cumsum": (lambda L, x: L.cumsum(x, 1) + x.cumsum(-1), [x]),
        "bmm_baddbmm": (
            lambda L, x, y: L.baddbmm(x[:, :, :2], x, y, beta=0.5, alpha=2.0) + L.bmm(x, y),
            [x, rng.standard_normal((4, 3, 2)).astype(np.float32)],
        ),
        "addmm": (
            lambda L, a, b: L.addmm(b[0], a, b, beta=2.0),
            [x[0], rng.standard_normal((3, 3)).astype(np.float32)],
        ),
    }


def _run(lib, fn, arrays, compiled):
    tensors = []
    for a in arrays:
        t = lib.tensor(a)
        if a.dtype.kind == "f":
            t.requires_grad_(True)
        tensors.append(t)

    def step(*ts):
        out = fn(lib, *ts)
        (out * out).sum().backward()
        return out

    out = (
        CompiledFunction(step, backend=native_executable)(*tensors) if compiled else step(*tensors)
    )
    return [out.detach().numpy()] + [t.grad.numpy() for t in tensors if t.is_floating_point()]


@MODES
@pytest.mark.parametrize("name", sorted(_index_cases(np.random.default_rng(0))))
def test_values_and_gradients_match_torch(torch, compiled, name):
    fn, arrays = _index_cases(np.random.default_rng(0))[name]
    want = _run(torch, fn, arrays, False)
    got = _run(graphc, fn, arrays, compiled)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


EINSUMS = [
    ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),
    ("bhqk,bhkd->bhqd", [(2, 3, 4, 6), (2, 3, 6, 5)]),
    ("...qd,...kd->...qk", [(2, 3, 4, 5), (3, 6, 5)]),
    ("ij,jk", [(4, 5), (5, 3)]),
    ("ij,j->i", [(4, 5), (5,)]),
    ("i,j->ij", [(4,), (3,)]),
    ("bij->bji", [(2, 3, 4)]),
    ("bij->", [(2, 3, 4)]),
    ("abc,acd,ade->abe", [(2, 3, 4), (2, 4, 5), (2, 5, 3)]),
    ("nij,j->n", [(3, 4, 5), (5,)]),
]


@MODES
@pytest.mark.parametrize("equation, shapes", EINSUMS, ids=[e for e, _ in EINSUMS])
def test_einsum_matches_torch(torch, compiled, equation, shapes):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]

    def fn(lib, *ts):
        return lib.einsum(equation, *ts)

    want = _run(torch, fn, arrays, False)
    got = _run(graphc, fn, arrays, compiled)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_attention_einsum_reads_its_operands_through_the_matmul_flags():
    """q k^T as einsum is one matmul with trans_b: no transpose materialised first."""
    q, k = graphc.randn(2, 3, 4, 5), graphc.randn(2, 3, 6, 5)
    f = CompiledFunction(lambda q, k: graphc.einsum("bhqd,bhkd->bhqk", q, k))
    graph = f.trace(q, k).traced
    assert [n.op for n in graph.nodes if not n.is_input] == ["matmul"]
    assert dict(graph.nodes[-1].attrs)["trans_b"] is True


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda x: graphc.einsum("ij,jk->ik", x), "names 2 operand"),
        (lambda x: graphc.einsum("ii->i", x[:, :3]), "diagonal"),
        (lambda x: graphc.einsum("ijk->i", x), "do not match its 2 dimension"),
        (lambda x: graphc.einsum("ij,kj->ik", x, x[:, :2]), "do not broadcast"),
        (lambda x: graphc.gather(x, 1, x), "integer tensor"),
        (lambda x: graphc.index_select(x, 0, graphc.zeros(2, 2, dtype=graphc.int64)), "1-D"),
        (lambda x: x.masked_fill(x > 0, graphc.ones(2)), "0-dimensional"),
        (lambda x: x.masked_fill(graphc.ones(4, 1), 0.0), "boolean masks"),
        (lambda x: graphc.tril(x[0]), "at least 2 dimensions"),
        (lambda x: graphc.bmm(x, x), "3-D tensors"),
    ],
)
def test_bad_arguments_say_what_is_wrong(call, message):
    x = graphc.randn(3, 4)
    with pytest.raises(ShapeError, match=message):
        call(x)
