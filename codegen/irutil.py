"""Small helpers for emitting LLVM IR with llvmlite.ir: loops, vectors, intrinsics, attributes.

Each works around a limit of llvmlite.ir or keeps the emitters short:
- `for_range` emits a counted loop with named blocks (`conv.c.head/body/latch/end`) and
  optional loop metadata (`LoopHints`: unroll / vectorize off), which llvmlite.ir cannot
  express directly because a loop ID is a self-referential `distinct` node;
- `set_fn_attrs` adds string function attributes ("prefer-vector-width"="512"), which
  llvmlite.ir's attribute set refuses;
- `intrinsic` declares intrinsics by their mangled name (`llvm.fmuladd.v16f32`), since
  `Module.declare_intrinsic` cannot mangle vector types;
- `entry_alloca` gives stack slots for loop-carried values (SROA turns them into phis);
- vectors: `load_vec`/`store_vec` (masked for tails and edges, element alignment only),
  `splat`, `scatter`, `hsum`, `lane_sums` (many horizontal sums at once),
  `transpose_square`, `fmuladd`, `relu`.
Addresses are GEPs with element indices (`gep`, `index`), never ptrtoint arithmetic.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from llvmlite import ir

I1 = ir.IntType(1)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
F32 = ir.FloatType()
F64 = ir.DoubleType()
PTR = ir.PointerType()
VOID = ir.VoidType()

FLOAT_TYPES = {"float32": F32, "float64": F64}


def i64(value: int) -> ir.Constant:
    return ir.Constant(I64, value)


def as_i64(value: int | ir.Value) -> ir.Value:
    return i64(value) if isinstance(value, int) else value


# ---- function attributes --------------------------------------------------------------------


class _FnAttributes(ir.values.FunctionAttributes):
    """llvmlite's function attribute set plus `"key"="value"` string attributes, rendered
    inline after the parameter list (valid LLVM IR, no text patching needed)."""

    def __init__(self, base: ir.values.FunctionAttributes):
        super().__init__(sorted(base))
        self.alignstack = base.alignstack
        self.personality = base.personality
        self.strings: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self.strings) or len(self) > 0

    def _to_list(self, ret_type):
        attrs = super()._to_list(ret_type)
        return attrs + [f'"{k}"="{v}"' for k, v in sorted(self.strings.items())]


def set_fn_attrs(fn: ir.Function, attrs: dict[str, str]) -> None:
    """Attach string attributes such as {"prefer-vector-width": "512"} to `fn`."""
    if not isinstance(fn.attributes, _FnAttributes):
        fn.attributes = _FnAttributes(fn.attributes)
    fn.attributes.strings.update(attrs)


# ---- loops ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoopHints:
    """Loop metadata for one loop. `unroll`: None (LLVM decides), "disable", "full" or a count.
    `vectorize=False` stops the loop vectoriser, which otherwise may vectorise an outer loop
    with gathers and scatters and make it many times slower (measured in the notes)."""

    unroll: str | int | None = None
    vectorize: bool | None = None
    width: int | None = None  # llvm.loop.vectorize.width: lanes per vector iteration
    interleave: int | None = None  # llvm.loop.interleave.count: vector iterations per step


NO_UNROLL = LoopHints(unroll="disable", vectorize=False)
NO_VECTORIZE = LoopHints(vectorize=False)


class _LoopID(ir.values.MDValue):
    """`!N = distinct !{!N, ...}`: a loop ID must be distinct and refer to itself."""

    def __init__(self, module: ir.Module, properties: Sequence[ir.Value]):
        super().__init__(module, [], name=str(len(module.metadata)))
        self.operands = (self, *properties)

    def descr(self, buf):
        ops = ", ".join(op.get_reference() for op in self.operands)
        buf += ("distinct !{", ops, "}\n")

    # The base class hashes and compares its operands, which would recurse through `self`.
    __hash__ = object.__hash__

    def __eq__(self, other):
        return self is other


def _loop_id(module: ir.Module, hints: LoopHints) -> _LoopID | None:
    props = []
    if hints.unroll == "disable":
        props.append(module.add_metadata(["llvm.loop.unroll.disable"]))
    elif hints.unroll == "full":
        props.append(module.add_metadata(["llvm.loop.unroll.full"]))
    elif isinstance(hints.unroll, int):
        props.append(
            module.add_metadata(["llvm.loop.unroll.count", ir.Constant(I32, hints.unroll)])
        )
    if hints.vectorize is not None:
        flag = ir.Constant(I1, int(hints.vectorize))
        props.append(module.add_metadata(["llvm.loop.vectorize.enable", flag]))
    if hints.width is not None:
        width = ir.Constant(I32, hints.width)
        props.append(module.add_metadata(["llvm.loop.vectorize.width", width]))
    if hints.interleave is not None:
        count = ir.Constant(I32, hints.interleave)
        props.append(module.add_metadata(["llvm.loop.interleave.count", count]))
    return _LoopID(module, props) if props else None


@contextmanager
def for_range(
    builder: ir.IRBuilder,
    start: int | ir.Value,
    stop: int | ir.Value,
    step: int = 1,
    *,
    name: str = "i",
    hints: LoopHints | None = None,
) -> Iterator[ir.Value]:
    """`for name in range(start, stop, step)` (step > 0) over i64; yields the index value.

    Blocks are `{name}.head` (phi and test), `{name}.body`, `{name}.latch` (increment, back
    edge carrying the loop metadata) and `{name}.end`, where the builder is left afterwards.
    """
    if step <= 0:
        raise ValueError("for_range needs a positive step")
    start, stop = as_i64(start), as_i64(stop)
    fn = builder.function
    pre = builder.block
    head = fn.append_basic_block(f"{name}.head")
    body = fn.append_basic_block(f"{name}.body")
    latch = fn.append_basic_block(f"{name}.latch")
    end = fn.append_basic_block(f"{name}.end")
    builder.branch(head)

    builder.position_at_end(head)
    idx = builder.phi(I64, name=name)
    idx.add_incoming(start, pre)
    builder.cbranch(builder.icmp_signed("<", idx, stop, name=f"{name}.more"), body, end)

    builder.position_at_end(body)
    yield idx
    if not builder.block.is_terminated:
        builder.branch(latch)

    builder.position_at_end(latch)
    nxt = builder.add(idx, i64(step), name=f"{name}.next", flags=("nsw",))
    idx.add_incoming(nxt, latch)
    back = builder.branch(head)
    loop_id = _loop_id(fn.module, hints) if hints else None
    if loop_id is not None:
        back.set_metadata("llvm.loop", loop_id)
    builder.position_at_end(end)


# ---- addressing -----------------------------------------------------------------------------


def gep(
    builder: ir.IRBuilder, ptr: ir.Value, elem: ir.Type, index: int | ir.Value, name: str = ""
) -> ir.Value:
    """&ptr[index] for elements of type `elem` (index in elements, i64)."""
    return builder.gep(ptr, [as_i64(index)], source_etype=elem, name=name)


def index(builder: ir.IRBuilder, *terms: tuple[int | ir.Value, int] | int) -> ir.Value:
    """sum(value * stride) + constants as one i64, folding the constant parts in Python."""
    const = 0
    acc: ir.Value | None = None
    for term in terms:
        if isinstance(term, int):
            const += term
            continue
        value, stride = term
        if isinstance(value, int):
            const += value * stride
            continue
        part = value if stride == 1 else builder.mul(value, i64(stride), flags=("nsw",))
        acc = part if acc is None else builder.add(acc, part, flags=("nsw",))
    if acc is None:
        return i64(const)
    return builder.add(acc, i64(const), flags=("nsw",)) if const else acc


# ---- vectors and intrinsics -----------------------------------------------------------------


def vec(elem: ir.Type, lanes: int) -> ir.VectorType:
    return ir.VectorType(elem, lanes)


@functools.lru_cache(maxsize=4096)
def vconst(elem: ir.Type, values: tuple[int, ...]) -> ir.Constant:
    """The constant vector <values> of `elem`, made once: llvmlite builds a Python constant
    per lane, which made masks and shuffle patterns a third of a ResNet's lowering time
    (constants have no parent, so one object serves every module)."""
    if not any(values):
        return ir.Constant(vec(elem, len(values)), None)  # prints as zeroinitializer
    return ir.Constant(vec(elem, len(values)), list(values))


def _suffix(ty: ir.Type) -> str:
    if isinstance(ty, ir.VectorType):
        return f"v{ty.count}{_suffix(ty.element)}"
    if isinstance(ty, ir.PointerType):
        return "p0"
    return {F32: "f32", F64: "f64", I32: "i32", I64: "i64", I1: "i1"}[ty]


def intrinsic(
    module: ir.Module,
    base: str,
    ret: ir.Type,
    args: Sequence[ir.Type],
    overloads: Sequence[ir.Type],
) -> ir.Function:
    """Declare (once) the intrinsic `base` mangled with `overloads`, e.g.
    intrinsic(m, "llvm.fmuladd", v16, [v16]*3, [v16]) -> @llvm.fmuladd.v16f32."""
    name = ".".join([base, *(_suffix(t) for t in overloads)])
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    return ir.Function(module, ir.FunctionType(ret, list(args)), name)


def fmuladd(
    builder: ir.IRBuilder, a: ir.Value, b: ir.Value, c: ir.Value, name: str = ""
) -> ir.Value:
    """a * b + c, fused where the target has FMA (llvm.fmuladd: one rounding with FMA, two
    without; never a slow libm call on a CPU without FMA, unlike llvm.fma)."""
    fn = intrinsic(builder.module, "llvm.fmuladd", a.type, [a.type] * 3, [a.type])
    return builder.call(fn, [a, b, c], name=name)


def maxnum(builder: ir.IRBuilder, a: ir.Value, b: ir.Value, name: str = "") -> ir.Value:
    fn = intrinsic(builder.module, "llvm.maxnum", a.type, [a.type] * 2, [a.type])
    return builder.call(fn, [a, b], name=name)


def relu(builder: ir.IRBuilder, v: ir.Value, name: str = "relu") -> ir.Value:
    """max(v, 0) as the numpy reference computes it: NaN stays NaN (np.maximum propagates)."""
    zero = ir.Constant(v.type, None)
    keep = builder.fcmp_unordered(">", v, zero, name=f"{name}.keep")  # true for v > 0 or NaN
    return builder.select(keep, v, zero, name=name)


def splat(builder: ir.IRBuilder, scalar: ir.Value, lanes: int, name: str = "") -> ir.Value:
    """<lanes x T> with every lane = scalar (insertelement + zero shuffle: a broadcast)."""
    vt = vec(scalar.type, lanes)
    one = builder.insert_element(ir.Constant(vt, ir.Undefined), scalar, ir.Constant(I32, 0))
    zeros = vconst(I32, (0,) * lanes)
    return builder.shuffle_vector(one, ir.Constant(vt, ir.Undefined), zeros, name=name)


def lane_mask(active: int | tuple[int, int], lanes: int) -> ir.Constant:
    """<lanes x i1>: the first `active` lanes on, or lanes [lo, hi) for a pair."""
    lo, hi = (0, active) if isinstance(active, int) else active
    return vconst(I1, tuple(1 if lo <= i < hi else 0 for i in range(lanes)))


def _full(active: int | tuple[int, int] | None, lanes: int) -> bool:
    if active is None:
        return True
    lo, hi = (0, active) if isinstance(active, int) else active
    return lo <= 0 and hi >= lanes


def with_align(call: ir.CallInstr, arg: int, align: int) -> ir.CallInstr:
    """`call` with argument `arg` marked aligned to `align` bytes."""
    attrs = call.arg_attributes.setdefault(arg, ir.values.ArgumentAttributes())
    attrs.align = align
    return call


def load_vec(
    builder: ir.IRBuilder,
    ptr: ir.Value,
    vt: ir.VectorType,
    active: int | tuple[int, int] | None = None,
    name: str = "",
) -> ir.Value:
    """Load `vt` from `ptr` (element alignment only). With `active` (a lane count, or a
    [lo, hi) lane range) a masked load: the other lanes read as zero and touch no memory,
    so a tail or a window hanging over a row edge never faults."""
    align = _elem_size(vt.element)
    if _full(active, vt.count):
        return builder.load(ptr, typ=vt, align=align, name=name)
    fn = intrinsic(builder.module, "llvm.masked.load", vt, [PTR, vec(I1, vt.count), vt], [vt, PTR])
    call = builder.call(fn, [ptr, lane_mask(active, vt.count), ir.Constant(vt, None)], name=name)
    return with_align(call, 0, align)


def load_vec_where(
    builder: ir.IRBuilder,
    ptr: ir.Value,
    vt: ir.VectorType,
    active: int | tuple[int, int] | None,
    cond: ir.Value,
    name: str = "",
) -> ir.Value:
    """load_vec(ptr, vt, active) where the runtime i1 `cond` holds, else zeros without any
    memory access (a masked load whose mask is selected at runtime)."""
    align = _elem_size(vt.element)
    mask_t = vec(I1, vt.count)
    mask = builder.select(cond, lane_mask(active or vt.count, vt.count), ir.Constant(mask_t, None))
    fn = intrinsic(builder.module, "llvm.masked.load", vt, [PTR, mask_t, vt], [vt, PTR])
    call = builder.call(fn, [ptr, mask, ir.Constant(vt, None)], name=name)
    return with_align(call, 0, align)


def store_vec(
    builder: ir.IRBuilder,
    value: ir.Value,
    ptr: ir.Value,
    active: int | tuple[int, int] | None = None,
) -> None:
    """Store a vector (element alignment only); with `active`, only those lanes."""
    vt = value.type
    align = _elem_size(vt.element)
    if _full(active, vt.count):
        builder.store(value, ptr, align=align)
        return
    fn = intrinsic(
        builder.module, "llvm.masked.store", VOID, [vt, PTR, vec(I1, vt.count)], [vt, PTR]
    )
    call = builder.call(fn, [value, ptr, lane_mask(active, vt.count)])
    with_align(call, 1, align)


def _elem_size(ty: ir.Type) -> int:
    return {F32: 4, F64: 8, I32: 4, I64: 8}[ty]


def hsum(builder: ir.IRBuilder, v: ir.Value, name: str = "hsum") -> ir.Value:
    """Sum of the lanes of `v` by halving (lanes [0:n/2] + [n/2:n], recursively): a fixed
    order, so the result does not depend on anything but the input."""
    n = v.type.count
    while n > 1:
        half = n // 2
        lo = builder.shuffle_vector(v, v, vconst(I32, tuple(range(half))))
        hi = builder.shuffle_vector(v, v, vconst(I32, tuple(range(half, n))))
        v = builder.fadd(lo, hi, name=f"{name}.{half}")
        n = half
    return builder.extract_element(v, ir.Constant(I32, 0), name=name)


# ---- locals ---------------------------------------------------------------------------------


def entry_alloca(builder: ir.IRBuilder, ty: ir.Type, name: str, align: int | None = None):
    """A stack slot at the top of the function's entry block, wherever `builder` is.

    Loop-carried values (accumulators) live in such slots: emitters load and store them
    freely and SROA/mem2reg turns them into registers and phis, which keeps the emitters free
    of phi bookkeeping.
    """
    entry = builder.function.entry_basic_block
    if builder.block is entry:
        slot = builder.alloca(ty, name=name)
    else:
        # A second builder: inserting through `builder` at another position would leave its
        # own insertion point (an index into its block) stale.
        eb = ir.IRBuilder(entry)
        eb.position_at_start(entry)
        slot = eb.alloca(ty, name=name)
    if align:
        slot.align = align
    slot.type = PTR  # llvmlite types allocas as typed pointers; graphc uses opaque ones only
    return slot


def lane_sums(builder: ir.IRBuilder, vectors: list[ir.Value], name: str = "lsum") -> ir.Value:
    """Lane sums of up to `lanes` vectors at once: result lane s = sum of the lanes of
    vectors[s] (a power-of-two count; pad with zero vectors).

    Pairs of vectors are merged by adding their halves (`lo` halves of both, then `hi`
    halves), so each step halves the work per source; then the last vector is folded inside
    its blocks. About 3 instructions per sum instead of 2*log2(lanes) for one `hsum` each,
    and the same fixed order of additions every time.
    """
    count = len(vectors)
    lanes = vectors[0].type.count
    if count & (count - 1) or count > lanes:
        raise ValueError(f"lane_sums needs a power-of-two count <= {lanes}, got {count}")
    b = builder
    cur, sources = list(vectors), 1
    while len(cur) > 1:
        w = lanes // sources  # block of lanes per source in each vector of `cur`
        lo = [s * w + j for s in range(sources) for j in range(w // 2)]
        hi = [i + w // 2 for i in lo]
        lo_mask = vconst(I32, tuple(lo + [lanes + i for i in lo]))
        hi_mask = vconst(I32, tuple(hi + [lanes + i for i in hi]))
        cur = [
            b.fadd(
                b.shuffle_vector(x, y, lo_mask),
                b.shuffle_vector(x, y, hi_mask),
                name=f"{name}.{2 * sources}",
            )
            for x, y in zip(cur[0::2], cur[1::2], strict=True)
        ]
        sources *= 2
    v, n = cur[0], lanes
    while n > sources:  # fold the remaining blocks; the vector shrinks to one lane per source
        w = n // sources
        lo = [s * w + j for s in range(sources) for j in range(w // 2)]
        hi = [i + w // 2 for i in lo]
        v = b.fadd(
            b.shuffle_vector(v, v, vconst(I32, tuple(lo))),
            b.shuffle_vector(v, v, vconst(I32, tuple(hi))),
            name=f"{name}.w{w // 2}",
        )
        n //= 2
    return v


def memset_zero(builder: ir.IRBuilder, ptr: ir.Value, nbytes: int) -> None:
    """llvm.memset(ptr, 0, nbytes): one instruction, usable where no loop can go."""
    fn = intrinsic(builder.module, "llvm.memset", VOID, [PTR, ir.IntType(8), I64, I1], [PTR, I64])
    builder.call(fn, [ptr, ir.Constant(ir.IntType(8), 0), i64(nbytes), ir.Constant(I1, 0)])


def transpose_square(builder: ir.IRBuilder, rows: list[ir.Value]) -> list[ir.Value]:
    """Transpose an L x L block held as L vectors of L lanes (L a power of two).

    Stage k swaps bit k of the row index with bit k of the lane index: rows i and i | 2^k
    exchange the lanes whose bit k differs, one two-source shuffle per output row, so
    log2(L) * L shuffles in all.
    """
    n = len(rows)
    if n & (n - 1) or any(r.type.count != n for r in rows):
        raise ValueError("transpose_square needs L vectors of L lanes, L a power of two")
    rows = list(rows)
    k = 1
    while k < n:
        out = list(rows)
        for i in range(n):
            if i & k:
                continue
            j = i | k
            # lanes 0..n-1 index rows[i], n..2n-1 index rows[j]
            lo = [b if not b & k else n + (b ^ k) for b in range(n)]
            hi = [(b | k) if not b & k else n + b for b in range(n)]
            out[i] = builder.shuffle_vector(rows[i], rows[j], vconst(I32, tuple(lo)))
            out[j] = builder.shuffle_vector(rows[i], rows[j], vconst(I32, tuple(hi)))
        rows = out
        k <<= 1
    return rows


def scatter(
    builder: ir.IRBuilder,
    value: ir.Value,
    base: ir.Value,
    offsets: Sequence[int],
    mask: int | tuple[int, int] | ir.Value | None = None,
) -> None:
    """Store lane q of `value` to base[offsets[q]] (in elements) for the lanes in `mask`
    (a lane count, a lane range, or a runtime <n x i1>): one llvm.masked.scatter."""
    vt = value.type
    n = vt.count
    ptrs_t = vec(PTR, n)
    ptrs = builder.gep(base, [vconst(I64, tuple(offsets))], source_etype=vt.element)
    ptrs.type = ptrs_t  # a scalar base with a vector of offsets is a vector of pointers
    if mask is None or isinstance(mask, int | tuple):
        mask = lane_mask(n if mask is None else mask, n)
    fn = intrinsic(
        builder.module, "llvm.masked.scatter", VOID, [vt, ptrs_t, vec(I1, n)], [vt, ptrs_t]
    )
    with_align(builder.call(fn, [value, ptrs, mask]), 1, _elem_size(vt.element))


def lanes_below(builder: ir.IRBuilder, count: ir.Value, lanes: int) -> ir.Value:
    """<lanes x i1>: lane q is on when q < count (a runtime i64)."""
    iota = vconst(I64, tuple(range(lanes)))
    return builder.icmp_signed("<", iota, splat(builder, count, lanes), name="lanes.live")


class FunctionPointer:
    """An opaque `ptr` called as a function of type `function_type`: llvmlite.ir takes the
    callee's signature from its pointee type, which an opaque pointer does not have."""

    def __init__(self, ptr: ir.Value, function_type: ir.FunctionType):
        self.ptr, self.function_type, self.type = ptr, function_type, ptr.type

    def get_reference(self) -> str:
        return self.ptr.get_reference()
