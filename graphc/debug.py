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
    print(
        f"graphc: compiled {name} in {total * 1e3:.1f} ms ({parts}); "
        f"{len(entry.graph.nodes)} nodes",
        file=err,
    )
    native = getattr(entry.executable, "timings", None)  # the native backend's own split
    if native:
        steps = ", ".join(
            f"{k.replace('_', ' ')} {v * 1e3:.1f} ms" for k, v in native.items() if k != "cache"
        )
        parts = getattr(entry.executable, "compile_parts", 1)
        split = f", compiled in {parts} parts" if parts > 1 else ""
        print(f"graphc:   backend: cache {native['cache']}{split}; {steps}", file=err)
        for problem in getattr(entry.executable, "compile_problems", ()):
            print(
                f"graphc:   backend: a compile helper failed ({problem}); compiled here", file=err
            )
