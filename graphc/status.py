"""A status line while a step compiles for more than a second, so nobody waits in silence.

    graphc: compiling train_step: LLVM 41/89 kernel codes (2 processes) 1.6 s

The compiler says where it is (`update(stage, done, total)`: cheap, from any thread); a
background thread draws it on stderr once the compile has taken `DELAY` seconds, redrawing
at most ten times a second, and `compiling()` erases it when the compile ends. It is drawn
only on a terminal; within `reporting_to(stream)` (`graphc train`) it goes to that stream,
as plain lines when the stream is not a terminal (logs): one when the wait starts, one when
it ends.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

DELAY = 1.0  # seconds of compiling before anything is shown
_REDRAW = 0.1

_report_to: TextIO | None = None
_current: _Status | None = None


@contextlib.contextmanager
def reporting_to(stream: TextIO) -> Iterator[None]:
    """Within the block, long compiles are reported on `stream`, even when it is not a
    terminal (then as a line when the wait starts and one when it ends)."""
    global _report_to
    saved, _report_to = _report_to, stream
    try:
        yield
    finally:
        _report_to = saved


def update(stage: str, done: int | None = None, total: int | None = None) -> None:
    """Where the compile of the current step is; a no-op when nothing is compiling."""
    status = _current
    if status is not None:
        status.stage = (stage, done, total)


@contextlib.contextmanager
def compiling(name: str, stream: TextIO | None = None) -> Iterator[None]:
    """Shows a status line for the compile of `name` while the block runs (if it is long)."""
    global _current
    lines = stream is None and _report_to is not None
    stream = stream or _report_to or sys.stderr
    tty = getattr(stream, "isatty", lambda: False)()
    if _current is not None or not (tty or lines):  # nested compiles: the outer one shows
        yield
        return
    status = _Status(name, stream, tty)
    _current = status
    status.start()
    try:
        yield
    finally:
        _current = None
        status.stop()


class _Status(threading.Thread):
    def __init__(self, name: str, stream: TextIO, tty: bool) -> None:
        super().__init__(name="graphc-compile-status", daemon=True)
        self.label, self.stream, self.tty = name, stream, tty
        self.stage: tuple[str, int | None, int | None] = ("tracing", None, None)
        self.started = time.perf_counter()
        self.done = threading.Event()
        self.shown = False
        self.width = 0

    def text(self) -> str:
        stage, done, total = self.stage
        count = f" {done}/{total}" if done is not None and total else ""
        elapsed = time.perf_counter() - self.started
        return f"graphc: compiling {self.label}: {stage}{count} {elapsed:.1f} s"

    def run(self) -> None:
        if self.done.wait(DELAY):
            return
        if not self.tty:
            self._write(f"{self.text()} ...\n")
            self.shown = True
            return
        while not self.done.is_set():
            line = self.text()
            self._write("\r" + line.ljust(self.width))
            self.width = len(line)
            self.shown = True
            self.done.wait(_REDRAW)

    def stop(self) -> None:
        self.done.set()
        self.join()
        if not self.shown:
            return
        elapsed = time.perf_counter() - self.started
        if self.tty:
            self._write("\r" + " " * self.width + "\r")
        else:
            self._write(f"graphc: compiled {self.label} in {elapsed:.1f} s\n")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: the status is optional
            pass
