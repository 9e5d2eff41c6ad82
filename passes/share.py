"""share_kernels: kernels that would compile to the same code are compiled once (meta["shared"]).

Every block of a ResNet stage, every layer of a uniform MLP, and many backward kernels
repeat a kernel seen before: the same op, shapes, dtypes, fused epilogue and tile plan, with
only the buffers differing. Kernels take their buffers as pointer arguments, so such a kernel
is emitted, optimised and compiled once and called from every place that needs it.

Two kernels share code when their *signatures* are equal. A signature is everything the
emitters in codegen/ read about a kernel, with the graph's identities stripped away:
  - each member node's op, attributes and type, wired by position within the kernel;
  - the views and fills the kernel reads through (emitters follow them as index arithmetic),
    and for every value read from outside only its type;
  - which values are stored (a loop reads a stored value from memory, others it recomputes),
    which members the kernel writes out, and which of its values share one buffer (a
    state update written in place over the value it reads), numbered in order of
    appearance: the *storage classes*;
  - the kernel's kind, its fusion parameters and its tile plan.
A kernel's pointer arguments are storage classes ("roles"), so the code of one kernel calls
correctly with another's buffers: role r of kernel B is B's buffer of class r.

The digest of a signature also keys compiled kernels in the on-disk cache, so a new model
built from known blocks compiles only what is new.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

from graphc.ir import ConstArray, Graph, Node
from graphc.passes.memory import MemoryPlan
from graphc.passes.schedule import INLINE_OPS, VIEW_OPS, Kernel, Schedule, stored_values
from graphc.passes.tiles import TilePlan, Tiles


@dataclass(frozen=True)
class KernelCode:
    """The code one kernel runs: `digest` names it; `classes[r]` is the storage key (the
    node owning the buffer, as MemoryPlan.storage gives it) of this kernel's class r."""

    digest: str
    classes: tuple[Hashable, ...]

    @property
    def symbol(self) -> str:
        return f"gk_{self.digest[:20]}"

    def role(self, key: Hashable) -> int | None:
        """The storage class of a storage key of this kernel (None if it has none)."""
        try:
            return self.classes.index(key)
        except ValueError:
            return None


@dataclass(frozen=True, eq=False)
class SharePlan:
    codes: Mapping[str, KernelCode]  # kernel name -> its code
    first: Mapping[str, str]  # digest -> the first kernel (in schedule order) with that code
    # The plans the signatures were taken from: a graph whose memory or tile plan was
    # replaced since (graphc check plans memory again) needs sharing worked out again.
    memory: MemoryPlan | None = None
    tiles: TilePlan | None = None

    def made_for(self, memory: MemoryPlan, tiles: TilePlan | None) -> bool:
        return self.memory is memory and self.tiles is tiles

    @property
    def distinct(self) -> int:
        return len(self.first)

    def summary(self, graph: Graph | None = None) -> str:
        lines = [f"{len(self.codes)} kernels, {self.distinct} distinct"]
        for name, code in self.codes.items():
            first = self.first[code.digest]
            if first != name and not name.startswith(f"{first}/"):  # (a loop runs its body's)
                lines.append(f"{name}: same code as {first}")
        return "\n".join(lines)


def share_kernels(graph: Graph) -> Graph:
    return graph.with_meta(shared=share_plan(graph, graph.meta.get("tiles")))


def share_plan(graph: Graph, tiles: TilePlan | None) -> SharePlan:
    schedule: Schedule = graph.meta["schedule"]
    plan: MemoryPlan = graph.meta["memory"]
    stored = set(stored_values(graph, schedule))
    codes: dict[str, KernelCode] = {}
    first: dict[str, str] = {}
    for k in schedule.kernels:
        if k.kind == "scan":  # no code of its own: its body's kernels, called once a step
            _, body = body_plans(graph.meta["scans"].bodies[k.root], tiles)
            for name, code in body.codes.items():
                codes[f"{k.name}/{name}"] = code
                first.setdefault(code.digest, k.name)
            continue
        t = tiles.kernels.get(k.name) if tiles is not None else None
        code = kernel_code(k, plan, stored, t)
        codes[k.name] = code
        first.setdefault(code.digest, k.name)
    return SharePlan(codes, first, plan, tiles)


def body_plans(body: Graph, tiles: TilePlan | None) -> tuple[TilePlan | None, SharePlan]:
    """The tile plan and code sharing of a loop's planned body, for the vectors the step's
    own tile plan is for (codegen follows exactly these)."""
    from graphc.passes.tiles import tile_plan

    body_tiles = None
    if tiles is not None:
        body_tiles = body.meta.get("tiles")
        if body_tiles is None or not body_tiles.fits(body, tiles.vectors):
            body_tiles = tile_plan(body, tiles.vectors)
    return body_tiles, share_plan(body, body_tiles)


def kernel_code(k: Kernel, plan: MemoryPlan, stored: set[Node], tiles: Tiles | None) -> KernelCode:
    """The signature of `k` (module docstring), digested, with its storage classes."""
    members = set(k.nodes) | set(k.params.get("constants", ()))
    ids: dict[Node, int] = {}
    rows: list[tuple] = []
    classes: dict[Hashable, int] = {}

    def storage_class(n: Node) -> int | None:
        if n not in plan.buffers:
            return None  # a view or fill read in place: it has no buffer of its own
        return classes.setdefault(plan.storage(n).value, len(classes))

    def expands(n: Node) -> bool:  # what the emitters look into, not just read
        return n in members or n.op in VIEW_OPS or n.op in INLINE_OPS

    def visit(root: Node) -> int:
        # Iterative post-order: a kernel can hold long chains, deeper than Python recursion.
        stack = [(root, False)]
        while stack:
            n, ready = stack.pop()
            if n in ids:
                continue
            if not expands(n):
                ids[n] = len(rows)
                rows.append(("read", str(n.type), n in stored, storage_class(n)))
                continue
            if not ready:
                stack.append((n, True))
                stack.extend((i, False) for i in reversed(n.inputs) if i not in ids)
                continue
            ins = tuple(ids[i] for i in n.inputs)
            row = (n.op, _canon(dict(n.attrs)), str(n.type), ins, n in members, n in stored)
            ids[n] = len(rows)
            rows.append(row + (storage_class(n),))
        return ids[root]

    for n in k.nodes:
        visit(n)
    params = _canon_params(k.params, visit)
    outputs = tuple(visit(o) for o in k.outputs)
    plan_text = "" if tiles is None else f"{tiles.op} {tiles.lanes} {tiles.plan!r}"
    text = repr((k.kind, visit(k.root), outputs, params, plan_text, rows))
    digest = hashlib.sha256(text.encode()).hexdigest()
    keys = sorted(classes, key=classes.__getitem__)
    return KernelCode(digest, tuple(keys))


def _canon(value):
    """Attribute values as text that is equal exactly when the values are."""
    if isinstance(value, ConstArray):
        return f"array:{value._digest}"
    if isinstance(value, dict):
        return tuple((k, _canon(v)) for k, v in sorted(value.items()))
    if isinstance(value, tuple | list):
        return tuple(_canon(v) for v in value)
    return repr(value)


def _canon_params(value, visit):
    """A kernel's fusion parameters with nodes as their position in the signature."""
    if isinstance(value, Node):
        return ("node", visit(value))
    if isinstance(value, Mapping):
        return tuple((k, _canon_params(v, visit)) for k, v in sorted(value.items()))
    if isinstance(value, tuple | list | frozenset | set):
        items = [_canon_params(v, visit) for v in value]
        return tuple(items if isinstance(value, tuple | list) else sorted(items, key=repr))
    return _canon(value)
