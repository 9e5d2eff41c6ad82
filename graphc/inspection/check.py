"""`graphc check`: the native step next to the reference interpreter, value by value.

The step is rebuilt with a memory plan that never reuses arena bytes (plan_memory(reuse=
False)), so after a native run every kernel output is still in the arena (or, for an
in-place state update, in the input it overwrote) and can be compared with the interpreter's
value of the same node. Both run K steps from copies of the same state, each feeding its own
state updates into its next step; the report names the first node in graph order whose value
differs beyond tolerance — the first wrong kernel, since everything after it reads its
output — with its phase (forward, backward, update), kernel and source line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from graphc.inspection.common import InspectError
from graphc.ir import Graph, Node
from graphc.printer import format_node, value_names

PHASES = ("forward", "backward", "update")


def phases(graph: Graph) -> dict[Node, str]:
    """forward: what the returned values depend on; backward: what the gradients depend on
    beyond that; update: the rest (optimizer and running-statistics updates)."""
    updates = set(graph.meta.get("updates", {}))
    returned, grads = [], []
    for name, o in zip(graph.output_names, graph.outputs, strict=True):
        if name.endswith(".grad"):
            grads.append(o)
        elif name not in updates:
            returned.append(o)
    forward = _ancestors(returned)
    backward = _ancestors(grads) - forward
    rest = "update" if grads else "backward"
    return {
        n: "forward" if n in forward else "backward" if n in backward else rest
        for n in graph.nodes
        if not n.is_input
    }


def _ancestors(roots: list[Node]) -> set[Node]:
    seen: set[Node] = set()
    stack = list(roots)
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(n.inputs)
    return seen


@dataclass
class Divergence:
    step: int
    node: Node
    phase: str
    kernel: str
    max_error: float
    index: tuple[int, ...]
    native: float
    reference: float


@dataclass
class CheckReport:
    graph: Graph
    steps: int
    rtol: float
    atol: float
    step_lines: list[str] = field(default_factory=list)
    divergences: list[Divergence] = field(default_factory=list)  # of the first bad step

    @property
    def ok(self) -> bool:
        return not self.divergences

    @property
    def first(self) -> Divergence | None:
        return self.divergences[0] if self.divergences else None

    def text(self) -> str:
        names = value_names(self.graph)
        lines = [
            f"check: {self.graph.name}, native code vs the reference interpreter, "
            f"{self.steps} step(s) from the same state (rtol {self.rtol:g}, atol {self.atol:g})"
        ]
        lines += self.step_lines
        if self.ok:
            lines.append("OK: every stored value matches")
            return "\n".join(lines)
        d = self.divergences[0]
        lines.append(f"DIVERGED at step {d.step}: first wrong value, in the {d.phase}:")
        lines += _describe(d, names, "  ")
        per_phase = {p: [x for x in self.divergences if x.phase == p] for p in PHASES}
        for p in PHASES:
            if per_phase[p] and per_phase[p][0] is not d:
                lines.append(f"first wrong value in the {p}:")
                lines += _describe(per_phase[p][0], names, "  ")
        more = ", ".join(f"{p} {len(v)}" for p, v in per_phase.items() if v)
        lines.append(f"{len(self.divergences)} values diverge in all ({more})")
        return "\n".join(lines)


def _describe(d: Divergence, names: dict[Node, str], indent: str) -> list[str]:
    where = str(d.node.loc) if d.node.loc is not None else "(no source line)"
    idx = ", ".join(map(str, d.index))
    return [
        indent + format_node(d.node, names, locations=False).strip() + f"  [kernel {d.kernel}]",
        f"{indent}at {where}",
        f"{indent}|native - reference| = {d.max_error:.6g} at [{idx}]: native {d.native:.6g}, "
        f"reference {d.reference:.6g}",
    ]


def compare(native: np.ndarray, reference: np.ndarray, rtol: float, atol: float):
    """None if the values agree, else (max error, index, native, reference) at the worst
    element. Floats agree within atol + rtol * |reference| (NaN matches NaN); other dtypes
    must be equal."""
    if native.dtype.kind == "f":
        n64, r64 = native.astype(np.float64), reference.astype(np.float64)
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(n64 - r64)
            same = (
                (n64 == r64) | (np.isnan(n64) & np.isnan(r64)) | (diff <= atol + rtol * np.abs(r64))
            )
    else:
        n64, r64 = native.astype(np.float64), reference.astype(np.float64)
        diff = np.abs(n64 - r64)
        same = native == reference
    if bool(np.all(same)):
        return None
    score = np.where(same, -1.0, np.where(np.isnan(diff), np.inf, diff))
    flat = int(np.argmax(score))
    index = tuple(int(i) for i in np.unravel_index(flat, native.shape)) if native.ndim else ()
    return (
        float(score.reshape(-1)[flat]),
        index,
        float(n64.reshape(-1)[flat]),
        float(r64.reshape(-1)[flat]),
    )


def run_check(
    graph: Graph,
    make_inputs: Callable[[], list[np.ndarray]],
    steps: int = 2,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    fault: str | None = None,
) -> CheckReport:
    """`make_inputs()` gives one step's inputs (graph input order); state inputs are replaced
    by each side's own updated state from the second step on. `fault` (a test hook) names a
    kernel whose output the native code corrupts."""
    from graphc.codegen.backend import native_executable
    from graphc.inspection.native import check_kernel, native_failure
    from graphc.passes.memory import plan_memory

    if steps < 1:
        raise InspectError(f"--steps must be at least 1, not {steps}")
    if fault is not None:
        check_kernel(graph, fault)
    checked = plan_memory(graph, reuse=False)
    try:
        exe = native_executable(checked, fault=fault)
    except (ImportError, NotImplementedError) as e:
        raise native_failure(e) from None
    side_by_side = _SideBySide(checked, exe, rtol, atol)
    report = CheckReport(checked, steps, rtol, atol)
    position = {n: i for i, n in enumerate(checked.inputs)}
    carry = [
        (checked.output_names.index(out), position[checked.input(inp)])
        for out, inp in checked.meta.get("updates", {}).items()
    ]
    native_state: dict[int, np.ndarray] = {}
    reference_state: dict[int, np.ndarray] = {}
    for step in range(steps):
        base = make_inputs()
        native_in = [np.array(native_state.get(i, a), copy=True) for i, a in enumerate(base)]
        reference_in = [np.array(reference_state.get(i, a), copy=True) for i, a in enumerate(base)]
        native_out, reference_out = side_by_side.run(step, native_in, reference_in, report)
        if report.divergences:
            break
        for out_pos, in_pos in carry:
            native_state[in_pos] = np.array(native_out[out_pos], copy=True)
            reference_state[in_pos] = np.array(reference_out[out_pos], copy=True)
    return report


class _SideBySide:
    """One step on both sides, then every stored value compared in graph order."""

    def __init__(self, graph: Graph, exe, rtol: float, atol: float) -> None:
        self.graph, self.exe, self.rtol, self.atol = graph, exe, rtol, atol
        schedule = graph.meta["schedule"]
        self.plan = graph.meta["memory"]
        self.stored_by = {o: k.name for k in schedule.kernels for o in k.outputs}
        order = {n: i for i, n in enumerate(graph.nodes)}
        self.stored = sorted(self.stored_by, key=order.get)
        self.phase = phases(graph)
        self.names = value_names(graph)
        self.position = {n: i for i, n in enumerate(graph.inputs)}

    def native_value(self, node: Node, native_in: list[np.ndarray]) -> np.ndarray:
        """A stored value after the native run: in the arena, or in the input it updated."""
        buf = self.plan.storage(node)
        if buf.kind == "input":
            return native_in[self.position[buf.value]]
        raw = self.exe.arena[buf.offset : buf.offset + node.type.nbytes]
        return raw.view(node.dtype.np).reshape(node.shape)

    def run(self, step: int, native_in, reference_in, report: CheckReport):
        from graphc.interpreter import interpret

        native_out = self.exe(native_in)
        reference_out = interpret(self.graph, reference_in, keep=True)
        counts = dict.fromkeys(PHASES, 0)
        worst, worst_node = 0.0, None
        for node in self.stored:
            got = self.native_value(node, native_in)
            want = np.asarray(reference_out.env[node])
            phase = self.phase[node]
            counts[phase] += 1
            bad = compare(got, want, self.rtol, self.atol)
            if bad is not None:
                kernel = self.stored_by[node]
                report.divergences.append(Divergence(step, node, phase, kernel, *bad))
            elif got.dtype.kind == "f" and got.size:
                err = float(np.max(np.abs(got.astype(np.float64) - want)))
                if err > worst:
                    worst, worst_node = err, node
        tally = ", ".join(f"{p} {c}" for p, c in counts.items() if c)
        line = f"step {step}: {len(self.stored)} stored values compared ({tally})"
        if worst_node is not None:
            line += f"; largest difference among matches {worst:.3g} at {self.names[worst_node]}"
        report.step_lines.append(line)
        return native_out, reference_out
