"""The status line of a long compile (graphc/status.py): shown on a terminal after a delay,
where the compile is, erased at the end; plain lines for logs only when asked; nothing for
a short compile."""

from __future__ import annotations

import io
import time

import pytest

import graphc
from graphc import status
from graphc.codegen.backend import native_executable
from graphc.frontend.compile import CompiledFunction
from graphc.passes import PIPELINE


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setattr(status, "DELAY", 0.05)
    monkeypatch.setattr(status, "_REDRAW", 0.02)
    monkeypatch.setattr(status, "_report_to", None)


def test_a_long_compile_shows_where_it_is_then_erases_the_line(quick):
    out = Terminal()
    with status.compiling("train_step", out):
        status.update("lowering", 3, 10)
        time.sleep(0.3)
    text = out.getvalue()
    assert "\rgraphc: compiling train_step: lowering 3/10 " in text
    last = text.rsplit("\r", 2)
    assert last[-1] == "" and last[-2].strip() == ""  # the line is blanked at the end


def test_a_short_compile_prints_nothing(quick):
    out = Terminal()
    with status.compiling("step", out):
        status.update("lowering", 1, 2)
    assert out.getvalue() == ""


def test_nothing_off_a_terminal_unless_lines_are_asked_for(quick):
    quiet = io.StringIO()
    with status.compiling("step", quiet):
        time.sleep(0.2)
    assert quiet.getvalue() == ""
    log = io.StringIO()
    with status.reporting_to(log), status.compiling("step"):
        status.update("LLVM", 4, 9)
        time.sleep(0.2)
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in log.getvalue()
    assert lines[0].startswith("graphc: compiling step: LLVM 4/9 ")
    assert lines[1].startswith("graphc: compiled step in ")


def test_updates_outside_a_compile_are_ignored_and_compiles_do_not_nest(quick):
    status.update("lowering", 1, 1)  # no compile: nothing to show, no error
    out, inner = Terminal(), Terminal()
    with status.compiling("outer", out):
        with status.compiling("inner", inner):
            status.update("tracing")
            time.sleep(0.2)
    assert inner.getvalue() == "" and "compiling outer: tracing" in out.getvalue()


def test_a_compiled_step_reports_its_stages(quick, monkeypatch, tmp_path):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(status, "DELAY", 0.0)
    seen = []
    monkeypatch.setattr(status._Status, "text", lambda self: seen.append(self.stage) or "")
    monkeypatch.setattr("sys.stderr", Terminal())
    step = CompiledFunction(lambda x: (x * 2).relu().sum(), backend=native_executable)
    assert step(graphc.ones(4, 5)).item() == 40.0
    stages = {s[0] for s in seen}
    assert stages, "the status thread never drew"
    # what was shown were stages the compiler reported (which ones depends on timing)
    known = {"tracing", "kernel cache", "lowering"} | {f"pass {name}" for name, _ in PIPELINE}
    assert all(s in known or s.startswith("LLVM") for s in stages), stages
