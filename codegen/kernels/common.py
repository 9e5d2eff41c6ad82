"""What every contraction kernel shares: `KernelSpec`, the kernel function signature, and a
ctypes runner for tests and benchmarks.

Kernel ABI (the lowering calls exactly this):

    void name(ptr noalias out, ptr noalias in0, ptr noalias in1[, ptr noalias bias],
              i64 lo, i64 hi)

Buffers are row-major and contiguous, aligned to their element size only (numpy buffers are
fine). `[lo, hi)` is a range of the kernel's parallel work units, clamped to
`[0, parallel_extent)`. Every output element is computed inside exactly one unit in an order
fixed at compile time, so any split of the units over threads gives bitwise the same result.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from graphc import dtypes
from graphc.codegen import irutil as U
from graphc.codegen.target import Target


@dataclass(frozen=True)
class KernelSpec:
    """What a kernel is and how it was scheduled; printed by `graphc inspect`."""

    name: str
    op: str
    args: tuple[str, ...]  # pointer argument roles, in order ("out", "x", "w", "bias")
    parallel_extent: int  # number of work units; call with 0 <= lo <= hi <= extent
    unit: str  # what one work unit is ("image", "row block of 4 rows", ...)
    flops: int  # useful floating-point operations of a full call (1 MAC = 2)
    dtype: str
    schedule: str  # human-readable: path, vector width, tile sizes, unrolled loops
    vector_lanes: int = 1  # 1: the scalar generic path
    stack_bytes: int = 0  # scratch the kernel allocates on the stack

    def describe(self) -> str:
        return (
            f"{self.name}: {self.op} {self.dtype}, {self.parallel_extent} units of "
            f"{self.unit}, {self.flops / 1e6:.2f} MFLOP\n  {self.schedule}"
        )


def element_type(dtype) -> tuple[dtypes.DType, ir.Type]:
    """The graphc dtype and LLVM element type of a float dtype given in any spelling."""
    if isinstance(dtype, np.dtype) or (isinstance(dtype, type) and issubclass(dtype, np.generic)):
        d = dtypes.from_numpy(dtype)
    else:
        d = dtypes.get(dtype)
    if d.name not in U.FLOAT_TYPES:
        raise TypeError(f"contraction kernels support float32 and float64, not {d.name}")
    return d, U.FLOAT_TYPES[d.name]


@dataclass
class KernelFunction:
    """A kernel function under construction: its builder, pointer arguments and unit range."""

    fn: ir.Function
    builder: ir.IRBuilder
    ptrs: dict[str, ir.Argument]
    lo: ir.Value  # clamped to [0, extent]
    hi: ir.Value


def define_kernel(
    module: ir.Module, name: str, roles: Sequence[str], extent: int, target: Target
) -> KernelFunction:
    """Declare `void name(ptr..., i64 lo, i64 hi)` and position a builder in its entry."""
    fnty = ir.FunctionType(U.VOID, [U.PTR] * len(roles) + [U.I64, U.I64])
    fn = ir.Function(module, fnty, name)
    fn.attributes.add("nounwind")
    U.set_fn_attrs(fn, target.function_attributes)
    ptrs, lo, hi = _arguments(fn, roles)
    # `entry` holds only stack slots (irutil.entry_alloca) and the clamping of [lo, hi);
    # the kernel body starts in `start`, so slots can be added to `entry` at any time.
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    zero, top = U.i64(0), U.i64(extent)
    lo_c = b.select(b.icmp_signed("<", lo, zero), zero, lo, name="lo.pos")
    hi_c = b.select(b.icmp_signed(">", hi, top), top, hi, name="hi.cap")
    _enter_start(b, fn)
    return KernelFunction(fn, b, ptrs, lo_c, hi_c)


def out_of_line(kf: KernelFunction, suffix: str, body) -> ir.Function:
    """A function `<kernel>.<suffix>` with kf's arguments (its units taken as given: the
    caller's are clamped already) whose body is body(k), for a KernelFunction k of its own.
    For code that runs only in rare cases (a convolution's inf/NaN exact loops): internal,
    cold, never inlined and not optimised, so it costs little compile time."""
    fn = ir.Function(kf.fn.module, kf.fn.function_type, f"{kf.fn.name}.{suffix}")
    fn.linkage = "internal"
    for attr in ("nounwind", "noinline", "optnone", "cold"):
        fn.attributes.add(attr)
    ptrs, lo, hi = _arguments(fn, kf.ptrs)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    _enter_start(b, fn)
    body(KernelFunction(fn, b, ptrs, lo, hi))
    b.ret_void()
    return fn


def _arguments(fn: ir.Function, roles) -> tuple[dict[str, ir.Argument], ir.Argument, ir.Argument]:
    """Names a kernel's arguments (its roles, then lo and hi); its pointers do not alias."""
    ptrs = {}
    for arg, role in zip(fn.args, roles, strict=False):
        arg.name = role
        arg.add_attribute("noalias")
        ptrs[role] = arg
    lo, hi = fn.args[-2], fn.args[-1]
    lo.name, hi.name = "lo", "hi"
    return ptrs, lo, hi


def _enter_start(b: ir.IRBuilder, fn: ir.Function) -> None:
    """Ends `entry` with a branch to a new block `start`, where b goes on."""
    start = fn.append_basic_block("start")
    b.branch(start)
    b.position_at_end(start)


def check_tiles(tiles, op: str, kinds: tuple[type, ...], lanes: int) -> None:
    """A plan from passes/tiles.py must be for this op, of a kind this emitter implements,
    and for vectors of `lanes` (a plan made for other vectors would index out of bounds)."""
    plan = tiles.plan
    if tiles.op != op or (
        plan is not None and (not isinstance(plan, kinds) or tiles.lanes != lanes)
    ):
        raise ValueError(
            f"{op}: cannot emit a {tiles.op} tile plan ({type(plan).__name__}, "
            f"{tiles.lanes} lanes) with vectors of {lanes} lanes"
        )


def stack_array(b: ir.IRBuilder, elem: ir.Type, count: int, name: str) -> ir.Value:
    """A 64-byte aligned stack array of `count` elements, allocated once per call."""
    return U.entry_alloca(b, ir.ArrayType(elem, count), name, align=64)


# ---- calling a kernel from Python (tests, benchmarks) -----------------------------------------


def kernel_cfunc(address: int, spec: KernelSpec):
    """A ctypes function for a kernel at `address` with `spec`'s signature."""
    argtypes = [ctypes.c_void_p] * len(spec.args) + [ctypes.c_int64, ctypes.c_int64]
    return ctypes.CFUNCTYPE(None, *argtypes)(address)


def run_kernel(
    address: int, spec: KernelSpec, *arrays: np.ndarray, lo: int = 0, hi: int | None = None
) -> None:
    """Call a kernel on numpy arrays given in `spec.args` order (checked contiguous and of
    the kernel's dtype: the kernel trusts its arguments)."""
    if len(arrays) != len(spec.args):
        raise TypeError(f"{spec.name} takes {spec.args}, got {len(arrays)} arrays")
    want = np.dtype(dtypes.get(spec.dtype).np)
    for role, a in zip(spec.args, arrays, strict=True):
        if a.dtype != want or not a.flags.c_contiguous:
            raise TypeError(f"{spec.name}: {role} must be a C-contiguous {want} array")
    hi = spec.parallel_extent if hi is None else hi
    kernel_cfunc(address, spec)(*[a.ctypes.data for a in arrays], lo, hi)
