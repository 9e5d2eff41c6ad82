"""A helper process that compiles some of a step's kernel modules while its parent compiles
the rest (codegen/jit.py, HelperProcess): llvmlite holds one lock around every LLVM call, so
a second thread could not help, but a second process can.

stdin: one line of JSON ({"target": the Target's fields, "opt": level, "bytes": [n, ...]}),
then the IR text of each module, n bytes each (read by count, not to end-of-file: a process
forked meanwhile may hold the pipe open). stdout, per module in order: FRAME (magic, length
of what follows), a 4-byte little-endian length and that much JSON (the module's
CompileTimes), then the object code. Exit status 0, or 1 with the reason on stderr.
"""

from __future__ import annotations

import dataclasses
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
        sizes = [int(n) for n in header["bytes"]]
        texts = []
        for n in sizes:
            data = sys.stdin.buffer.read(n)
            if len(data) != n:
                raise EOFError(f"expected {n} bytes of IR, got {len(data)}")
            texts.append(data.decode())
        jit.load_system_libraries()
        target, opt = Target(**header["target"]), int(header["opt"])
        out = []
        for text in texts:
            times = jit.CompileTimes()
            obj = jit.emit_object(text, target, opt, times)
            stamp = json.dumps(dataclasses.asdict(times)).encode()
            body = len(stamp).to_bytes(4, "little") + stamp + obj
            out.append(FRAME.pack(MAGIC, len(body)) + body)
    except Exception as e:  # any failure: the parent compiles these modules itself
        print(f"graphc compile worker: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(b"".join(out))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
