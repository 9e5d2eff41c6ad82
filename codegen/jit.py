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

import dataclasses
import functools
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
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


def optimize(ref: llvm.ModuleRef, target: Target, level: int = 3) -> None:
    """Run the standard new-pass-manager pipeline `-O<level>` on `ref` in place."""
    if level <= 0:
        return
    with _LOCK:
        tm = target.target_machine(opt=level)
        pto = llvm.create_pipeline_tuning_options(speed_level=level)
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
) -> bytes:
    """Optimised relocatable object code (ELF on Linux) for `module`; `siblings` are the
    functions other objects linked with it define (see emit_objects)."""
    target = target or host_target()
    times = times if times is not None else CompileTimes()
    t0 = time.perf_counter()
    ref = module if isinstance(module, llvm.ModuleRef) else parse(module)
    with _LOCK:
        ref.triple = target.triple
        t1 = time.perf_counter()
        optimize(ref, target, opt)
        t2 = time.perf_counter()
        _check_externals(ref, frozenset(siblings))
        obj = target.target_machine(opt=max(opt, 0)).emit_object(ref)
        t3 = time.perf_counter()
    times.parse, times.optimize, times.codegen = t1 - t0, t2 - t1, t3 - t2
    return obj


# ---- compiling parts of a module in helper processes -------------------------------------------

# A helper gets this long, plus HELPER_SLACK times what this process's own part took, before
# it is killed and its part compiled here (a loaded machine can slow both alike).
HELPER_TIMEOUT_S = 30.0
HELPER_SLACK = 4.0


def helpers_possible() -> bool:
    """Whether a helper can be this Python: not in a frozen app, whose executable would run
    the app again instead of the worker."""
    return not getattr(sys, "frozen", False) and bool(sys.executable)


class HelperProcess:
    """A `python -m graphc.codegen.compile_worker` child (see compile_worker.py for the
    protocol). Started before the IR is ready so its start-up (an interpreter and the
    imports, ~0.2 s) overlaps the lowering. It imports graphc from this process's sys.path,
    and never starts helpers of its own."""

    def __init__(self, argv: Sequence[str] = ()) -> None:
        """`argv`: another command in the worker's place (tests use broken ones)."""
        from graphc.codegen.compile_worker import FRAME, MAGIC

        self.frame, self.magic = FRAME, MAGIC
        env = dict(os.environ, GRAPHC_COMPILE_JOBS="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.proc = subprocess.Popen(
            list(argv) or [sys.executable, "-P", "-m", "graphc.codegen.compile_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.writer: threading.Thread | None = None
        self.write_error: OSError | None = None

    def send(self, texts: Sequence[str], target: Target, opt: int) -> None:
        """Hands the helper its modules, from a thread: a helper that does not read must not
        block this process (result() then times out)."""
        data = [t.encode() for t in texts]
        header = json.dumps(
            {"target": dataclasses.asdict(target), "opt": opt, "bytes": [len(d) for d in data]}
        )
        stdin = self.proc.stdin
        self.proc.stdin = None  # ours to close (communicate() must not flush it again)

        def write() -> None:
            try:
                stdin.write(header.encode() + b"\n" + b"".join(data))
                stdin.close()
            except OSError as e:  # the helper is gone: result() says so
                self.write_error = e

        self.writer = threading.Thread(target=write, name="graphc-helper-input", daemon=True)
        self.writer.start()
        self.count = len(data)

    def result(self, timeout: float = HELPER_TIMEOUT_S) -> list[tuple[bytes, CompileTimes]]:
        """One (object, times) per module sent, in order."""
        out, err = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            reason = err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
            if self.write_error is not None:
                reason = [f"{reason[0]} ({self.write_error})"]
            raise JitError(f"helper exited with status {self.proc.returncode}: {reason[0]}")
        results = []
        at, head = 0, self.frame.size
        while at < len(out) and len(results) < self.count:
            magic, length = (
                self.frame.unpack(out[at : at + head]) if len(out) >= at + head else (b"", -1)
            )
            if magic != self.magic or length < 0 or at + head + length > len(out):
                break
            body = out[at + head : at + head + length]
            at += head + length
            times_len = int.from_bytes(body[:4], "little")
            times = CompileTimes(**json.loads(body[4 : 4 + times_len]))
            results.append((body[4 + times_len :], times))
        if len(results) != self.count or at != len(out):
            raise JitError(
                f"helper wrote {len(out)} bytes that are not {self.count} framed object(s)"
            )
        return results

    def kill(self) -> None:
        """End the helper (if it still runs) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


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


def emit_objects(
    jobs: Sequence[CompileJob],
    target: Target,
    helpers: Sequence[HelperProcess] = (),
    opt: int = 3,
    times: CompileTimes | None = None,
    head_start: int = 0,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[bytes], list[CompileTimes], list[str]]:
    """Object code for each job, spread over this process and the helpers by size (see
    assign). Returns the objects and each one's times in job order, and what went wrong with
    helpers (empty when nothing did): a helper's jobs are compiled here if it fails. The
    caller kills the helpers when this raises. `progress(k)` is told of each job done here."""
    times = times if times is not None else CompileTimes()
    problems: list[str] = []
    t0 = time.perf_counter()
    shares = assign(jobs, 1 + len(helpers), head_start)
    sent: list[tuple[HelperProcess, list[int]]] = []
    for helper, share in zip(helpers, shares[1:], strict=False):
        if share:
            helper.send([str(jobs[i].module) for i in share], target, opt)
            sent.append((helper, share))
    objs: list[bytes | None] = [None] * len(jobs)
    each: list[CompileTimes | None] = [None] * len(jobs)
    times.parse += time.perf_counter() - t0
    t1 = time.perf_counter()

    def here(i: int) -> None:
        part = CompileTimes()
        objs[i] = emit_object(jobs[i].module, target, opt, part)
        each[i] = part
        times.parse += part.parse
        times.optimize += part.optimize
        times.codegen += part.codegen
        if progress is not None:
            progress(i)

    for i in shares[0]:
        here(i)
    own = time.perf_counter() - t1
    for helper, share in sent:
        try:
            for i, (obj, part) in zip(
                share, helper.result(HELPER_TIMEOUT_S + HELPER_SLACK * own), strict=True
            ):
                objs[i], each[i] = obj, part
                if progress is not None:
                    progress(i)
            continue
        except (JitError, OSError, subprocess.TimeoutExpired) as e:
            problems.append(str(e))
            helper.kill()
        for i in share:
            here(i)
    return [o for o in objs if o is not None], [t for t in each if t is not None], problems


def emit_assembly(module: ir.Module | str, target: Target | None = None, opt: int = 3) -> str:
    """The machine code for `module` as assembly text (for `graphc inspect`)."""
    target = target or host_target()
    ref = parse(module)
    optimize(ref, target, opt)
    with _LOCK:
        return target.target_machine(opt=opt).emit_assembly(ref)


def optimized_ir(module: ir.Module | str, target: Target | None = None, opt: int = 3) -> str:
    """The LLVM IR of `module` after the optimisation pipeline."""
    target = target or host_target()
    ref = parse(module)
    optimize(ref, target, opt)
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
