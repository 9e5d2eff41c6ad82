"""The op table is complete: every op has a case, a rule, a reference, a VJP or an explicit
NoGrad mark, and a flops count where it computes on floats; the `grad` placeholder behaves."""

from __future__ import annotations

import os

import numpy as np
import pytest
from op_cases import ALL_CASES, CASES, differentiable_cases, vjp

from graphc import dtypes
from graphc.errors import ShapeError
from graphc.interpreter import interpret
from graphc.ir import GraphBuilder, TensorType
from graphc.ops import OPS, REQUIRED, NoGrad
from graphc.passes import derive_backward
from graphc.passes.autodiff import AutodiffError

F64 = dtypes.float64
PLACEHOLDERS = {"grad"}  # never evaluated: derive_backward replaces them

# Ops that move, select or convert values, or draw random bits, but compute nothing on
# floats. Every other op must report its arithmetic work.
NO_FLOPS = {
    "full": "creation",
    "constant": "creation",
    "arange": "creation (integer counting)",
    "rng_uniform": "random bits are integer hashing",
    "rng_normal": "random bits are integer hashing; Box-Muller is a fixed per-draw cost",
    "logical_and": "bool",
    "logical_or": "bool",
    "logical_not": "bool",
    "where": "selection",
    "cast": "conversion",
    "copy": "data movement",
    "stop_gradient": "identity",
    "reshape": "layout",
    "transpose": "layout",
    "broadcast_to": "layout",
    "slice": "layout",
    "pad_slice": "layout",
    "concat": "layout",
    "one_hot": "integer comparison",
    "index_select": "data movement",
    "gather": "data movement",
}

# Differentiable ops that no finite-difference case can check, and why.
NO_FD_CASE = {
    "stop_gradient": "its derivative is zero by definition (test below)",
    "batch_norm": "differentiates through its operands' statistics: checked through "
    "F.batch_norm against finite differences in test_ops_nn.py",
}


def real_ops() -> list[str]:
    return sorted(set(OPS) - PLACEHOLDERS)


@pytest.mark.parametrize("name", real_ops())
def test_every_op_has_a_case(name):
    assert any(c.op == name for c in ALL_CASES), f"op {name!r} has no case in tests/op_cases.py"


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_has_rules(name):
    op = OPS[name]
    assert op.name == name
    assert callable(op.type_rule), f"{name} has no type rule"
    assert callable(op.ref), f"{name} has no reference"
    if isinstance(op.vjp, NoGrad):
        assert op.vjp.reason, f"{name}'s NoGrad mark must say why"
    else:
        assert callable(op.vjp), f"{name} has neither a VJP nor a NoGrad mark"


@pytest.mark.parametrize("name", real_ops())
def test_every_op_that_computes_counts_its_flops(name):
    if name in NO_FLOPS:
        return
    assert OPS[name].flops is not None, f"{name} computes on floats but has no flops function"


def test_exemption_lists_name_real_ops():
    assert set(NO_FLOPS) <= set(OPS)
    assert set(NO_FD_CASE) <= set(OPS)


@pytest.mark.parametrize("name", real_ops())
def test_every_differentiable_op_is_checked_against_finite_differences(name):
    if not OPS[name].differentiable or name in NO_FD_CASE:
        return
    checked = [c for c in differentiable_cases(ALL_CASES) if c.op == name]
    assert checked, f"{name} has a VJP but no case that checks it against finite differences"


def test_every_family_has_its_test_file():
    here = os.path.dirname(__file__)
    for family in CASES:
        assert os.path.exists(os.path.join(here, f"test_ops_{family}.py")), family


@pytest.mark.parametrize("name", real_ops())
def test_attrs_are_checked(name):
    op = OPS[name]
    with pytest.raises(ShapeError, match="unknown attribute"):
        op.full_attrs({"no_such_attr": 1})
    required = [k for k, v in op.attrs.items() if v is REQUIRED]
    for k in required:
        others = {r: 1 for r in required if r != k}
        with pytest.raises(ShapeError, match=f"missing required attribute '{k}'"):
            op.full_attrs(others)


def test_arity_is_checked():
    t = TensorType((3,), dtypes.float32)
    with pytest.raises(ShapeError, match="add takes 2 input"):
        OPS["add"].infer([t], {})
    with pytest.raises(ShapeError, match="exp takes 1 input"):
        OPS["exp"].infer([t, t], {})


def test_evaluate_holds_the_reference_to_the_rule():
    op = OPS["exp"]
    x = np.ones(3, np.float32)
    with pytest.raises(AssertionError, match="type rule promises f32\\[4\\]"):
        op.evaluate([x], {}, TensorType((4,), dtypes.float32))
    with pytest.raises(AssertionError, match="type rule promises f64\\[3\\]"):
        op.evaluate([x], {}, TensorType((3,), F64))


# ---- zero and refused derivatives ---------------------------------------------------------


def test_stop_gradient_has_zero_derivative():
    x = np.linspace(-1, 1, 5)
    (g,) = vjp("stop_gradient", [x], {}, np.ones(5))
    np.testing.assert_array_equal(g, np.zeros(5))


def test_unsupported_derivative_is_an_error_not_a_zero():
    b = GraphBuilder()
    g = b.add_input("g", TensorType((1, 1, 2, 2), F64))
    x = b.add_input("x", TensorType((1, 1, 4, 4), F64))
    dx = b.max_pool2d_grad(g, x, kernel_size=(2, 2), stride=(2, 2))
    loss = b.reduce_sum(dx, axes=(0, 1, 2, 3))
    graph = b.build([b.grad(loss, g)])
    with pytest.raises(AutodiffError, match="cannot differentiate max_pool2d_grad"):
        derive_backward(graph)


# ---- the grad placeholder ------------------------------------------------------------------


def test_grad_placeholder_refuses_to_run():
    with pytest.raises(AssertionError, match="expanded by derive_backward"):
        OPS["grad"].ref(np.ones(()), np.ones(3))


def test_grad_placeholder_is_expanded():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((4,), F64))
    loss = b.reduce_sum(b.mul(x, x), axes=(0,))
    graph = b.build([b.grad(loss, x)])
    expanded = derive_backward(graph)
    assert not any(n.op == "grad" for n in expanded.nodes)
    x0 = np.array([1.0, -2.0, 0.5, 3.0])
    (g,) = interpret(expanded, [x0])
    np.testing.assert_allclose(g, 2 * x0)  # d/dx sum(x^2)


def test_grad_placeholder_with_a_seed():
    b = GraphBuilder()
    x = b.add_input("x", TensorType((3,), F64))
    seed = b.add_input("seed", TensorType((3,), F64))
    y = b.exp(x)
    graph = derive_backward(b.build([b.grad(y, x, seed)]))
    x0, s0 = np.array([0.0, 1.0, -1.0]), np.array([2.0, 3.0, 5.0])
    (g,) = interpret(graph, [x0, s0])
    np.testing.assert_allclose(g, s0 * np.exp(x0))


def test_grad_placeholder_rule():
    rule = OPS["grad"].type_rule
    scalar, vec = TensorType((), F64), TensorType((3,), F64)
    assert rule(scalar, vec) == vec
    with pytest.raises(ShapeError, match="only for scalar outputs"):
        rule(vec, vec)
    with pytest.raises(ShapeError, match="must match the output"):
        rule(vec, vec, TensorType((4,), F64))
    with pytest.raises(ShapeError, match="only floating-point"):
        rule(scalar, TensorType((3,), dtypes.int64))
    assert rule(vec, scalar, vec) == scalar
