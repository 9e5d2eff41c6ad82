"""Native views of a compiled step: one kernel's optimised LLVM IR and assembly, and a
per-kernel profile against the machine's measured peak.

--llvm and --asm show a kernel's code as compiled: each distinct kernel code is a module of
its own (codegen/lower.py), named by its digest and shared by every kernel of the schedule
that computes the same thing with other buffers, so the header says which code a kernel runs
and who shares it.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphc.inspection.common import InspectError, count, duration, table
from graphc.ir import Graph


def kernel_names(graph: Graph) -> list[str]:
    return [k.name for k in graph.meta["schedule"].kernels]


def check_kernel(graph: Graph, name: str) -> None:
    names = kernel_names(graph)
    if name not in names:
        raise InspectError(
            f"no kernel named {name!r}; this step's kernels are: {', '.join(names)} "
            "(see them with --fusion)"
        )


def native_failure(e: Exception) -> InspectError:
    return InspectError(
        f"native code for this step could not be generated ({type(e).__name__}: {e}); "
        "--llvm, --asm, --profile and `graphc check` need a native lowering for every kernel "
        "(the text, JSON, DOT, --fusion, --memory and --flops views do not)"
    )


def _kernel_module(graph: Graph, name: str):
    """(symbol, module text, header, its bundle) of the code kernel `name` runs."""
    from graphc.codegen.lower import lower

    check_kernel(graph, name)
    try:
        lowered = lower(graph)
    except (ImportError, NotImplementedError) as e:
        raise native_failure(e) from None
    symbol, bundle = lowered.kernel_module(name)
    others = [k for k in lowered.codes[symbol].users if k != name]
    shared = f", shared with {', '.join(others)}" if others else ""
    how = "light passes" if bundle.light else f"-O{bundle.opt}"
    how += "" if bundle.unroll else ", loops not unrolled"
    return symbol, str(bundle.module), f"; {name} runs @{symbol}{shared} ({how})", bundle


def kernel_llvm(graph: Graph, name: str) -> str:
    """The optimised LLVM IR of one kernel (its `define` and any helper it keeps)."""
    from graphc.codegen import jit

    symbol, text, header, e = _kernel_module(graph, name)
    return (
        header + "\n" + _function_ir(jit.optimized_ir(text, None, e.opt, e.unroll, e.light), symbol)
    )


def kernel_asm(graph: Graph, name: str) -> str:
    """The host assembly of one kernel: its symbol's section plus the constants it loads."""
    from graphc.codegen import jit

    symbol, text, header, e = _kernel_module(graph, name)
    return (
        "#"
        + header[1:]
        + "\n"
        + _symbol_asm(jit.emit_assembly(text, None, e.opt, e.unroll, e.light), symbol)
    )


def _function_ir(text: str, name: str) -> str:
    lines = text.splitlines()
    starts = [i for i, s in enumerate(lines) if s.startswith("define ") and f"@{name}(" in s]
    if not starts:  # not expected (the kernel is external), but never hide the code
        return text
    start = starts[0]
    if start > 0 and lines[start - 1].startswith("; Function Attrs"):
        start -= 1
    end = next(i for i in range(start, len(lines)) if lines[i] == "}")
    declares = [s for s in lines if s.startswith("declare ")]
    body = lines[start : end + 1]
    return "\n".join(body + ([""] + declares if declares else []))


def _symbol_asm(text: str, name: str) -> str:
    lines = text.splitlines()
    symbol = re.escape(name)
    starts = [i for i, s in enumerate(lines) if re.match(rf"\s*\.globl\s+{symbol}$", s)]
    ends = [i for i, s in enumerate(lines) if re.match(rf"\s*\.size\s+{symbol},", s)]
    if not starts or not ends:
        return text
    body = lines[starts[0] : ends[-1] + 1]
    used = set(re.findall(r"\.LCPI\d+_\d+", "\n".join(body)))
    pools: list[str] = []
    for i, s in enumerate(lines):
        if s.endswith(":") and s[:-1] in used:
            pools.append(s)
            j = i + 1
            while j < len(lines) and re.match(r"\s+\.(long|quad|short|byte|zero|int)\b", lines[j]):
                pools.append(lines[j])
                j += 1
    return "\n".join(body + (["", "# constants it loads:"] + pools if pools else []))


# ---- profiling ------------------------------------------------------------------------------


@dataclass
class KernelTime:
    name: str
    kind: str
    nanoseconds: int  # summed over the profiled steps
    flops: int  # per step
    schedule: str = ""  # how codegen built it: work units, threads, tiles, vector width


@dataclass
class ProfileReport:
    steps: int
    kernels: list[KernelTime]  # sorted by time, slowest first
    wall_seconds: float  # the whole step, measured from Python, summed over the steps
    peak_gflops: float
    peak_how: str
    notes: list[str] = field(default_factory=list)

    def gflops(self, k: KernelTime) -> float:
        return k.flops * self.steps / k.nanoseconds if k.nanoseconds else 0.0

    def text(self) -> str:
        steps = self.steps
        kernel_ns = sum(k.nanoseconds for k in self.kernels)
        lines = [
            f"profile: {steps} steps; machine peak {self.peak_gflops:.1f} GFLOP/s "
            f"({self.peak_how})",
            f"step {duration(self.wall_seconds / steps)} wall, of which kernels "
            f"{duration(kernel_ns / steps * 1e-9)}",
        ]
        rows = [["kernel", "kind", "time/step", "share", "flops/step", "GFLOP/s", "% peak"]]
        for k in self.kernels:
            rate = self.gflops(k)
            rows.append(
                [
                    k.name,
                    k.kind,
                    duration(k.nanoseconds / steps * 1e-9),
                    f"{100 * k.nanoseconds / kernel_ns:.1f}%" if kernel_ns else "-",
                    count(k.flops),
                    f"{rate:.2f}" if k.flops else "-",
                    f"{100 * rate / self.peak_gflops:.1f}%"
                    if k.flops and self.peak_gflops
                    else "-",
                ]
            )
        lines += table(rows, right={2, 3, 4, 5, 6})
        lines += self.notes
        lines.append("how each kernel was generated (codegen's schedule), slowest first:")
        lines += [f"  {k.name}: {k.schedule}" for k in self.kernels if k.schedule]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "wall_seconds": self.wall_seconds,
            "peak_gflops": self.peak_gflops,
            "peak_how": self.peak_how,
            "kernels": [
                {
                    "name": k.name,
                    "kind": k.kind,
                    "seconds_per_step": k.nanoseconds * 1e-9 / self.steps,
                    "flops": k.flops,
                    "gflops": self.gflops(k),
                    "schedule": k.schedule,
                }
                for k in self.kernels
            ],
        }


def _schedules(graph: Graph) -> list[str]:
    """Codegen's description of each kernel (lowered again: a cache hit skips lowering)."""
    from graphc.codegen.lower import lower

    threads = graph.meta.get("parallel")
    out = []
    for spec, k in zip(lower(graph).specs, graph.meta["schedule"].kernels, strict=True):
        split = threads is not None and k.name in threads.parallel and spec.parallel_extent > 1
        how = "split across threads" if split else "serial"
        out.append(f"{spec.parallel_extent} work unit(s), {how}; {spec.description}")
    return out


def measure_peak(n: int = 1024, repeats: int = 3) -> tuple[float, str]:
    """GFLOP/s of numpy's float32 matrix product (BLAS) on this machine, now: the best of a
    few n x n x n products. numpy's BLAS uses OPENBLAS_NUM_THREADS threads when it is set."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up: thread pool start, page faults
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    threads = os.environ.get("OPENBLAS_NUM_THREADS")
    how = f"numpy sgemm {n}x{n}x{n}, " + (
        f"OPENBLAS_NUM_THREADS={threads}" if threads else "BLAS default threads"
    )
    return 2 * n**3 / best / 1e9, how


def profile(
    graph: Graph, inputs: list[np.ndarray], steps: int, kernel_flops: dict[str, int]
) -> ProfileReport:
    """Runs the step `steps` times (after one warm-up run) on private copies of `inputs` and
    reads the per-kernel nanoseconds the profiling build of the entry accumulates."""
    from graphc.codegen.backend import native_executable

    if steps < 1:
        raise InspectError(f"--profile needs a number of steps >= 1, not {steps}")
    try:
        exe = native_executable(graph, profile=True)
    except (ImportError, NotImplementedError) as e:
        raise native_failure(e) from None
    arrays = [np.array(a, copy=True) for a in inputs]  # updated in place by the steps
    exe(arrays)
    exe.profile[:] = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        exe(arrays)
    wall = time.perf_counter() - t0
    peak, how = measure_peak()
    kernels = [
        KernelTime(k.name, k.kind, int(ns), kernel_flops.get(k.name, 0), schedule)
        for k, ns, schedule in zip(
            graph.meta["schedule"].kernels, exe.profile, _schedules(graph), strict=True
        )
    ]
    kernels.sort(key=lambda k: (-k.nanoseconds, k.name))
    notes = ["(times include one clock read per kernel; state updates ran on copies)"]
    if any(k.flops * steps > peak * k.nanoseconds for k in kernels if k.nanoseconds):
        notes.append(
            "(kernels above 100% outrun numpy's BLAS, which may not use this CPU's widest "
            "vectors or all its cores: % peak is relative to what numpy achieves here)"
        )
    return ProfileReport(steps, kernels, wall, peak, how, notes)
