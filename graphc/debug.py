"""GRAPHC_DEBUG, to stderr: 1 pass and compile times, 2 the IR after each pass, 3 the LLVM IR,
4 the assembly (levels 3 and 4 are printed by codegen)."""

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
        for stage, graph in entry.pipeline.snapshots.items():
            print(f"# ---- {name}: IR after {stage} ----", file=err)
            print(graph, file=err)
    total = sum(entry.timings.values())
    parts = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in entry.timings.items())
    print(
        f"graphc: compiled {name} in {total * 1e3:.1f} ms ({parts}); "
        f"{len(entry.graph.nodes)} nodes",
        file=err,
    )
