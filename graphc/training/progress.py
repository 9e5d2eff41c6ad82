"""Progress of a training epoch: a redrawn bar on a terminal, plain lines otherwise.

Our own ~80 lines rather than tqdm or rich: one bar of fixed fields (step, loss, images/s,
ETA) needs no dependency, and the plain-line mode for logs and CI is ours to format.
On a terminal the bar is redrawn at most 10 times a second; elsewhere a line is printed
every `line_interval` seconds (and the epoch summary always follows).
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """`update(done, loss, images_per_second)` after each step; `close()` at the epoch end."""

    def __init__(
        self,
        label: str,
        total: int,
        stream: TextIO | None = None,
        mode: str = "auto",
        line_interval: float = 10.0,
        unit: str = "img/s",
    ) -> None:
        self.stream = stream or sys.stderr
        self.unit = unit
        if mode == "auto":
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "lines"
        self.mode = mode
        self.label = label
        self.total = total
        self.line_interval = line_interval
        self._last_draw = 0.0
        self._start = time.perf_counter()
        self._drawn = False
        encoding = (getattr(self.stream, "encoding", None) or "").lower()
        self._fill, self._empty = ("█", "░") if encoding.startswith("utf") else ("#", ".")

    def update(self, done: int, loss: float, images_per_second: float, force: bool = False) -> None:
        if self.mode == "none":
            return
        now = time.perf_counter()
        interval = 0.1 if self.mode == "bar" else self.line_interval
        if not force and now - self._last_draw < interval and done < self.total:
            return
        self._last_draw = now
        rate = done / max(now - self._start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else 0.0
        fields = (
            f"{done}/{self.total} loss {loss:.4f} {images_per_second:,.0f} {self.unit} "
            f"ETA {format_duration(eta)}"
        )
        if self.mode == "bar":
            self._draw_bar(done, fields)
        elif done < self.total:  # the epoch summary line reports the end
            print(f"{self.label} step {fields}", file=self.stream, flush=True)

    def _draw_bar(self, done: int, fields: str) -> None:
        width = shutil.get_terminal_size((100, 20)).columns
        room = width - len(self.label) - len(fields) - 5
        bar = ""
        if room >= 10:
            n = min(room, 40)
            filled = n * done // max(self.total, 1)
            bar = f" |{self._fill * filled}{self._empty * (n - filled)}|"
        line = f"{self.label}{bar} {fields}"[: width - 1]
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")  # the epoch summary takes the bar's place
            self.stream.flush()
            self._drawn = False
