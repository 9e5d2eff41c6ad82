"""Compiling part of a step in forked processes: each lowers and compiles its share of the
kernel bundles while this process does the rest.

llvmlite holds one lock around every LLVM call, so a second thread cannot share the work, but
a second process can; a forked one starts at once (no interpreter to start, nothing to
import or to send: it has the planned graph already) and lowers its own bundles too, so the
Python half of code generation is shared as well as LLVM's. It sends back, through a pipe:
first the records of its kernel codes (what the entry needs to call them: this process
writes the entry meanwhile), then each bundle's object code and compile times.

Frames: MAGIC, a kind byte, a u64 length, then that many bytes:
    R  JSON: [[record, ...] per bundle]       (codegen/lower.KernelModule.record)
    O  u32 length + JSON CompileTimes, then the object code, once per bundle, in order
    E  UTF-8: what went wrong (the child then exits with status 1)

The child never writes anywhere else and leaves through os._exit: it must not flush this
process's buffers or run its exit handlers a second time. Anything that goes wrong with a
child (it dies, hangs past its time, writes something else) only means this process lowers
and compiles that share itself; the reason is reported (GRAPHC_DEBUG=1).
"""

from __future__ import annotations

import json
import os
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

from graphc.codegen import jit

MAGIC = b"GRAPHC-P"
_HEAD = struct.Struct("<8scQ")

# A child gets this long, plus SLACK times what this process took for the same stage of
# its own share, before it is killed and its share done here (a loaded machine slows both).
TIMEOUT_S = 30.0
SLACK = 4.0


def fork_possible() -> bool:
    """Linux's fork (the compiling state is shared by copy-on-write); elsewhere one process
    compiles everything."""
    return hasattr(os, "fork") and sys.platform.startswith("linux")


Work = Callable[[Callable[[bytes, bytes], None]], None]


class Part:
    """A forked child running `work(send)`, where `send(kind, payload)` writes one frame.
    Frames arrive here on a reader thread as soon as they are written."""

    def __init__(self, work: Work) -> None:
        read_end, write_end = os.pipe()
        # Our own LLVM lock is held across the fork, so no thread of this process is inside
        # LLVM while the child's copy of memory is taken.
        with jit._LOCK:
            pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(read_end)
            _child(write_end, work)
        os.close(write_end)
        self.pid = pid
        self.frames: list[tuple[bytes, bytes]] = []
        self.problem: str | None = None
        self._changed = threading.Condition()
        self._done = False
        self._reader = threading.Thread(
            target=self._read, args=(read_end,), name="graphc-part", daemon=True
        )
        self._reader.start()

    def _read(self, fd: int) -> None:
        buf = bytearray()
        with os.fdopen(fd, "rb") as f:
            while chunk := f.read1(1 << 20):
                buf += chunk
                while len(buf) >= _HEAD.size:
                    magic, kind, length = _HEAD.unpack_from(buf)
                    if magic != MAGIC:
                        self._finish(f"wrote {len(buf)} bytes that are not a frame")
                        return
                    if len(buf) < _HEAD.size + length:
                        break
                    payload = bytes(buf[_HEAD.size : _HEAD.size + length])
                    del buf[: _HEAD.size + length]
                    with self._changed:
                        self.frames.append((kind, payload))
                        self._changed.notify_all()
        self._finish(f"stopped in the middle of a frame ({len(buf)} bytes)" if buf else None)

    def _finish(self, problem: str | None) -> None:
        with self._changed:
            self.problem = self.problem or problem
            self._done = True
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float) -> list[tuple[bytes, bytes]]:
        """The first `count` frames; JitError if the child fails, stops short or takes
        longer than `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.frames) < count and not self._done:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise jit.JitError(f"compile part timed out after {timeout:.0f} s")
                self._changed.wait(left)
            frames = list(self.frames)
        for kind, payload in frames[:count]:
            if kind == b"E":
                raise jit.JitError(f"compile part failed: {payload.decode(errors='replace')}")
        if len(frames) < count:
            raise jit.JitError(
                f"compile part ended after {len(frames)} of {count} results"
                + (f": {self.problem}" if self.problem else "")
            )
        return frames[:count]

    def kill(self) -> None:
        """End the child (if it still runs) and reap it."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        self._reader.join(timeout=5)


def _child(fd: int, work: Work) -> None:
    status = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends the child at once
        out = os.fdopen(fd, "wb", buffering=0)

        def send(kind: bytes, payload: bytes) -> None:
            out.write(_HEAD.pack(MAGIC, kind, len(payload)) + payload)

        try:
            work(send)
            status = 0
        except BaseException as e:  # any failure: the parent does this share itself
            send(b"E", f"{type(e).__name__}: {e}".encode())
    finally:
        os._exit(status)


# ---- what a part does: lower its bundles, say how to call them, compile them ----------------


def compile_work(lw, bundles: Sequence) -> Work:
    """The work of a part that lowers and compiles `bundles` of Lowering `lw` (see lower.py)."""

    def work(send: Callable[[bytes, bytes], None]) -> None:
        from graphc.codegen.lower import emit_bundles

        emitted = emit_bundles(lw, bundles)
        records = [[c.record() for c in e.codes] for e in emitted]
        send(b"R", json.dumps(records).encode())
        for e in emitted:
            times = jit.CompileTimes()
            obj = jit.emit_object(e.module, lw.target, e.opt, times, unroll=e.unroll, light=e.light)
            stamp = json.dumps(asdict(times)).encode()
            send(b"O", struct.pack("<I", len(stamp)) + stamp + obj)

    return work


def records_of(frame: tuple[bytes, bytes], bundles: Sequence) -> list[list[dict]]:
    """The records of a part's first frame, checked against the bundles it was given."""
    kind, payload = frame
    try:
        records = json.loads(payload) if kind == b"R" else None
    except ValueError:
        records = None
    if not isinstance(records, list) or len(records) != len(bundles):
        raise jit.JitError("compile part sent no records for its bundles")
    for recs, bundle in zip(records, bundles, strict=True):
        if [r.get("digest") for r in recs] != list(bundle.digests):
            raise jit.JitError("compile part sent records of other kernel codes")
    return records


def object_of(frame: tuple[bytes, bytes]) -> tuple[bytes, jit.CompileTimes]:
    """A bundle's object code and compile times from a part's frame."""
    kind, payload = frame
    try:
        (n,) = struct.unpack_from("<I", payload)
        times = jit.CompileTimes(**json.loads(payload[4 : 4 + n]))
    except (ValueError, TypeError, struct.error):
        kind = b""
    if kind != b"O" or len(payload) <= 4 + n:
        raise jit.JitError("compile part sent something else than object code")
    return payload[4 + n :], times
