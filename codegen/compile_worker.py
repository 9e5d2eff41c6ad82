"""A helper process that compiles one part of a step's LLVM IR while its parent compiles the
rest (codegen/jit.py, HelperProcess): llvmlite holds one lock around every LLVM call, so a
second thread could not help, but a second process can.

stdin: one line of JSON ({"target": the Target's fields, "opt": level}), then the IR text.
stdout: the object code. Exit status 0, or 1 with the reason on stderr.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    from graphc.codegen import jit
    from graphc.codegen.target import Target

    try:
        header = json.loads(sys.stdin.buffer.readline())
        text = sys.stdin.buffer.read().decode()
        obj = jit.emit_object(text, Target(**header["target"]), int(header["opt"]))
    except Exception as e:  # any failure: the parent compiles this part itself
        print(f"graphc compile worker: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(obj)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
