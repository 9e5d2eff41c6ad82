"""plan_memory: where every stored value lives, decided before the step runs (meta["memory"]).

- Graph inputs live in the caller's memory (a parameter's own array, the batch).
- A state update (new parameter, new momentum) is written in place over the input it
  replaces when nothing reads the old value afterwards and the kernel reads it element for
  element — so parameters never move and nothing is copied back.
- reshape of a stored value shares its buffer.
- Everything else gets a 64-byte aligned slice of one arena. Slices are reused once their
  value is dead (liveness over the kernel order, best fit among free blocks), so the arena is
  the peak of live bytes, not their sum.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from graphc.ir import Graph, Node
from graphc.passes.scan import result_part
from graphc.passes.schedule import INLINE_OPS, Kernel, Schedule
from graphc.passes.views import VIEW_OPS, affine_view, alias_of, contiguous_strides
from graphc.printer import value_names

ALIGN = 64


@dataclass(frozen=True)
class Buffer:
    value: Node
    kind: str  # "input" | "arena" | "alias" | "inplace"
    nbytes: int
    offset: int | None = None  # arena offset for "arena"
    base: Node | None = None  # the value whose storage "alias"/"inplace" use
    live: tuple[int, int] = (0, 0)  # first and last kernel index that touch it


@dataclass(frozen=True)
class MemoryPlan:
    buffers: Mapping[Node, Buffer]
    arena_bytes: int
    unplanned_bytes: int  # what one buffer per value would take
    # kernel name -> (offset, bytes): memory a kernel uses only while it runs (a loop's step)
    scratch: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    def storage(self, node: Node) -> Buffer:
        """The buffer that actually holds node's bytes (following aliases)."""
        b = self.buffers[node]
        while b.kind in ("alias", "inplace"):
            b = self.buffers[b.base]
        return b

    def summary(self, graph: Graph | None = None) -> str:
        names = value_names(graph) if graph is not None else {}
        lines = [
            f"arena {self.arena_bytes} bytes (one buffer per value: {self.unplanned_bytes} bytes)"
        ]
        for n, b in self.buffers.items():
            if b.kind == "input":
                continue
            where = {
                "arena": f"arena[{b.offset}:{(b.offset or 0) + b.nbytes}]",
                "alias": f"alias of {names.get(b.base, b.base)}",
                "inplace": f"in place over {names.get(b.base, b.base)}",
            }[b.kind]
            lines.append(f"{names.get(n, n.op)} {n.type}: {where}, live k{b.live[0]}..k{b.live[1]}")
        for name, (offset, size) in self.scratch.items():
            lines.append(f"{name} scratch: arena[{offset}:{offset + size}], live while it runs")
        return "\n".join(lines)


def plan_memory(graph: Graph, reuse: bool = True) -> Graph:
    """`reuse=False` gives every value its own slice and never updates in place, so every
    intermediate value can be read after the step (graphc check compares them)."""
    schedule: Schedule = graph.meta["schedule"]
    return graph.with_meta(memory=_plan(graph, schedule, reuse))


def _plan(graph: Graph, schedule: Schedule, reuse: bool = True) -> MemoryPlan:
    kernels = schedule.kernels
    end = len(kernels)
    stored = set(graph.inputs) | {o for k in kernels for o in k.outputs}
    buffers: dict[Node, Buffer] = {}
    for n in graph.inputs:
        buffers[n] = Buffer(n, "input", n.type.nbytes, live=(-1, end))

    # Reads: every kernel reads the stored bases under its views.
    last_read: dict[Node, int] = {}
    for ki, k in enumerate(kernels):
        for base in _reads(k, stored):
            last_read[base] = max(last_read.get(base, -1), ki)
    for o in graph.outputs:
        base = _base(o, stored)
        if base is not None:
            last_read[base] = end

    # In place: state updates over the inputs they replace.
    replaces = _replaced_inputs(graph)
    inplace: dict[Node, Node] = {}
    for ki, k in enumerate(kernels):
        for o in k.outputs:
            old = replaces.get(o)
            if (
                reuse
                and old is not None
                and last_read.get(old, -1) <= ki
                and _elementwise_read(k, o, old, stored)
            ):
                inplace[o] = old

    # Aliases: reshapes of stored values that someone needs as a buffer.
    defined = {o: ki for ki, k in enumerate(kernels) for o in k.outputs}
    free: list[tuple[int, int]] = []  # (offset, size) blocks
    top = 0
    unplanned = 0
    dying: dict[int, list[Node]] = {}
    for v, ki in sorted(defined.items(), key=lambda kv: kv[1]):
        dying.setdefault(max(last_read.get(v, ki), ki), []).append(v)
    scratch: dict[str, tuple[int, int]] = {}
    needs = _scratch_needs(graph)
    for ki, k in enumerate(kernels):
        for o in k.outputs:
            live = (ki, max(last_read.get(o, ki), ki))
            if o in inplace:
                buffers[o] = Buffer(o, "inplace", o.type.nbytes, base=inplace[o], live=live)
                continue
            size = _round(o.type.nbytes)
            unplanned += size
            offset, free, top = _take(free, top, size)
            buffers[o] = Buffer(o, "arena", o.type.nbytes, offset, live=live)
        if needs.get(k.root):  # taken after the outputs, given back right after the kernel
            size = _round(needs[k.root])
            offset, free, top = _take(free, top, size)
            scratch[k.name] = (offset, size)
            free = _give(free, offset, size) if reuse else free
        for v in dying.get(ki, ()):  # released after the kernel that reads them last
            b = buffers.get(v)
            if reuse and b is not None and b.kind == "arena":
                free = _give(free, b.offset, _round(b.nbytes))
    for k in kernels:  # parts of a loop's packed result, read where they lie in it
        for r in k.reads():
            part = result_part(r, stored) if r not in buffers else None
            base = buffers.get(part.base) if part is not None else None
            if base is not None and base.kind == "arena":
                at = base.offset + part.offset * r.dtype.itemsize
                buffers[r] = Buffer(r, "arena", r.type.nbytes, at, live=base.live)
    for k in kernels:
        for r in k.reads():
            if r.op == "reshape" and r not in buffers:
                base = alias_of(r, stored)
                if base is not None:
                    buffers[r] = Buffer(r, "alias", r.type.nbytes, base=base)
    for o in graph.outputs:
        if o not in buffers and o.op == "reshape":
            buffers[o] = Buffer(o, "alias", o.type.nbytes, base=alias_of(o, stored))
    return MemoryPlan(buffers, top, unplanned, scratch)


def _scratch_needs(graph: Graph) -> dict[Node, int]:
    """Bytes of scratch each kernel root needs while it runs (a loop: one step's memory)."""
    scans = graph.meta.get("scans")
    if scans is None:
        return {}
    from graphc.passes.scan import scratch_bytes

    return {node: scratch_bytes(body) for node, body in scans.bodies.items()}


def _reads(k: Kernel, stored: set[Node]) -> list[Node]:
    """The stored values kernel k reads: the bases under its operands, and any stored value
    inside its view chains (a loop reads a materialised view's buffer, not its source)."""
    out = [b for b in (_base(r, stored) for r in k.reads()) if b is not None]
    out += [n for n in k.nodes if n in stored and n not in k.outputs and n not in out]
    return out


def _base(node: Node, stored: set[Node]) -> Node | None:
    if node in stored:  # includes a fill materialised for a non-loop reader or the caller
        return node
    if node.op in INLINE_OPS:
        return None
    v = affine_view(node, stored)
    return v.base if v is not None else None


def _replaced_inputs(graph: Graph) -> dict[Node, Node]:
    """output value -> the graph input it replaces (from the frontend's state pairs)."""
    pairs = graph.meta.get("updates", {})
    by_name = {n.name: n for n in graph.inputs}
    out = {}
    for out_name, in_name in pairs.items():
        node = graph.output(out_name)
        if in_name in by_name and node.type == by_name[in_name].type:
            out[node] = by_name[in_name]
    return out


def _elementwise_read(k: Kernel, out: Node, old: Node, stored: set[Node]) -> bool:
    """Whether kernel k reads `old` only at the index it writes `out` (a same-shape loop)."""
    if k.kind != "loop" or k.params.get("domain") != out.shape or out.shape != old.shape:
        return False
    dense = contiguous_strides(old.shape)
    for n in k.nodes:
        for i in n.inputs:
            if i is old or (i.op in VIEW_OPS and _base(i, stored) is old):
                v = affine_view(i, stored)
                if v is None or v.shape != out.shape or v.strides != dense or v.offset:
                    return False
    return True


def _round(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _take(free: list[tuple[int, int]], top: int, size: int):
    """Best fit among free blocks, else the end of the arena."""
    best = None
    for i, (_, sz) in enumerate(free):
        if sz >= size and (best is None or sz < free[best][1]):
            best = i
    if best is None:
        return top, free, top + size
    off, sz = free[best]
    rest = free[:best] + free[best + 1 :]
    if sz > size:
        rest.append((off + size, sz - size))
    return off, sorted(rest), top


def _give(free: list[tuple[int, int]], offset: int, size: int) -> list[tuple[int, int]]:
    """Returns a block, merging it with free neighbours."""
    blocks = sorted(free + [(offset, size)])
    merged: list[tuple[int, int]] = []
    for off, sz in blocks:
        if merged and merged[-1][0] + merged[-1][1] == off:
            merged[-1] = (merged[-1][0], merged[-1][1] + sz)
        else:
            merged.append((off, sz))
    return merged
