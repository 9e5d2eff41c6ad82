"""Every elementwise op's native lowering against its numpy reference, on the op's cases.

One graph per op holds all of that op's cases from tests/op_cases.py (so one native compile
per op). Native values must be within what rounding explains (tests/error_bounds.py): exact
for integers and booleans, a few ulp for libm functions.
"""

from __future__ import annotations

import numpy as np
import pytest
from error_bounds import mismatches, reference
from op_cases import ALL_CASES, make_inputs

from graphc.codegen import scalar
from graphc.codegen.backend import native_executable
from graphc.ir import GraphBuilder
from graphc.ops import OPS
from graphc.passes import run_pipeline

ELEMENTWISE = sorted(n for n, op in OPS.items() if "elementwise" in op.traits)


def test_every_elementwise_op_has_a_scalar_lowering():
    missing = sorted(set(ELEMENTWISE) - set(scalar.ELEMENTWISE))
    assert not missing, f"elementwise ops without a lowering in codegen/scalar.py: {missing}"


@pytest.mark.parametrize("op", ELEMENTWISE)
def test_native_matches_the_reference_on_every_case(op, rng):
    cases = [c for c in ALL_CASES if c.op == op]
    assert cases, f"{op} has no case"
    b = GraphBuilder(f"native_{op}")
    outputs, arrays = [], []
    for i, c in enumerate(cases):
        ins = [b.add_input(f"case{i}_x{j}", a.type()) for j, a in enumerate(c.args)]
        outputs.append(b.emit(op, ins, c.full_attrs()))
        arrays += make_inputs(c, rng)
    graph = b.build(outputs)
    exe = native_executable(run_pipeline(graph, keep_snapshots=False).graph)
    got = exe([a.copy() for a in arrays])
    want, errs = reference(graph, arrays)
    for c, node, g in zip(cases, graph.outputs, got, strict=True):
        assert g.shape == node.shape and g.dtype == np.dtype(node.dtype.np), c.id
        bad = mismatches(g, want[node], errs[node])
        assert not bad.any(), f"{c.id}: native {g[bad]} vs reference {want[node][bad]}"
