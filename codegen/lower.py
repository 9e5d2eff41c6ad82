"""lower: a fused, memory-planned graph -> an LLVM module whose entry runs the whole step, and
a module of its own for each distinct kernel code it calls.

    i32 graphc_entry(ptr io, ptr arena, ptr threads)

`io[i]` points at graph input i (a parameter's own array, the batch, a host scalar); every
other value lives in `arena` at the offset the memory plan gave it, or in place over the input
it updates. The entry calls each kernel of the schedule in order over its full range of
parallel units; it returns 0, or k+1 when kernel k found bad data (a class index out of
range), so the runtime can report it without the process ever writing out of bounds.

`threads` points at two i64: the address of `graphc_parallel_for` and of the process's pool
(graphc/threads.py). They are passed at run time, never baked in, because they differ between
processes and the object code is cached on disk. A kernel the plan_parallel pass marked
parallel is called through a thunk `void thunk(ptr ctx, i64 lo, i64 hi)` whose ctx holds the
kernel's pointer arguments; parallel_for cuts [0, extent) into chunks and runs the thunk on
each, on whichever threads are free. Units write disjoint outputs in a fixed order, so the
numbers do not depend on the thread count.

Kernels whose code is the same (passes/share.py: every block of a ResNet stage, every layer
of a uniform MLP) are emitted once, under a symbol named by the code's digest, and called
with each kernel's own buffers. A kernel module does not depend on the step that calls it,
so the backend compiles, caches and links each one on its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

from llvmlite import ir

from graphc.codegen import (
    collective,
    index,
    loop,
    misc,
    pool,
    pool_tiled,
    rows,
    scan,
    softmax_fused,
)
from graphc.codegen.backend import ENTRY
from graphc.codegen.emit import Spec
from graphc.codegen.irutil import FunctionPointer, entry_alloca, i64
from graphc.codegen.scalar import I8, I32, I64, PTR
from graphc.codegen.target import Target, host_target
from graphc.ir import Graph, Node
from graphc.passes.memory import MemoryPlan
from graphc.passes.parallel import ParallelPlan
from graphc.passes.schedule import Kernel, stored_values
from graphc.passes.share import KernelCode, SharePlan, share_plan
from graphc.passes.tiles import TILED_KINDS, TilePlan, Tiles, tile_plan

Storage = Callable[[Node], Hashable]


@dataclass
class KernelModule:
    """One distinct kernel's code (passes/share.py): emitted into a module of its own, or
    known already (from the on-disk cache: `module` is None)."""

    symbol: str
    digest: str
    roles: tuple[int, ...]  # each pointer argument's storage class
    parallel_extent: int
    description: str
    status: bool = False
    flops: int = 0
    module: ir.Module | None = None
    instructions: int = 0  # LLVM instructions as emitted: what compiling it costs
    seconds: float = 0.0  # emitting it (Python)
    users: list[str] = field(default_factory=list)  # the kernels that call it

    def spec(self, code: KernelCode) -> Spec:
        """The call of this code by the kernel whose storage classes are `code`'s."""
        args = [code.classes[r] for r in self.roles]
        return Spec(
            self.symbol, args, self.parallel_extent, self.description, self.status, self.flops
        )

    def record(self) -> dict:
        """What the entry needs to call it, for the cache (kernels compiled before are never
        emitted again)."""
        return dict(
            digest=self.digest,
            symbol=self.symbol,
            instructions=self.instructions,
            seconds=self.seconds,
            roles=list(self.roles),
            parallel_extent=self.parallel_extent,
            description=self.description,
            status=self.status,
            flops=self.flops,
        )

    @classmethod
    def from_record(cls, record: dict) -> KernelModule:
        return cls(
            str(record["symbol"]),
            str(record["digest"]),
            tuple(int(r) for r in record["roles"]),
            int(record["parallel_extent"]),
            str(record["description"]),
            bool(record["status"]),
            int(record["flops"]),
            instructions=int(record.get("instructions", 0)),
            seconds=float(record.get("seconds", 0.0)),
        )


@dataclass(frozen=True)
class Bundle:
    """Kernel codes compiled together, as one module, and cached as one object: a
    contraction's code alone (it is large, and other models share it), the small codes in
    groups (a module costs a few milliseconds of LLVM's time however small it is)."""

    digests: tuple[str, ...]

    @property
    def key(self) -> str:
        return hashlib.sha256("|".join(self.digests).encode()).hexdigest()

    @property
    def name(self) -> str:
        return f"graphc.{self.key[:16]}"


SMALL_PER_BUNDLE = 16


def plan_bundles(graph: Graph, shared: SharePlan) -> list[Bundle]:
    """The distinct codes of a step in bundles, in the order the schedule first calls them."""
    kinds = {k.name: k.kind for k in graph.meta["schedule"].kernels}
    out: list[Bundle] = []
    small: list[str] = []
    for digest, first in shared.first.items():
        if kinds[first] in TILED_KINDS:
            out.append(Bundle((digest,)))
            continue
        small.append(digest)
        if len(small) == SMALL_PER_BUNDLE:
            out.append(Bundle(tuple(small)))
            small = []
    if small:
        out.append(Bundle(tuple(small)))
    return out


@dataclass
class Emitted:
    """A bundle's module, emitted now, with its codes."""

    bundle: Bundle
    module: ir.Module
    codes: list[KernelModule] = field(default_factory=list)
    opt: int = 3  # how LLVM optimises it (Lowering.recipe)
    unroll: bool = True
    light: bool = False

    @property
    def instructions(self) -> int:
        return sum(c.instructions for c in self.codes)


@dataclass
class Lowered:
    module: ir.Module  # the entry: calls every kernel of the schedule in order
    specs: list[Spec]  # one per kernel, in schedule order (shared code: the same symbol)
    kernels: list[Kernel]
    codes: dict[str, KernelModule] = field(default_factory=dict)  # symbol -> its code
    emitted: list[Emitted] = field(default_factory=list)  # the bundles emitted now

    @property
    def parts(self) -> list[ir.Module]:
        """Every module emitted: the entry first, then one per bundle of codes."""
        return [self.module] + [e.module for e in self.emitted]

    def kernel_module(self, kernel: str) -> tuple[str, Emitted]:
        """(symbol, its bundle) of the code the schedule's kernel `kernel` runs."""
        for spec, k in zip(self.specs, self.kernels, strict=True):
            if k.name == kernel:
                for e in self.emitted:
                    if any(c.symbol == spec.name for c in e.codes):
                        return spec.name, e
                raise KeyError(f"{kernel}: its code came from the cache, not emitted here")
        raise KeyError(kernel)


@dataclass
class Lowering:
    """What lowering a graph needs, worked out once: the plans codegen follows, which values
    are stored and where, and the bundles of kernel codes."""

    graph: Graph
    target: Target
    tiles: TilePlan
    shared: SharePlan
    stored: set[Node]
    bundles: list[Bundle]

    def storage(self, n: Node) -> Hashable:
        return self.graph.meta["memory"].storage(n).value

    def kernel(self, name: str) -> Kernel:
        return self._kernels[name]

    def code_source(self, digest: str) -> tuple[Kernel, KernelCode, set[Node], Storage, Tiles]:
        """The kernel a code is emitted from (the first that runs it), with the stored
        values, storage and tile plan of its graph: a loop's codes come from its body."""
        name = self.shared.first[digest]
        k = self.kernel(name)
        if k.kind == "scan":
            return scan.body_code_source(self.graph, k, self.tiles, digest)
        code = self.shared.codes[name]
        return k, code, self.stored, self.storage, self.tiles.kernels.get(name)

    def recipe(self, bundle: Bundle) -> tuple[int, bool, bool]:
        """How LLVM optimises a bundle: (-O level, whether loops are unrolled, whether only
        jit.LIGHT_PASSES run). Measured on ResNet-20's kernels:
        - a conv2d, conv2d_input_grad or matmul emitted with a tile plan is explicit vector
          code already: the light passes give machine code as fast as -O1's, which took 4x
          their time and 10-20% less than -O3;
        - conv2d_weight_grad keeps -O1: its units loop over images around the vector tiles
          and ran 10% slower without -O1's loop passes;
        - loop kernels need -O3's vectoriser, but not its unrolling and interleaving of the
          vector loop: memory-bound, they run as fast without, and compile in half the time.
        Scalar contractions (float64, geometries without a plan) keep the full -O3."""
        kinds = [self.kernel(self.shared.first[d]) for d in bundle.digests]
        if len(kinds) == 1 and kinds[0].kind in TILED_KINDS:
            plan = self.tiles.kernels.get(kinds[0].name)
            if plan is None or plan.plan is None:
                return 3, True, False
            return 1, True, kinds[0].kind != "conv2d_weight_grad"
        return 3, False, False

    def __post_init__(self) -> None:
        self._kernels = {k.name: k for k in self.graph.meta["schedule"].kernels}


def prepare(graph: Graph, target: Target | None = None) -> Lowering:
    target = target or host_target()
    tiles, shared = kernel_plans(graph, target)
    stored = set(stored_values(graph, graph.meta["schedule"]))
    return Lowering(graph, target, tiles, shared, stored, plan_bundles(graph, shared))


def emit_bundles(
    lw: Lowering, bundles: Sequence[Bundle], progress: Callable[[int, int], None] | None = None
) -> list[Emitted]:
    """The codes of `bundles`, each bundle in a module of its own, each code emitted from the
    first kernel that runs it. `progress(done, total)` is told of each code emitted."""
    total = sum(len(b.digests) for b in bundles)
    out = []
    for bundle in bundles:
        module = ir.Module(name=bundle.name)
        module.triple = lw.target.triple
        opt, unroll, light = lw.recipe(bundle)
        e = Emitted(bundle, module, opt=opt, unroll=unroll, light=light)
        for digest in bundle.digests:
            k, code, stored, storage, tiles = lw.code_source(digest)
            e.codes.append(_emit_code(k, code, stored, storage, lw.target, tiles, module))
            if progress is not None:
                progress(sum(len(x.codes) for x in out) + len(e.codes), total)
        out.append(e)
    return out


def lower(
    graph: Graph,
    target: Target | None = None,
    profile: bool = False,
    fault: str | None = None,
    known: dict[str, KernelModule] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Lowered:
    """`profile`: the entry takes a third argument, an i64 array that receives each kernel's
    nanoseconds. `fault` (a test hook for `graphc check`): after the named kernel runs, its
    output's first element is increased by 1. Kernels that share code (passes/share.py) are
    emitted once, into the module of their bundle (plan_bundles), so that each bundle can be
    compiled, cached and linked on its own; `known` (digest -> code) are compiled already
    and not emitted. `progress(done, total)` is told of each code emitted."""
    lw = prepare(graph, target)
    known = known or {}
    todo = [b for b in lw.bundles if not all(d in known for d in b.digests)]
    emitted = emit_bundles(lw, todo, progress)
    codes = dict(known)
    codes.update((c.digest, c) for e in emitted for c in e.codes)
    return link_entry(lw, codes, emitted, profile, fault)


def link_entry(
    lw: Lowering,
    codes: dict[str, KernelModule],
    emitted: list[Emitted],
    profile: bool = False,
    fault: str | None = None,
) -> Lowered:
    """The entry module, calling every kernel of the schedule through the code its digest
    names in `codes` (digest -> code: emitted here, elsewhere, or compiled before)."""
    graph = lw.graph
    module = ir.Module(name=f"graphc.{graph.name}")
    module.triple = lw.target.triple
    by_symbol: dict[str, KernelModule] = {}
    specs = []
    kernels = graph.meta["schedule"].kernels

    def call(k: Kernel, code: KernelCode, *_) -> Spec:
        """The call of kernel k's code, declared here (defined in its bundle's object)."""
        km = codes[code.digest]
        if km.symbol not in by_symbol:
            by_symbol[km.symbol] = km
            ret = I32 if km.status else ir.VoidType()
            fn_type = ir.FunctionType(ret, [PTR] * len(km.roles) + [I64, I64])
            ir.Function(module, fn_type, km.symbol)
        km.users.append(k.name)
        return km.spec(code)

    for k in kernels:
        if k.kind == "scan":  # a loop in the entry over its body's kernels
            specs.append(scan.lower_scan(k, graph, lw.tiles, lw.storage, call, lw.target))
            continue
        specs.append(call(k, lw.shared.codes[k.name]))
    _emit_entry(module, graph, graph.meta["memory"], specs, lw.storage, lw.target, profile, fault)
    return Lowered(module, specs, list(kernels), by_symbol, emitted)


def kernel_plans(graph: Graph, target: Target) -> tuple[TilePlan, SharePlan]:
    """The tile plan and kernel sharing codegen follows: the graph's, if they were made for
    this target's vectors and these kernels; else the plan_tiles and share_kernels passes
    again, for these (the interpreter backend plans no tiles; tests lower raw graphs)."""
    tiles = graph.meta.get("tiles")
    shared: SharePlan | None = graph.meta.get("shared")
    if tiles is None or not tiles.fits(graph, target.vector_unit()):
        tiles, shared = tile_plan(graph, target.vector_unit()), None
    if shared is None or not shared.made_for(graph.meta["memory"], tiles):
        shared = share_plan(graph, tiles)
    return tiles, shared


def _emit_code(
    k: Kernel,
    code: KernelCode,
    stored: set[Node],
    storage: Storage,
    target: Target,
    tiles: Tiles | None,
    module: ir.Module,
) -> KernelModule:
    """Kernel `k`'s code, emitted under the symbol of its digest into `module`."""
    t0 = time.perf_counter()
    spec = emit_kernel(module, k, stored, storage, target, tiles, name=code.symbol)
    fn = module.get_global(spec.name)
    # External linkage and noinline: a kernel's code is the same whichever step calls it and
    # however the steps are split into objects; and its range arguments stay runtime values
    # (LLVM would otherwise specialise a serial kernel to the range one entry calls it with,
    # and its reductions could round differently from the same kernel in another step).
    fn.attributes.add("noinline")
    _set_attrs(fn, target)
    roles = []
    for key in spec.args:
        role = code.role(key)
        if role is None:
            raise AssertionError(
                f"{k.name}: argument {key!r} is none of the kernel's storage classes "
                "(passes/share.py must see every buffer an emitter passes)"
            )
        roles.append(role)
    size = sum(len(block.instructions) for block in fn.blocks)
    return KernelModule(
        spec.name,
        code.digest,
        tuple(roles),
        spec.parallel_extent,
        spec.description,
        spec.status,
        spec.flops,
        module,
        size,
        time.perf_counter() - t0,
    )


def emit_kernel(
    module: ir.Module,
    k: Kernel,
    stored: set[Node],
    storage: Storage,
    target: Target,
    tiles: Tiles | None = None,
    name: str | None = None,
) -> Spec:
    """`tiles`: the kernel's plan from passes/tiles.py (contraction kernels only); `name`:
    the function's name (default: the kernel's)."""
    if name is not None and name != k.name:
        k = dataclasses.replace(k, name=name)
    if k.kind == "loop":
        s = loop.emit_loop(module, k.name, k, stored, storage)
        return Spec(s.name, s.args, s.parallel_extent, s.description)
    if k.params.get("prologue"):  # softmax computing its scaled, masked input as it reads
        return softmax_fused.emit_softmax_fused(module, k.name, k, stored, storage)
    if k.kind in CONTRACTIONS:
        return CONTRACTIONS[k.kind](module, k, storage, target, tiles)
    if k.kind in ("max_pool2d", "max_pool2d_grad") and pool_tiled.tiles(k.root):
        if k.kind == "max_pool2d":
            return pool_tiled.emit_max_pool2d(module, k.name, k.root, storage)
        return pool_tiled.emit_max_pool2d_grad(
            module,
            k.name,
            k.root,
            storage,
            out=k.outputs[0],
            relu=k.params.get("relu", False),
            bias_grad=k.params.get("bias_grad"),
        )
    for table in (pool.EMITTERS, rows.EMITTERS, misc.EMITTERS, collective.EMITTERS, index.EMITTERS):
        if k.kind in table:
            return table[k.kind](module, k.name, k.root, storage)
    raise NotImplementedError(f"no lowering for kernel kind {k.kind!r} ({k.root.op})")


def _set_attrs(fn: ir.Function, target: Target) -> None:
    from graphc.codegen.irutil import set_fn_attrs

    attrs = target.function_attributes
    if attrs:
        set_fn_attrs(fn, attrs)


def _emit_entry(
    module: ir.Module,
    graph: Graph,
    plan: MemoryPlan,
    specs: list[Spec],
    storage: Storage,
    target: Target,
    profile: bool,
    fault: str | None,
) -> None:
    params = [PTR, PTR, PTR, PTR] if profile else [PTR, PTR, PTR]
    fn = ir.Function(module, ir.FunctionType(I32, params), ENTRY)
    io, arena, threads = fn.args[:3]
    io.name, arena.name, threads.name = "io", "arena", "threads"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    plan_parallel: ParallelPlan | None = graph.meta.get("parallel")
    parallel = plan_parallel.parallel if plan_parallel is not None else frozenset()
    kernels = graph.meta["schedule"].kernels
    clock = _clock(module) if profile else None
    pointers: dict[Hashable, ir.Value] = {}
    for i, node in enumerate(graph.inputs):
        slot = b.gep(io, [i64(i)], inbounds=True, source_etype=PTR)
        pointers[node] = b.load(slot, typ=PTR, name=node.name)

    def pointer(key: Node) -> ir.Value:
        if key not in pointers:
            buf = plan.buffers[key]
            pointers[key] = b.gep(
                arena, [i64(buf.offset)], inbounds=True, source_etype=I8, name=f"buf{buf.offset}"
            )
        return pointers[key]

    for ki, spec in enumerate(specs):
        start = clock(b) if profile else None
        if isinstance(spec, scan.ScanSpec):  # reports bad data itself, from inside the loop
            scratch = plan.scratch.get(kernels[ki].name, (0, 0))[0]
            spec.emit(b, pointer, arena, threads, scratch, ki)
            rc = None
        else:
            rc = call_kernel(b, spec, pointer, threads, kernels[ki].name in parallel)
        if profile:
            slot = b.gep(fn.args[3], [i64(ki)], inbounds=True, source_etype=I64)
            b.store(b.add(b.load(slot, typ=I64), b.sub(clock(b), start)), slot)
        if spec.status:
            failed = b.icmp_signed("!=", rc, ir.Constant(I32, 0))
            with b.if_then(failed):
                b.ret(ir.Constant(I32, ki + 1))
        if fault == kernels[ki].name:
            _corrupt(b, pointer(spec.args[0]), graph.meta["schedule"].kernels[ki].outputs[0])
    b.ret(ir.Constant(I32, 0))
    _set_attrs(fn, target)


def call_kernel(
    b: ir.IRBuilder, spec: Spec, pointer: Callable, threads: ir.Value, parallel: bool
) -> ir.Value | None:
    """Calls an emitted kernel over all its units, through the worker pool when `parallel`;
    returns its status (None if it reports none)."""
    module = b.module
    callee = module.get_global(spec.name)
    ptrs = [pointer(a) for a in spec.args]
    if parallel and spec.parallel_extent > 1 and not spec.status:
        _parallel_call(b, threads, _thunk(module, callee, len(ptrs)), ptrs, spec)
        return None
    return b.call(callee, ptrs + [i64(0), i64(spec.parallel_extent)])


def _thunk(module: ir.Module, kernel: ir.Function, n_ptrs: int) -> ir.Function:
    """`void <kernel>.thunk(ptr ctx, i64 lo, i64 hi)`: kernel(ctx[0], .., ctx[n-1], lo, hi)
    (one per kernel code, whichever kernels call it)."""
    from graphc.codegen.threads import THUNK_TYPE

    name = f"{kernel.name}.thunk"
    if name in module.globals:
        return module.globals[name]
    fn = ir.Function(module, THUNK_TYPE, name)
    fn.linkage = "internal"
    ctx, lo, hi = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    ptrs = [
        b.load(b.gep(ctx, [i64(i)], inbounds=True, source_etype=PTR), typ=PTR)
        for i in range(n_ptrs)
    ]
    b.call(kernel, ptrs + [lo, hi])
    b.ret_void()
    return fn


def _parallel_call(
    b: ir.IRBuilder, threads: ir.Value, thunk: ir.Function, ptrs: list, spec: Spec
) -> None:
    """parallel_for(pool, thunk, ctx, extent), both addresses read from `threads`."""
    from graphc.codegen.threads import PARALLEL_FOR_TYPE

    ctx = entry_alloca(b, ir.ArrayType(PTR, len(ptrs)), f"{spec.name}.ctx")
    for i, p in enumerate(ptrs):
        b.store(p, b.gep(ctx, [i64(0), i64(i)], inbounds=True, source_etype=ctx.allocated_type))
    words = [
        b.load(b.gep(threads, [i64(i)], inbounds=True, source_etype=I64), typ=I64) for i in range(2)
    ]
    parallel_for = b.inttoptr(words[0], PTR, name="parallel_for")
    pool = b.inttoptr(words[1], PTR, name="pool")
    b.call(
        FunctionPointer(parallel_for, PARALLEL_FOR_TYPE),
        [pool, thunk, ctx, i64(spec.parallel_extent)],
    )


def _clock(module: ir.Module):
    """A function of the builder returning CLOCK_MONOTONIC in nanoseconds (via libc)."""
    timespec = ir.ArrayType(I64, 2)
    gettime = ir.Function(module, ir.FunctionType(I32, [I32, PTR]), "clock_gettime")

    def now(b: ir.IRBuilder) -> ir.Value:
        ts = b.alloca(timespec, name="ts")
        b.call(gettime, [ir.Constant(I32, 1), ts])
        sec = b.load(b.gep(ts, [i64(0), ir.Constant(I32, 0)], source_etype=timespec), typ=I64)
        nsec = b.load(b.gep(ts, [i64(0), ir.Constant(I32, 1)], source_etype=timespec), typ=I64)
        return b.add(b.mul(sec, i64(1_000_000_000)), nsec)

    return now


def _corrupt(b: ir.IRBuilder, ptr: ir.Value, node: Node) -> None:
    from graphc.codegen import scalar

    if not node.dtype.is_floating_point:
        return
    first = b.gep(ptr, [i64(0)], source_etype=scalar.memory_type(node.dtype))
    value = scalar.load(b, first, node.dtype)
    b.store(b.fadd(value, scalar.constant(node.dtype, 1.0)), first)


# ---- convolution and matmul: the register-tiled emitters in codegen/kernels ----------------


def _conv2d(module, k: Kernel, storage: Storage, target: Target, tiles: Tiles) -> Spec:
    from graphc.codegen.kernels.conv import emit_conv2d

    node = k.root
    x, w = node.inputs
    bias = k.params.get("bias")
    a = node.attrs
    ks = emit_conv2d(
        module,
        k.name,
        x_shape=x.shape,
        w_shape=w.shape,
        stride=a["stride"],
        padding=a["padding"],
        dilation=a["dilation"],
        groups=a["groups"],
        dtype=node.dtype,
        bias=bias is not None,
        relu=k.params.get("relu", False),
        target=target,
        tiles=tiles,
    )
    args = [storage(k.outputs[0]), storage(x), storage(w)] + ([storage(bias)] if bias else [])
    return Spec(ks.name, args, ks.parallel_extent, ks.schedule, flops=ks.flops)


def _matmul(module, k: Kernel, storage: Storage, target: Target, tiles: Tiles) -> Spec:
    from graphc.codegen.kernels.gemm import emit_matmul

    node = k.root
    x, y = node.inputs
    bias = k.params.get("bias")
    ks = emit_matmul(
        module,
        k.name,
        a_shape=x.shape,
        b_shape=y.shape,
        trans_a=node.attrs["trans_a"],
        trans_b=node.attrs["trans_b"],
        dtype=node.dtype,
        bias=bias is not None,
        relu=k.params.get("relu", False),
        target=target,
        tiles=tiles,
    )
    args = [storage(k.outputs[0]), storage(x), storage(y)] + ([storage(bias)] if bias else [])
    return Spec(ks.name, args, ks.parallel_extent, ks.schedule, flops=ks.flops)


def _conv2d_grad(module, k: Kernel, storage: Storage, target: Target, tiles: Tiles) -> Spec:
    """conv2d_input_grad (inputs g, w) and conv2d_weight_grad (inputs x, g)."""
    from graphc.codegen.kernels import conv

    node = k.root
    first, second = node.inputs
    a = node.attrs
    if node.op == "conv2d_input_grad":
        emit, shapes = conv.emit_conv2d_input_grad, dict(g_shape=first.shape, w_shape=second.shape)
        shapes["input_shape"] = a["input_shape"]
    else:
        emit, shapes = conv.emit_conv2d_weight_grad, dict(x_shape=first.shape, g_shape=second.shape)
        shapes["weight_shape"] = a["weight_shape"]
    ks = emit(
        module,
        k.name,
        **shapes,
        stride=a["stride"],
        padding=a["padding"],
        dilation=a["dilation"],
        groups=a["groups"],
        dtype=node.dtype,
        target=target,
        tiles=tiles,
    )
    args = [storage(node), storage(first), storage(second)]
    return Spec(ks.name, args, ks.parallel_extent, ks.schedule, flops=ks.flops)


CONTRACTIONS = {
    "conv2d": _conv2d,
    "matmul": _matmul,
    "conv2d_input_grad": _conv2d_grad,
    "conv2d_weight_grad": _conv2d_grad,
}
