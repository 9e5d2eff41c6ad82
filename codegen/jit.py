"""Optimise LLVM IR, emit object code, and load object code into the process.

Engine: ORC LLJIT (not MCJIT), for the facts measured in ../shared/notes/llvmlite-facts.md:
- a missing external symbol is a Python RuntimeError with LLJIT, a segfault with MCJIT;
- LLJIT does not take ownership of the TargetMachine (MCJIT does, and a later use of the TM
  segfaults);
- LLJIT links a relocatable object from bytes (`add_object_img`, ~1.7 ms) — the form the
  on-disk cache stores — so a cold compile and a warm cache hit take the same loading path:
  cold = optimise + `emit_object` + `load_object`, warm = `load_object` alone.

LLJIT does not optimise what it is given, so `optimize` runs the new pass manager first.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import llvmlite.binding as llvm
from llvmlite import ir

from graphc.codegen.target import Target, _init_llvm, host_target


class JitError(RuntimeError):
    """LLVM refused a module or an object: invalid IR, missing symbols, failed link."""


@dataclass
class CompileTimes:
    """Seconds spent in each stage of the last compile (for GRAPHC_DEBUG and `graphc inspect`)."""

    parse: float = 0.0
    optimize: float = 0.0
    codegen: float = 0.0
    link: float = 0.0

    @property
    def total(self) -> float:
        return self.parse + self.optimize + self.codegen + self.link

    def __str__(self) -> str:
        ms = {k: 1e3 * v for k, v in vars(self).items()}
        parts = ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items())
        return f"{parts} (total {1e3 * self.total:.1f} ms)"


@functools.cache
def load_system_libraries() -> None:
    """Generated code calls libc (clock_gettime) and libm (tanhf, expf); make their symbols
    visible to the JIT's resolver and to its check for unresolved externals."""
    import ctypes.util

    for name in ("c", "m"):
        path = ctypes.util.find_library(name)
        if path:
            llvm.load_library_permanently(path)


# llvmlite parses into LLVM's global context, which is not thread-safe: one lock around
# everything that touches LLVM state.
_LOCK = threading.RLock()


def parse(module: ir.Module | str) -> llvm.ModuleRef:
    """Parse and verify emitted IR; a bad module raises JitError with LLVM's message."""
    _init_llvm()
    text = str(module)
    with _LOCK:
        try:
            ref = llvm.parse_assembly(text)
            ref.verify()
        except RuntimeError as e:
            raise JitError(f"LLVM rejected the generated IR: {e}") from None
    return ref


# Explicit vector code (a contraction with a tile plan) needs few of -O1's sixty-odd passes:
# its accumulators promoted to registers (sroa), its loops rotated so that the machine-code
# passes hoist and strength-reduce them, the emitter's redundancies combined and its blocks
# merged. Measured on ResNet-20's convolutions: machine code as fast as -O1's, with a quarter
# of its optimisation time (0.27 s against 1.1 s for the 26 codes).
LIGHT_PASSES = ("sroa", "loop_rotate", "instruction_combine", "simplify_cfg")


def optimize(
    ref: llvm.ModuleRef, target: Target, level: int = 3, unroll: bool = True, light: bool = False
) -> None:
    """Run the standard new-pass-manager pipeline `-O<level>` on `ref` in place; without
    `unroll`, loops are vectorised but neither unrolled nor interleaved; with `light`, only
    LIGHT_PASSES run instead."""
    if level <= 0:
        return
    with _LOCK:
        if light:
            pb = llvm.create_pass_builder(
                target.target_machine(opt=level), llvm.create_pipeline_tuning_options(level)
            )
            mpm = llvm.create_new_module_pass_manager()
            for name in LIGHT_PASSES:
                getattr(mpm, f"add_{name}_pass")()
            mpm.run(ref, pb)
            return
        tm = target.target_machine(opt=level)
        pto = llvm.create_pipeline_tuning_options(speed_level=level)
        if not unroll:
            pto.loop_unrolling = False
            pto.loop_interleaving = False
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(ref, pb)


def _check_externals(ref: llvm.ModuleRef, siblings: frozenset[str] = frozenset()) -> None:
    """Refuse a module whose external calls the process cannot resolve, before linking it
    (`siblings`: names other objects of the same library define)."""
    missing = [
        f.name
        for f in ref.functions
        if f.is_declaration
        and not f.name.startswith("llvm.")
        and f.name not in siblings
        and not llvm.address_of_symbol(f.name)
    ]
    if missing:
        raise JitError(
            f"unresolved external symbol(s) {', '.join(sorted(missing))}: load the library "
            "that defines them first (llvmlite.binding.load_library_permanently)"
        )


def defined_functions(ref: llvm.ModuleRef) -> list[str]:
    """Names of the functions a module defines with external linkage (what to export)."""
    return [
        f.name for f in ref.functions if not f.is_declaration and f.linkage == llvm.Linkage.external
    ]


def emit_object(
    module: ir.Module | str | llvm.ModuleRef,
    target: Target | None = None,
    opt: int = 3,
    times: CompileTimes | None = None,
    siblings: Iterable[str] = (),
    unroll: bool = True,
    light: bool = False,
) -> bytes:
    """Optimised relocatable object code (ELF on Linux) for `module` (`opt`, `unroll`,
    `light`: see optimize); `siblings` are the functions other objects linked with it define."""
    target = target or host_target()
    times = times if times is not None else CompileTimes()
    t0 = time.perf_counter()
    ref = module if isinstance(module, llvm.ModuleRef) else parse(module)
    with _LOCK:
        ref.triple = target.triple
        t1 = time.perf_counter()
        optimize(ref, target, opt, unroll, light)
        t2 = time.perf_counter()
        _check_externals(ref, frozenset(siblings))
        obj = target.target_machine(opt=max(opt, 0)).emit_object(ref)
        t3 = time.perf_counter()
    times.parse, times.optimize, times.codegen = t1 - t0, t2 - t1, t3 - t2
    return obj


# ---- sharing the work among processes (codegen/parts.py) ------------------------------------


@dataclass
class CompileJob:
    """One module to compile: `size` (its instruction count) predicts what it costs."""

    name: str
    module: ir.Module | str
    size: int


def assign(jobs: Sequence[CompileJob], workers: int, head_start: int = 0) -> list[list[int]]:
    """Job indices per worker, balanced by size (largest first, each to the least loaded);
    worker 0 (this process) starts `head_start` behind, for what else it must do."""
    loads = [head_start] + [0] * (workers - 1)
    out: list[list[int]] = [[] for _ in range(workers)]
    for i in sorted(range(len(jobs)), key=lambda i: (-jobs[i].size, i)):
        w = min(range(workers), key=lambda w: (loads[w], w))
        out[w].append(i)
        loads[w] += jobs[i].size
    return out


def emit_assembly(
    module: ir.Module | str,
    target: Target | None = None,
    opt: int = 3,
    unroll: bool = True,
    light: bool = False,
) -> str:
    """The machine code for `module` as assembly text (for `graphc inspect`)."""
    target = target or host_target()
    ref = parse(module)
    optimize(ref, target, opt, unroll, light)
    with _LOCK:
        return target.target_machine(opt=opt).emit_assembly(ref)


def optimized_ir(
    module: ir.Module | str,
    target: Target | None = None,
    opt: int = 3,
    unroll: bool = True,
    light: bool = False,
) -> str:
    """The LLVM IR of `module` after the optimisation pipeline."""
    target = target or host_target()
    ref = parse(module)
    optimize(ref, target, opt, unroll, light)
    return str(ref)


# ---- loading ----------------------------------------------------------------------------------

_LIB_IDS = itertools.count()
_LLJIT: llvm.LLJIT | None = None


def _lljit() -> llvm.LLJIT:
    """The process's LLJIT. Libraries keep a reference to it, so it outlives every library."""
    global _LLJIT
    if _LLJIT is None:
        _init_llvm()
        # The TM only matters for IR added to the JIT; we add finished objects.
        _LLJIT = llvm.create_lljit_compiler(host_target().target_machine(), suppress_errors=True)
    return _LLJIT


@dataclass(eq=False)
class JitLibrary:
    """Loaded machine code. Function addresses stay valid while this object is alive."""

    name: str
    objects: tuple[bytes, ...]  # the relocatable objects it was linked from
    addresses: dict[str, int]
    times: CompileTimes = field(default_factory=CompileTimes)
    _tracker: object = field(default=None, repr=False)
    _engine: object = field(default=None, repr=False)

    def address(self, symbol: str) -> int:
        try:
            return self.addresses[symbol]
        except KeyError:
            raise KeyError(
                f"{symbol!r} is not exported by JIT library {self.name}; "
                f"it has {sorted(self.addresses)}"
            ) from None


def load_object(
    obj: bytes | Sequence[bytes], symbols: Iterable[str], times: CompileTimes | None = None
) -> JitLibrary:
    """Link an object produced by `emit_object` (possibly in another process, e.g. read from
    the compile cache), or several that make one program, and return the addresses of
    `symbols`."""
    objs = [obj] if isinstance(obj, bytes | bytearray) else list(obj)
    symbols = list(symbols)
    times = times if times is not None else CompileTimes()
    t0 = time.perf_counter()
    with _LOCK:
        engine = _lljit()
        name = f"graphc{next(_LIB_IDS)}"
        builder = llvm.JITLibraryBuilder()
        for o in objs:
            builder.add_object_img(o)
        builder.add_current_process()
        for s in symbols:
            builder.export_symbol(s)
        try:
            tracker = builder.link(engine, name)
        except RuntimeError as e:
            raise JitError(f"could not link the compiled object: {e}") from None
    addresses = {s: tracker[s] for s in symbols}
    zero = [s for s, a in addresses.items() if not a]
    if zero:
        raise JitError(f"symbol(s) {zero} not found in the compiled object")
    times.link = time.perf_counter() - t0
    return JitLibrary(name, tuple(objs), addresses, times, tracker, engine)


def compile_module(
    module: ir.Module | str, target: Target | None = None, opt: int = 3
) -> JitLibrary:
    """Optimise, compile and load `module`; every externally visible function is exported."""
    times = CompileTimes()
    t0 = time.perf_counter()
    ref = parse(module)
    symbols = defined_functions(ref)
    times_parse = time.perf_counter() - t0
    obj = emit_object(ref, target, opt, times)
    times.parse += times_parse
    return load_object(obj, symbols, times)
