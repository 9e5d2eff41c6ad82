"""graphc.inspection from Python: golden text after selected passes, the JSON schema, DOT,
and the fusion, memory and FLOP reports on small graphs whose numbers can be checked by hand."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import graphc
import graphc.nn.functional as F
from graphc.inspection import InspectError, Inspection
from graphc.inspection.cost import CostReport
from graphc.inspection.dot import graph_dot
from graphc.ir import shorten_path
from graphc.passes import STAGES

SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "ir.schema.json"
HERE = shorten_path(__file__)


def layer(x, w, b):
    return F.relu(x @ w.t() + b)  # LAYER_LINE


def line_of(marker: str) -> int:
    lines = Path(__file__).read_text().splitlines()
    return next(i + 1 for i, s in enumerate(lines) if s.rstrip().endswith(f"# {marker}"))


@pytest.fixture(scope="module")
def layer_inspection() -> Inspection:
    rng = np.random.default_rng(0)
    args = [rng.standard_normal(s, dtype=np.float32) for s in ((2, 4), (3, 4), (3,))]
    return graphc.compile(layer).inspect(*args)


def make_step():
    w = graphc.nn.Parameter(graphc.ones(3))

    def step(x):
        loss = (x * w).sum()  # STEP_LOSS
        loss.backward()
        with graphc.no_grad():
            w.sub_(w.grad * 0.5)  # STEP_UPDATE
        w.grad = None
        return loss

    return graphc.compile(step)


@pytest.fixture(scope="module")
def step_inspection() -> Inspection:
    return make_step().inspect(graphc.from_numpy(np.ones(3, np.float32)))


GOLDEN_LAYER = """\
# ---- IR after traced ----
graph layer(
    %x: f32[2,4] input,
    %w: f32[3,4] input,
    %b: f32[3] input
) {{
  %0: f32[4,3] = transpose(%w, perm=(1, 0))  # {at}
  %1: f32[2,3] = matmul(%x, %0)  # {at}
  %2: f32[2,3] = broadcast_to(%b, shape=(2, 3))  # {at}
  %3: f32[2,3] = add(%1, %2)  # {at}
  %4: f32[2,3] = relu(%3)  # {at}
  return return=%4
}}
# ---- IR after plan_memory ----
graph layer(
    %x: f32[2,4] input,
    %w: f32[3,4] input,
    %b: f32[3] input
) {{
  %0: f32[4,3] = transpose(%w, perm=(1, 0))  # k0_loop, arena[0:48]; {at}
  %1: f32[2,3] = matmul(%x, %0)  # k1_matmul; {at}
  %2: f32[2,3] = broadcast_to(%b, shape=(2, 3))  # inlined in k1_matmul; {at}
  %3: f32[2,3] = add(%1, %2)  # k1_matmul; {at}
  %4: f32[2,3] = relu(%3)  # k1_matmul, arena[64:88]; {at}
  return return=%4
}}
# schedule:
#   k0_loop [loop] %0: materialise transpose for its reader
#   k1_matmul [matmul] %1, %2, %3, %4: epilogue: matmul+bias+relu
# memory:
#   arena 128 bytes (one buffer per value: 128 bytes)
#   %0 f32[4,3]: arena[0:48], live k0..k1
#   %4 f32[2,3]: arena[64:88], live k1..k2"""

GOLDEN_STEP = """\
graph step(
    %x: f32[3] input,
    %capture0: f32[3] capture
) {{
  %0: f32[3] = mul(%x, %capture0)  # k0_loop; {loss}
  %1: f32[] = reduce_sum(%0, axes=(0,))  # k0_loop, arena[0:4]; {loss}
  %2: f32[3] = full(value=0.5, shape=(3,))  # inlined in k1_loop; {update}
  %3: f32[3] = mul(%x, %2)  # k1_loop; {update}
  %4: f32[3] = sub(%capture0, %3)  # k1_loop, in place over %capture0; {update}
  return return=%1, state1=%4
}}
# schedule:
#   k0_loop [loop] %0, %1: loop over reduce_sum over [3]
#   k1_loop [loop] %3, %4: loop over [3]
# memory:
#   arena 64 bytes (one buffer per value: 64 bytes)
#   %1 f32[]: arena[0:4], live k0..k2
#   %4 f32[3]: in place over %capture0, live k1..k2"""


def test_golden_text_of_a_layer_after_tracing_and_after_the_last_pass(layer_inspection):
    at = f"{HERE}:{line_of('LAYER_LINE')} in layer"
    assert layer_inspection.text(["traced", "plan_memory"]) == GOLDEN_LAYER.format(at=at)


def test_golden_text_of_a_training_step_after_memory_planning(step_inspection):
    loss = f"{HERE}:{line_of('STEP_LOSS')} in step"
    update = f"{HERE}:{line_of('STEP_UPDATE')} in step"
    text = step_inspection.text("plan_memory")
    assert text == GOLDEN_STEP.format(loss=loss, update=update)


def test_text_is_deterministic_across_traces():
    a = make_step().inspect(graphc.from_numpy(np.ones(3, np.float32))).text("all")
    b = make_step().inspect(graphc.from_numpy(np.ones(3, np.float32))).text("all")
    assert a == b
    assert [s for s in re.findall(r"IR after (\w+)", a)] == STAGES


def test_unknown_stage_lists_the_valid_ones(layer_inspection):
    with pytest.raises(InspectError, match="unknown pass 'fusion'.*traced, autodiff.*plan_memory"):
        layer_inspection.text("fusion")


# ---- JSON --------------------------------------------------------------------------------------


def validate(doc):
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema validates the JSON schema")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)


def test_json_of_every_stage_and_every_report_validates(step_inspection):
    insp = step_inspection
    doc = insp.json(
        "all",
        fusion=insp.fusion().to_json(),
        memory=insp.memory().to_json(),
        flops=insp.cost().to_json(),
    )
    doc = json.loads(json.dumps(doc))  # what a reader sees: plain JSON, no tuples
    validate(doc)
    assert doc["format"] == "graphc.inspect" and doc["version"] == 1 and doc["mode"] == "train"
    assert [g["stage"] for g in doc["graphs"]] == STAGES


def test_json_graph_matches_the_text_ir(layer_inspection):
    (g,) = layer_inspection.json("plan_memory")["graphs"]
    validate({"format": "graphc.inspect", "version": 1, "target": "t", "mode": "inference"})
    nodes = {n["id"]: n for n in g["nodes"]}
    assert g["inputs"] == ["%x", "%w", "%b"]
    assert g["outputs"] == [{"name": "return", "value": "%4"}]
    relu = nodes["%4"]
    assert relu["op"] == "relu" and relu["inputs"] == ["%3"]
    assert relu["type"] == {"dtype": "f32", "shape": [2, 3]}
    assert relu["kernel"] == "k1_matmul"
    assert relu["buffer"] == {
        "kind": "arena",
        "nbytes": 24,
        "offset": 64,
        "base": None,
        "live": [1, 2],
    }
    assert relu["loc"] == {"file": HERE, "line": line_of("LAYER_LINE"), "func": "layer"}
    assert nodes["%0"]["attrs"] == {"perm": [1, 0]}
    assert nodes["%1"]["attrs"] == {"trans_a": False, "trans_b": False}  # defaults included
    k = g["schedule"]["kernels"][1]
    assert k["params"] == {"bias": {"value": "%b"}, "relu": True}
    assert k["reads"] == ["%x", "%0", "%b"]


def test_json_encodes_awkward_attribute_values():
    from graphc.dtypes import float32
    from graphc.inspection.jsonio import value_json
    from graphc.ir import ConstArray

    assert value_json(float("inf")) == {"float": "inf"}
    assert value_json(float("nan")) == {"float": "nan"}
    assert value_json(float32) == {"dtype": "f32"}
    assert value_json((1, (2.5, None))) == [1, [2.5, None]]
    arr = value_json(ConstArray(np.arange(3, dtype=np.int64)))["array"]
    assert arr["values"] == [0, 1, 2] and arr["shape"] == [3] and len(arr["sha256"]) == 64


# ---- DOT ---------------------------------------------------------------------------------------


def parse_dot(text: str):
    """A small structural reading of our DOT: declared node ids, edges, clusters."""
    assert text.count("{") == text.count("}")
    nodes = set(re.findall(r"^\s*(\w+) \[label=", text, re.M))
    edges = re.findall(r"^\s*(\w+) -> (\w+)", text, re.M)
    clusters = re.findall(r"subgraph (cluster_\d+) \{\n\s*label=\"([^\"]*)\"", text)
    return nodes, edges, clusters


def test_dot_has_every_node_and_edge_and_kernels_as_clusters(layer_inspection):
    g = layer_inspection.graph()
    text = layer_inspection.dot("plan_memory")
    assert text.startswith('digraph "layer after plan_memory" {')
    nodes, edges, clusters = parse_dot(text)
    assert len(nodes) == len(g.nodes) + len(g.outputs)
    assert all(a in nodes and b in nodes for a, b in edges)
    wires = sum(len(set(n.inputs)) for n in g.nodes) + len(g.outputs)
    assert len(edges) == wires
    assert [label for _, label in clusters] == [
        "k0_loop: materialise transpose for its reader",
        "k1_matmul: epilogue: matmul+bias+relu",
    ]


def test_dot_reads_back_with_networkx_when_pydot_is_installed(layer_inspection):
    pytest.importorskip("pydot", reason="networkx reads DOT through pydot")
    import networkx as nx

    g = nx.nx_pydot.from_pydot(__import__("pydot").graph_from_dot_data(layer_inspection.dot())[0])
    assert g.number_of_nodes() >= len(layer_inspection.graph().nodes)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz (dot) is not installed")
def test_dot_renders_with_graphviz(step_inspection):
    text = step_inspection.dot("all")  # one digraph per stage
    out = subprocess.run(["dot", "-Tsvg"], input=text, capture_output=True, text=True, check=True)
    assert out.stdout.count("<svg") == len(STAGES)


def test_dot_escapes_quotes_and_backslashes():
    from graphc.inspection.dot import quote

    assert quote('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'


def test_dot_before_fusion_has_no_clusters(layer_inspection):
    assert "subgraph" not in graph_dot(layer_inspection.graph("traced"), "traced")


# ---- reports -----------------------------------------------------------------------------------


def test_fusion_report_lists_each_kernel_its_rule_and_every_decision(step_inspection):
    text = step_inspection.fusion().text()
    assert (
        text.splitlines()[0]
        == "fusion: 2 kernels compute 4 operations (2 merges taken, 0 rejected)"
    )
    assert "k0_loop  [loop]  loop over reduce_sum over [3]" in text
    assert "    stores   %4" in text
    decisions = step_inspection.graph().meta["schedule"].decisions
    for d in decisions:
        assert d in text


def test_fusion_report_marks_rejected_merges():
    from graphc.inspection.reports import decision_taken

    assert decision_taken("fused relu into conv2d: epilogue")
    assert not decision_taken("not fused add into matmul: not a per-channel bias")


def test_memory_report_shows_reuse_lifetimes_and_totals():
    net_in = np.random.default_rng(0).standard_normal((4, 8), dtype=np.float32)

    def chain(x):
        a = x.sum(1)
        b = (a * 2).sum()  # a dies here: c takes over its bytes
        c = (x * b).sum(0)
        return (c * c).sum()

    insp = graphc.compile(chain).inspect(net_in)
    report = insp.memory()
    plan = insp.graph().meta["memory"]
    text = report.text()
    assert text.startswith(f"memory: arena {plan.arena_bytes:,} bytes")
    assert f"one buffer per value would take {plan.unplanned_bytes:,} bytes" in text
    assert report.peak_live_bytes <= plan.arena_bytes <= plan.unplanned_bytes
    reused = [n for n in plan.buffers if report.reuses(n)]
    assert [insp_name(insp, n) for n in reused] == ["%6", "%8"], text
    for n in reused:  # a value only takes over bytes of values already dead
        for old in report.reuses(n):
            assert plan.buffers[old].live[1] < plan.buffers[n].live[0]
    assert text.splitlines()[5].split() == ["%6", "f32[8]", "32", "arena[0:32]", "k2..k3", "%0"]


def insp_name(insp, node):
    from graphc.printer import value_names

    return value_names(insp.graph())[node]


def test_memory_report_needs_a_planned_graph(step_inspection):
    from graphc.inspection.reports import MemoryReport

    with pytest.raises(InspectError, match="plan_memory"):
        MemoryReport(step_inspection.graph("fuse"))


def test_flops_and_bytes_per_node_and_kernel(layer_inspection):
    report = CostReport(layer_inspection.graph())
    by_name = {k.name: (f, r, w) for k, f, r, w in report.kernels}
    # matmul [2,4]x[4,3]: 2*2*3*4 flops; bias add and relu: 6 each. Reads x (32 B), the
    # transposed weights (48 B) and the bias (12 B); writes 24 B.
    assert by_name["k1_matmul"] == (48 + 6 + 6, 32 + 48 + 12, 24)
    assert by_name["k0_loop"] == (0, 48, 48)  # a copy: no arithmetic
    assert report.total_flops == 60
    doc = report.to_json()
    assert doc["kernel_bytes"] == 92 + 24 + 96
    nodes = {n["value"]: n for n in doc["nodes"]}
    assert nodes["%1"] == {
        "value": "%1",
        "op": "matmul",
        "flops": 48,
        "bytes": 32 + 48 + 24,
        "intensity": 48 / 104,
    }
    text = report.text()
    assert "total: 60 flops" in text and "flop/byte" in text


def test_json_kernels_carry_the_parallel_decision(step_inspection):
    doc = step_inspection.json("plan_parallel")
    validate(doc)
    (g,) = doc["graphs"]
    threads = [k["threads"] for k in g["schedule"]["kernels"]]
    assert all(t is not None and t["reason"] for t in threads)
    assert {t["parallel"] for t in threads} <= {True, False}
    (before,) = step_inspection.json("plan_memory")["graphs"]
    assert all(k["threads"] is None for k in before["schedule"]["kernels"])
