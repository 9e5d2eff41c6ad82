"""The exceptions users see. Each message says what went wrong, where, and what to do."""

from __future__ import annotations


class GraphcError(Exception):
    """Base class of graphc's own errors."""


class ShapeError(GraphcError, ValueError):
    """An op was given inputs whose shapes or dtypes it cannot accept."""


class TraceError(GraphcError, RuntimeError):
    """User code did something a compiled (traced) function cannot express."""


class StateDictError(GraphcError, RuntimeError):
    """load_state_dict was given missing, unexpected or mis-shaped entries."""


class DataError(GraphcError, OSError):
    """A data set or checkpoint file is missing, truncated or not in the expected format."""


class ArgumentError(GraphcError, TypeError):
    """A function was given an argument of a type it cannot use (a list where a tensor goes)."""


class AutogradError(GraphcError, RuntimeError):
    """backward() was asked for something autograd cannot do (a freed graph, no grad_fn)."""


class GraphcWarning(UserWarning):
    """Something graphc worked around but the user should fix (an unwritable cache)."""


# PyTorch's words, in eager and compiled mode alike.
BACKWARD_TWICE = (
    "trying to backward through the graph a second time (its intermediate values were freed "
    "by the first backward()); pass retain_graph=True to the first backward() if you need to "
    "backward through it again"
)


def with_location(err: GraphcError, where: str) -> GraphcError:
    """Returns a copy of `err` whose message ends with the user's source location."""
    msg = str(err)
    if where and where not in msg:
        msg = f"{msg}\n  at {where}"
    new = type(err)(msg)
    new.__cause__ = err.__cause__
    return new
