"""A helper process that compiles one part of a step's LLVM IR while its parent compiles the
rest (codegen/jit.py, HelperProcess): llvmlite holds one lock around every LLVM call, so a
second thread could not help, but a second process can.

stdin: one line of JSON ({"target": the Target's fields, "opt": level, "bytes": n}), then n
bytes of IR text (read by count, not to end-of-file: a process forked meanwhile may hold the
pipe open). stdout: FRAME (the object's length), then the object code. Exit status 0, or 1
with the reason on stderr.
"""

from __future__ import annotations

import json
import struct
import sys

FRAME = struct.Struct("<8sQ")  # magic, length of the object that follows
MAGIC = b"GRAPHC-O"


def main() -> int:
    from graphc.codegen import jit
    from graphc.codegen.target import Target

    try:
        header = json.loads(sys.stdin.buffer.readline())
        data = sys.stdin.buffer.read(int(header["bytes"]))
        if len(data) != int(header["bytes"]):
            raise EOFError(f"expected {header['bytes']} bytes of IR, got {len(data)}")
        jit.load_system_libraries()
        obj = jit.emit_object(data.decode(), Target(**header["target"]), int(header["opt"]))
    except Exception as e:  # any failure: the parent compiles this part itself
        print(f"graphc compile worker: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(FRAME.pack(MAGIC, len(obj)) + obj)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
