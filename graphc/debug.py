"""GRAPHC_DEBUG, to stderr: 1 pass and compile times, 2 the IR after each pass, 3 the LLVM IR,
4 the assembly; each level includes the ones below it.

Levels 3 and 4 need native code: the native backend (codegen/backend.py) attaches the module's
LLVM IR as generated (before LLVM's optimisation) and the host assembly to the executable as
`debug_sections`, and they are printed here, after the IR of the passes."""

from __future__ import annotations

import os
import sys


def level() -> int:
    try:
        return int(os.environ.get("GRAPHC_DEBUG", "0"))
    except ValueError:
        return 0


def report_compile(name: str, entry) -> None:
    lvl = level()
    if lvl < 1:
        return
    err = sys.stderr
    if lvl >= 2:
        from graphc.inspection.text import graph_text

        for stage, graph in entry.pipeline.snapshots.items():
            print(f"# ---- {name}: IR after {stage} ----", file=err)
            print(graph_text(graph), file=err)
    if lvl >= 3:
        sections = getattr(entry.executable, "debug_sections", None)
        if sections is None:
            print(f"# ---- {name}: no LLVM IR: this step runs on the interpreter ----", file=err)
        for title, text in sections or ():
            print(f"# ---- {name}: {title} ----", file=err)
            print(text, file=err)
    total = sum(entry.timings.values())
    parts = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in entry.timings.items())
    if entry.planned_pipeline is not None:
        nodes = f"{len(entry.graph.nodes)} nodes"
    else:  # a warm start ran no pass: do not run them just to count
        nodes = f"{len(entry.traced.nodes)} traced nodes, no pass run (cached)"
    print(f"graphc: compiled {name} in {total * 1e3:.1f} ms ({parts}); {nodes}", file=err)
    native = getattr(entry.executable, "timings", None)  # the native backend's own split
    if native:
        steps = ", ".join(
            f"{k.replace('_', ' ')} {v * 1e3:.1f} ms" for k, v in native.items() if k != "cache"
        )
        parts = getattr(entry.executable, "compile_parts", 1)
        split = f", compiled in {parts} parts" if parts > 1 else ""
        print(f"graphc:   backend: cache {native['cache']}{split}; {steps}", file=err)
        report = getattr(entry.executable, "compile_report", None)
        if report is not None:
            _report_kernels(report, err)
        for problem in getattr(entry.executable, "compile_problems", ()):
            print(
                f"graphc:   backend: a compile helper failed ({problem}); compiled here", file=err
            )


def _report_kernels(report, err) -> None:
    """The backend's work per kernel code: what was compiled, and the costliest codes."""
    e = report.entry
    objects = f"{report.objects} object{'s' if report.objects != 1 else ''}"
    print(
        f"graphc:   kernels: {report.kernels} in the schedule, {report.distinct} distinct "
        f"code{'s' if report.distinct != 1 else ''} ({report.cached} from the cache, "
        f"{len(report.rows)} compiled in {objects}); entry "
        f"{e.instructions} instructions, optimize {e.optimize * 1e3:.1f} ms, "
        f"machine code {e.codegen * 1e3:.1f} ms",
        file=err,
    )
    for r in report.top():
        users = r.users[0] + (f" and {len(r.users) - 1} more" if len(r.users) > 1 else "")
        print(
            f"graphc:     {r.total * 1e3:7.1f} ms  {r.symbol} ({users}): "
            f"{r.instructions} instructions, lower {r.lower * 1e3:.1f} ms, "
            f"optimize {r.optimize * 1e3:.1f} ms, machine code {r.codegen * 1e3:.1f} ms",
            file=err,
        )
