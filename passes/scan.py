"""plan_scans: each loop's step graph goes through the pipeline of its own (meta["scans"]).

A `scan` node is one kernel of the step: a native loop that calls the kernels of its body
once per step (codegen/scan.py). The body is simplified, fused, memory-planned, tiled and
planned for threads here, before the step's own fusion and memory planning, which need two
facts from it: the scratch memory one step uses (its arena, reused by every step) and which
of the loop's operands it can read where they are.

A loop reads its operands where they live, views included, when each step's part is one
contiguous block: a const or initial carry must be dense; a per-step input needs each step's
slice dense (the step stride may be anything, 0 included). Other views are materialised.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from graphc.ir import Graph, Node
from graphc.passes.schedule import INLINE_OPS, VIEW_OPS
from graphc.passes.views import View, affine_view, contiguous_strides, fill_of
from graphc.printer import value_names

SKIPPED = ("autodiff", "schedule_collectives")  # a body has no grad placeholders, no MPI


@dataclass(frozen=True, eq=False)
class ScanPlans:
    bodies: Mapping[Node, Graph]  # scan node -> its planned step graph

    def summary(self, graph: Graph | None = None) -> str:
        names = value_names(graph) if graph is not None else {}
        lines = []
        for node, body in self.bodies.items():
            kernels = body.meta["schedule"].kernels
            steps = node.attrs["length"]
            lines.append(
                f"{names.get(node, node.op)}: {steps} steps of {len(kernels)} kernels, "
                f"scratch {scratch_bytes(body)} bytes"
            )
            lines += [f"  {line}" for line in body.meta["schedule"].summary(body).splitlines()]
        return "\n".join(lines)


def plan_scans(graph: Graph) -> Graph:
    from graphc.passes import PIPELINE, run_pipeline

    scans = [n for n in graph.nodes if n.op == "scan"]
    if not scans:
        return graph
    passes = [(name, fn) for name, fn in PIPELINE if name not in SKIPPED]
    vectors = graph.meta.get("vectors")
    done: dict = {}  # body -> planned: loops with one step graph share its plan
    for n in scans:
        body = n.attrs["body"]
        if body not in done:
            g = body.graph if vectors is None else body.graph.with_meta(vectors=vectors)
            done[body] = run_pipeline(g, passes, keep_snapshots=False).graph
    return graph.with_meta(scans=ScanPlans({n: done[n.attrs["body"]] for n in scans}))


def scratch_bytes(body: Graph) -> int:
    """Memory one step uses beyond the loop's own buffers: the body's arena, and room to
    stage new carries that the body writes over other carries (a swap)."""
    return body.meta["memory"].arena_bytes + staging_bytes(body)


def staged_carries(body: Graph) -> list[int]:
    """The carries whose new value lives in another carry's buffer: they are staged before
    any carry is written."""
    plan = body.meta["memory"]
    carries = [n for n in body.inputs if n.attrs["kind"] == "carry"]
    out = []
    for i, c in enumerate(carries):
        src = plan.storage(body.outputs[i]).value
        if src in carries and src is not c:
            out.append(i)
    return out


def staging_bytes(body: Graph) -> int:
    return sum(_round(body.outputs[i].type.nbytes) for i in staged_carries(body))


def _round(n: int) -> int:
    return (n + 63) // 64 * 64


def operand_view(node: Node, k: int, stored: set[Node]) -> View | None:
    """The view the loop `node` reads its operand k through, if it can read it in place."""
    x = node.inputs[k]
    if x not in stored and fill_of(x) is not None:
        return None
    v = affine_view(x, stored)
    if v is None:
        return None
    nc, nx = node.attrs["num_carry"], node.attrs["num_xs"]
    if nc <= k < nc + nx:  # a per-step input: each step's slice must be dense
        dense = contiguous_strides(v.shape[1:])
        rest = v.strides[1:]
        ok = all(s == d for s, d, n in zip(rest, dense, v.shape[1:], strict=True) if n != 1)
        return v if ok else None
    return v if v.contiguous else None


def reads_in_place(node: Node, operand: Node, stored: set[Node]) -> bool:
    """Whether loop `node` reads `operand` (a view or fill) without it being materialised."""
    if operand.op not in VIEW_OPS and operand.op not in INLINE_OPS:
        return True
    return all(operand_view(node, k, stored) is not None
               for k, x in enumerate(node.inputs) if x is operand)  # fmt: skip


def result_part(node: Node, stored: set[Node]) -> View | None:
    """The view `node` is of a loop's packed result, if it is a dense block of it: a part a
    kernel reads where it lies in the result (plan_memory gives it that address), with no
    copy."""
    if node.op not in VIEW_OPS or node in stored:
        return None
    v = affine_view(node, stored)
    if v is None or v.base.op != "scan" or not v.contiguous:
        return None
    return v
