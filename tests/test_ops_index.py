"""Integer indexing (index_select, index_add, gather, scatter_add) and cumsum: rules vs
references, VJPs vs finite differences, native code vs the interpreter (bitwise: they only
move data or sum in one fixed order), the scatter-adds bitwise equal for 1, 2 and 3 threads,
PyTorch as the oracle, and bad indices reported, never read or written."""

from __future__ import annotations

import numpy as np
import pytest
from op_cases import (
    ALL_CASES,
    CASES,
    check_rule_and_ref,
    check_vjp,
    differentiable_cases,
    infer,
    make_inputs,
    params,
    run_ref,
    t,
    vjp,
)

import graphc
from graphc import dtypes
from graphc.codegen.backend import native_executable
from graphc.errors import ShapeError
from graphc.interpreter import ExecutionError, interpret
from graphc.ir import GraphBuilder, TensorType
from graphc.passes import derive_backward, run_pipeline
from graphc.passes.parallel import ParallelPlan

I64 = dtypes.int64
OPS_HERE = ("index_select", "index_add", "gather", "scatter_add", "cumsum")


@pytest.mark.parametrize("c", params(CASES["index"]))
def test_reference_keeps_the_rules_promise(c, rng):
    check_rule_and_ref(c, rng)


@pytest.mark.parametrize("c", params(differentiable_cases(CASES["index"])))
def test_vjp_matches_finite_differences(c, rng):
    check_vjp(c, rng)


def _compiled(graph, parallel: bool | None = None):
    planned = run_pipeline(graph, keep_snapshots=False).graph
    if parallel is not None:
        kernels = planned.meta["schedule"].kernels
        chosen = {k.name for k in kernels} if parallel else set()
        reasons = {k.name: "forced by the test" for k in kernels}
        planned = planned.with_meta(parallel=ParallelPlan(frozenset(chosen), reasons))
    return native_executable(planned)


@pytest.mark.parametrize("op", OPS_HERE)
def test_native_equals_the_interpreter_bitwise(op, rng):
    """Every case of the op, and the gradient graphs of the differentiable ones, in one
    native step each."""
    cases = [c for c in ALL_CASES if c.op == op]
    b = GraphBuilder(f"native_{op}")
    outputs, arrays = [], []
    for i, c in enumerate(cases):
        ins = [b.add_input(f"case{i}_x{j}", a.type()) for j, a in enumerate(c.args)]
        out = b.emit(op, ins, c.full_attrs())
        outputs.append(out)
        arrays += make_inputs(c, rng)
        if out.dtype.is_floating_point and out.type.numel:
            loss = b.reduce_sum(b.mul(out, out), axes=tuple(range(out.type.rank)))
            outputs.append(b.grad(loss, ins[0]))
    graph = derive_backward(b.build(outputs))
    got = _compiled(graph)([a.copy() for a in arrays])
    want = interpret(graph, arrays)
    for node, g, w in zip(graph.outputs, got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        assert g.tobytes() == w.tobytes(), f"{node!r}: native {g} vs interpreter {w}"


@pytest.mark.parametrize(
    "op, x, index, attrs",
    [
        ("index_add", (4096, 40), (4096,), dict(axis=0, shape=(50, 40))),
        ("index_add", (3, 900, 37), (900,), dict(axis=1, shape=(3, 20, 37), ignore_index=4)),
        ("scatter_add", (6, 700, 33), (6, 700, 33), dict(axis=1, shape=(6, 9, 33))),
        ("cumsum", (300, 70), None, dict(axis=0)),
    ],
)
def test_scatter_adds_are_bitwise_equal_for_1_2_and_3_threads(op, x, index, attrs, rng):
    b = GraphBuilder("threads")
    g = b.add_input("g", TensorType(x, dtypes.float32))
    ins = [g]
    if index is not None:
        ins.append(b.add_input("i", TensorType(index, I64)))
    graph = b.build([b.emit(op, ins, attrs)])
    values = rng.standard_normal(x).astype(np.float32) * 10 ** rng.uniform(-3, 3, x)
    arrays = [values.astype(np.float32)]
    if index is not None:
        axis = attrs["axis"]
        arrays.append(rng.integers(0, attrs["shape"][axis], index))  # many repeats
    want = interpret(graph, arrays)[0].tobytes()
    exe = _compiled(graph, parallel=True)
    before = graphc.get_num_threads()
    try:
        for n in (1, 2, 3):
            graphc.set_num_threads(n)
            assert exe([a.copy() for a in arrays])[0].tobytes() == want, f"{n} threads"
    finally:
        graphc.set_num_threads(before)


# ---- PyTorch as the oracle ------------------------------------------------------------------


def test_gathers_and_their_gradients_match_torch(torch, rng):
    x = rng.standard_normal((5, 7, 3)).astype(np.float32)
    cases = [
        ("index_select", rng.integers(0, 7, 11), dict(axis=1)),
        ("gather", rng.integers(0, 7, (5, 9, 3)), dict(axis=1)),
    ]
    for op, idx, attrs in cases:
        xt = torch.tensor(x, requires_grad=True)
        it = torch.from_numpy(idx)
        if op == "index_select":
            out = torch.index_select(xt, 1, it)
        else:
            out = torch.gather(xt, 1, it)
        np.testing.assert_array_equal(run_ref(op, [x, idx], attrs), out.detach().numpy())
        ct = rng.standard_normal(out.shape).astype(np.float32)
        out.backward(torch.from_numpy(ct))
        (gx,) = vjp(op, [x, idx], attrs, ct, wrt=[0])
        np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-6, atol=1e-6)


def test_index_add_and_scatter_add_match_torch(torch, rng):
    g = rng.standard_normal((4, 6)).astype(np.float32)
    idx = rng.integers(0, 3, 6)
    want = torch.zeros(4, 3).index_add_(1, torch.from_numpy(idx), torch.from_numpy(g))
    got = run_ref("index_add", [g, idx], dict(axis=1, shape=(4, 3)))
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-6)
    idx2 = rng.integers(0, 3, (4, 6))
    want = torch.zeros(4, 3).scatter_add_(1, torch.from_numpy(idx2), torch.from_numpy(g))
    got = run_ref("scatter_add", [g, idx2], dict(axis=1, shape=(4, 3)))
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-6)


def test_cumsum_matches_torch_forwards_and_backwards(torch, rng):
    x = rng.standard_normal((3, 8, 2)).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    out = torch.cumsum(xt, 1)
    np.testing.assert_allclose(
        run_ref("cumsum", [x], dict(axis=1)), out.detach(), rtol=1e-6, atol=1e-6
    )
    ct = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(torch.from_numpy(ct))
    (gx,) = vjp("cumsum", [x], dict(axis=1), ct)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-5, atol=1e-6)


# ---- bad indices and bad operands --------------------------------------------------------


@pytest.mark.parametrize("op, bad", [("index_select", 5), ("index_select", -1), ("gather", 9)])
def test_an_index_out_of_range_is_reported_by_native_code_and_the_interpreter(op, bad):
    b = GraphBuilder("bad")
    x = b.add_input("x", TensorType((5, 3), dtypes.float32))
    shape = (4,) if op == "index_select" else (4, 3)
    i = b.add_input("i", TensorType(shape, I64))
    graph = b.build([b.emit(op, [x, i], {"axis": 0})])
    index = np.zeros(shape, np.int64)
    index.reshape(-1)[2] = bad
    arrays = [np.ones((5, 3), np.float32), index]
    with pytest.raises(ExecutionError, match=f"index {bad} is out of range for dimension 0"):
        interpret(graph, arrays)
    with pytest.raises(graphc.GraphcError, match="out of range|bad data"):
        _compiled(graph)(arrays)


@pytest.mark.parametrize(
    "op, types, attrs, message",
    [
        ("index_select", [t((3, 4)), t((2,))], {}, "indices must be an integer tensor"),
        ("index_select", [t((3, 4)), t((2,), I64)], {"axis": 2}, "axis 2 is out of range"),
        ("gather", [t((3, 4)), t((2, 5), I64)], {"axis": 1}, "in every dimension but 1"),
        ("gather", [t((3, 4)), t((3,), I64)], {"axis": 0}, "in every dimension but 0"),
        ("index_add", [t((3, 2)), t((4,), I64)], {"shape": (5, 2)}, "do not fit"),
        ("scatter_add", [t((3, 2)), t((3, 3), I64)], {"shape": (5, 2)}, "must have one shape"),
        ("cumsum", [t((3,), dtypes.bool_)], {}, "cast bool tensors"),
    ],
)
def test_invalid_operands_are_refused(op, types, attrs, message):
    with pytest.raises(ShapeError, match=message):
        infer(op, *types, **attrs)


def test_padding_idx_rows_get_no_gradient_as_in_torch_embedding(torch, rng):
    w = rng.standard_normal((6, 4)).astype(np.float32)
    idx = np.array([[2, 0, 2, 5], [1, 2, 3, 3]])
    wt = torch.tensor(w, requires_grad=True)
    out = torch.nn.functional.embedding(torch.from_numpy(idx), wt, padding_idx=2)
    attrs = dict(axis=0, padding_idx=2)
    np.testing.assert_array_equal(run_ref("index_select", [w, idx], attrs), out.detach())
    ct = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(torch.from_numpy(ct))
    (gw,) = vjp("index_select", [w, idx], attrs, ct, wrt=[0])
    np.testing.assert_allclose(gw, wt.grad.numpy(), rtol=1e-6, atol=1e-6)
    assert not gw[2].any()
