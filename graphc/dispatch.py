"""Where an op call goes: eager execution (the default) or whatever mode is active.

Every Tensor operation funnels into `apply(op, inputs, attrs)`. The active `Mode` decides what
it means: `EagerMode` (graphc/autograd.py) runs the numpy reference and records a tape;
the tracing mode (frontend/trace.py) appends a node to the graph being traced. Modes are
per thread (a context variable), so a data-loader thread stays eager while the main thread
traces. Nothing here knows how tracing works; it only asks the mode.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from graphc.ir import Loc
    from graphc.tensor import Tensor


class Mode:
    """The interface a mode implements (see EagerMode and frontend's TraceMode)."""

    def apply(self, op: str, inputs: Sequence[Tensor], attrs: dict[str, Any]) -> Tensor:
        raise NotImplementedError

    def constant(self, array) -> Tensor:
        """A tensor holding literal data (graphc.tensor / from_numpy)."""
        raise NotImplementedError

    def assign(self, target: Tensor, value: Tensor) -> None:
        """In-place update: target takes value's contents (same shape and dtype)."""
        raise NotImplementedError

    def get_grad(self, t: Tensor) -> Tensor | None:
        raise NotImplementedError

    def set_grad(self, t: Tensor, g: Tensor | None) -> None:
        raise NotImplementedError

    def backward(self, t: Tensor, gradient: Tensor | None, retain_graph: bool) -> None:
        raise NotImplementedError

    def concrete(self, t: Tensor, why: str):
        """The numpy value of t (for .item(), .numpy(), bool(t), printing)."""
        raise NotImplementedError

    def runtime_scalars(
        self, fn: Callable[[], Sequence[float]], names: Sequence[str], dtype=None, recipe=None
    ) -> tuple:
        """Values computed on the host for every call (learning rate, bias corrections);
        `recipe` describes what fn computes, for code without Python (host_scalars.py)."""
        raise NotImplementedError

    def rng(self, n: int) -> tuple:
        """(seed, offset) int64 scalar tensors reserving n counters of the default generator."""
        raise NotImplementedError

    def guard(self, fn: Callable[[], Any], what: str) -> Any:
        """Returns fn(); a compiled function re-traces when fn() later returns something else."""
        return fn()

    def note_owner(self, owner: Any) -> None:
        """Told about every Module call and optimizer step (tracing names tensors from them)."""


_mode: ContextVar[Mode | None] = ContextVar("graphc_mode", default=None)
_grad_enabled: ContextVar[bool] = ContextVar("graphc_grad_enabled", default=True)
_eager: Mode | None = None


def current() -> Mode:
    m = _mode.get()
    if m is not None:
        return m
    global _eager
    if _eager is None:
        from graphc.autograd import EagerMode

        _eager = EagerMode()
    return _eager


def is_tracing() -> bool:
    return _mode.get() is not None


@contextlib.contextmanager
def using(mode: Mode) -> Iterator[Mode]:
    token = _mode.set(mode)
    try:
        yield mode
    finally:
        _mode.reset(token)


def apply(op: str, inputs: Sequence[Tensor], **attrs: Any) -> Tensor:
    return current().apply(op, inputs, attrs)


# ---- callbacks after backward -------------------------------------------------------------

# (mode, key, fn) to run right after the next backward() in that mode (in this thread)
_after_backward: ContextVar[tuple] = ContextVar("graphc_after_backward", default=())


def call_after_backward(key: object, fn: Callable[[], None]) -> None:
    """Runs fn() once, right after the next `backward()` in the current mode.

    DistributedDataParallel registers its gradient averaging here from forward(), as
    PyTorch's reducer prepares for backward in forward. The same key registers once.
    Callbacks left over from another mode (a trace that failed) are dropped.
    """
    mode = current()
    pending = tuple(e for e in _after_backward.get() if e[0] is mode)
    if not any(k is key for _, k, _ in pending):
        pending += ((mode, key, fn),)
    _after_backward.set(pending)


def run_after_backward() -> None:
    pending = _after_backward.get()
    if not pending:
        return
    _after_backward.set(())
    mode = current()
    for m, _, fn in pending:
        if m is mode:
            fn()


# ---- gradient mode ------------------------------------------------------------------------


def is_grad_enabled() -> bool:
    return _grad_enabled.get()


class set_grad_enabled(contextlib.ContextDecorator):
    """Context manager and decorator, as torch.set_grad_enabled."""

    def __init__(self, mode: bool) -> None:
        self.mode = bool(mode)
        self._tokens: list = []

    def __enter__(self) -> None:
        self._tokens.append(_grad_enabled.set(self.mode))

    def __exit__(self, *exc: object) -> None:
        _grad_enabled.reset(self._tokens.pop())


class no_grad(set_grad_enabled):
    """Disables gradient recording (context manager or decorator), as torch.no_grad."""

    def __init__(self) -> None:
        super().__init__(False)


class enable_grad(set_grad_enabled):
    def __init__(self) -> None:
        super().__init__(True)


# ---- user source locations ----------------------------------------------------------------

_INTERNAL: tuple[str, ...] = ()
# Model definitions shipped with graphc are user code: their lines are what users want to see.
_USER_FILES = ("graphc/models.py",)


def _internal_dirs() -> tuple[str, ...]:
    global _INTERNAL
    if not _INTERNAL:
        import os

        import graphc
        import graphc.codegen
        import graphc.frontend
        import graphc.passes

        packages = (graphc, graphc.frontend, graphc.passes, graphc.codegen)
        dirs = {os.path.dirname(m.__file__) for m in packages}
        dirs.add(os.path.dirname(contextlib.__file__))  # the stdlib (contextlib, functools)
        _INTERNAL = tuple(sorted(d + os.sep for d in dirs))
    return _INTERNAL


def user_location(skip: int = 1) -> Loc | None:
    """The innermost stack frame outside graphc and the standard library."""
    from graphc.ir import Loc

    internal = _internal_dirs()
    f = sys._getframe(skip)
    while f is not None:
        name = f.f_code.co_filename
        user = not name.startswith(internal) or name.endswith(_USER_FILES)
        if user and not name.startswith("<frozen"):
            return Loc(name, f.f_lineno, f.f_code.co_name)
        f = f.f_back
    return None


def user_error(cls: type[Exception], message: str) -> Exception:
    """An exception of `cls` whose message ends with the user's source line."""
    loc = user_location(2)
    return cls(f"{message}\n  at {loc}" if loc else message)
