"""The native loop of a `scan` kernel, emitted inline in the step's entry function.

    copy each initial carry into its part of the packed result
    for t in 0 .. T-1  (T-1 .. 0 when reverse):
        call the body's kernels in order (in parallel where the body's plan says so) over
            carries   = their parts of the packed result (they always hold the latest value)
            xs[t]     = the operand's block of step t (base + t * step stride)
            consts    = the operands, where they live
            the rest  = the loop's scratch: the body's own arena, reused every step
        copy the step's per-step outputs and saved values to their row t (those computed in
            the body's own memory are computed in that row instead, and need no copy)
        copy the new carries over the old ones (staging those written over another carry)

The body's kernels are ordinary kernels with codes of their own (passes/share.py lists them
as the loop's), emitted, cached and shared like any other; only this loop knows they are
called T times. Nothing here depends on T but the trip count, so a loop of 400 steps
compiles as fast as one of 50.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from llvmlite import ir

from graphc.codegen.emit import Spec
from graphc.codegen.irutil import for_range, i64, intrinsic
from graphc.codegen.scalar import I1, I8, I32, I64, PTR
from graphc.ir import Graph, Node
from graphc.ops.scan import segments
from graphc.passes.parallel import ParallelPlan
from graphc.passes.scan import operand_view, staged_carries
from graphc.passes.schedule import Kernel, stored_values
from graphc.passes.share import body_plans
from graphc.passes.tiles import TilePlan


@dataclass
class ScanSpec(Spec):
    """A loop in the entry: `emit` writes it where the entry calls kernel `index`."""

    node: Node | None = None
    body: Graph | None = None
    calls: list = field(default_factory=list)  # per body kernel: Spec or a nested ScanSpec
    outer_stored: set = field(default_factory=set)
    storage: Callable | None = None

    def emit(self, b: ir.IRBuilder, pointer: Callable, arena, threads, scratch: int, index: int):
        base = b.gep(arena, [i64(scratch)], inbounds=True, source_etype=I8, name="scan.scratch")
        _emit_loop(self, b, pointer, base, threads, index)


def lower_scan(
    k: Kernel,
    graph: Graph,
    tiles: TilePlan | None,
    storage: Callable[[Node], Hashable],
    call: Callable,
    target,
) -> ScanSpec:
    """The loop of scan kernel k, with a call for each kernel of its body (whose codes
    `call` emits or finds, as the entry's own)."""
    body = graph.meta["scans"].bodies[k.root]
    body_tiles, shared = body_plans(body, tiles)
    plan = body.meta["memory"]
    stored = set(stored_values(body, body.meta["schedule"]))

    def body_storage(n: Node) -> Hashable:
        return plan.storage(n).value

    calls = []
    for bk in body.meta["schedule"].kernels:
        if bk.kind == "scan":
            calls.append(lower_scan(bk, body, body_tiles, body_storage, call, target))
            continue
        t = body_tiles.kernels.get(bk.name) if body_tiles is not None else None
        calls.append(call(bk, shared.codes[bk.name], stored, body_storage, t))
    a = k.root.attrs
    flops = sum(c.flops for c in calls) * a["length"]
    what = f"loop of {a['length']} steps over {len(calls)} kernels"
    spec = ScanSpec(k.name, [storage(k.root)], 1, what, flops=flops)
    spec.node, spec.body, spec.calls = k.root, body, calls
    spec.outer_stored = set(stored_values(graph, graph.meta["schedule"]))
    spec.storage = storage
    return spec


def body_code_source(graph: Graph, k: Kernel, tiles: TilePlan | None, digest: str):
    """(kernel, code, stored, storage, tiles) of the first kernel in loop k's body (or in a
    loop nested in it) whose code is `digest`: what that code is emitted from."""
    body = graph.meta["scans"].bodies[k.root]
    body_tiles, shared = body_plans(body, tiles)
    plan = body.meta["memory"]
    for bk in body.meta["schedule"].kernels:
        if bk.kind == "scan":
            try:
                return body_code_source(body, bk, body_tiles, digest)
            except KeyError:
                continue
        code = shared.codes[bk.name]
        if code.digest == digest:
            stored = set(stored_values(body, body.meta["schedule"]))
            t = body_tiles.kernels.get(bk.name) if body_tiles is not None else None
            return bk, code, stored, lambda n: plan.storage(n).value, t
    raise KeyError(digest)


def _memcpy(b: ir.IRBuilder, dst, src, nbytes: int) -> None:
    if nbytes:
        fn = intrinsic(
            b.module, "llvm.memmove", ir.VoidType(), [PTR, PTR, I64, I1], [PTR, PTR, I64]
        )
        b.call(fn, [dst, src, i64(nbytes), ir.Constant(I1, 0)])


def _at(b: ir.IRBuilder, ptr, byte_offset) -> ir.Value:
    return b.gep(ptr, [byte_offset if isinstance(byte_offset, ir.Value) else i64(byte_offset)],
                 inbounds=True, source_etype=I8)  # fmt: skip


def _emit_loop(spec: ScanSpec, b: ir.IRBuilder, pointer: Callable, scratch, threads, index: int):
    from graphc.codegen.lower import call_kernel

    node, body = spec.node, spec.body
    a = node.attrs
    nc, nx, length = a["num_carry"], a["num_xs"], a["length"]
    segs = segments(body, nc, length)
    item = node.dtype.itemsize
    out = pointer(spec.storage(node))

    def operand(k: int):
        """(pointer to operand k's first element, step stride in bytes)."""
        x = node.inputs[k]
        v = operand_view(node, k, spec.outer_stored)
        if v is None:
            raise AssertionError(f"scan operand {k} ({x!r}) is neither stored nor a dense view")
        size = x.dtype.itemsize
        ptr = _at(b, pointer(spec.storage(v.base)), v.offset * size)
        return ptr, (v.strides[0] * size if v.shape else 0)

    operands = [operand(k) for k in range(len(node.inputs))]
    for i in range(nc):
        _memcpy(b, _at(b, out, segs[i].offset * item), operands[i][0], body.outputs[i].type.nbytes)

    plan = body.meta["memory"]
    par: ParallelPlan | None = body.meta.get("parallel")
    parallel = par.parallel if par is not None else frozenset()
    kernels = body.meta["schedule"].kernels
    inputs = body.inputs
    staged = staged_carries(body)
    # A per-step output the body computes into its arena is computed straight into its row
    # of the result instead (nothing reads it after the step): no copy.
    direct: dict[Hashable, int] = {}
    for k in range(nc, len(body.outputs)):
        key = plan.storage(body.outputs[k]).value
        if plan.buffers[key].kind == "arena":
            direct.setdefault(key, k)
    with for_range(b, 0, length, name=f"scan{index}") as t:
        step = b.sub(i64(length - 1), t) if a["reverse"] else t
        ptrs: dict[Hashable, ir.Value] = {}
        for key, k in direct.items():
            row = b.add(i64(segs[k].offset * item), b.mul(step, i64(body.outputs[k].type.nbytes)))
            ptrs[key] = b.gep(out, [row], inbounds=True, source_etype=I8)
        for k, n in enumerate(inputs):
            if k < nc:
                ptrs[n] = _at(b, out, segs[k].offset * item)
            elif k < nc + nx:
                first, stride = operands[k]
                ptrs[n] = b.gep(first, [b.mul(step, i64(stride))], inbounds=True, source_etype=I8)
            else:
                ptrs[n] = operands[k][0]

        def body_pointer(key: Hashable) -> ir.Value:
            if key not in ptrs:
                ptrs[key] = _at(b, scratch, plan.buffers[key].offset)
            return ptrs[key]

        for bk, c in zip(kernels, spec.calls, strict=True):
            if isinstance(c, ScanSpec):
                inner = _at(b, scratch, plan.scratch.get(bk.name, (0, 0))[0])
                _emit_loop(c, b, body_pointer, inner, threads, index)
                continue
            rc = call_kernel(b, c, body_pointer, threads, bk.name in parallel)
            if c.status:
                with b.if_then(b.icmp_signed("!=", rc, ir.Constant(I32, 0))):
                    b.ret(ir.Constant(I32, index + 1))

        def value(k: int) -> ir.Value:
            return body_pointer(plan.storage(body.outputs[k]).value)

        for k in range(nc, len(body.outputs)):  # before the carries change: rows of step t
            if direct.get(plan.storage(body.outputs[k]).value) == k:
                continue  # computed in place
            row = b.add(i64(segs[k].offset * item), b.mul(step, i64(body.outputs[k].type.nbytes)))
            _memcpy(b, b.gep(out, [row], inbounds=True, source_etype=I8), value(k),
                    body.outputs[k].type.nbytes)  # fmt: skip
        stage_at = plan.arena_bytes
        staging = {}
        for i in staged:
            staging[i] = _at(b, scratch, stage_at)
            _memcpy(b, staging[i], value(i), body.outputs[i].type.nbytes)
            stage_at += (body.outputs[i].type.nbytes + 63) // 64 * 64
        for i in range(nc):
            src = staging[i] if i in staging else value(i)
            if plan.storage(body.outputs[i]).value is not inputs[i]:
                _memcpy(b, ptrs[inputs[i]], src, body.outputs[i].type.nbytes)
