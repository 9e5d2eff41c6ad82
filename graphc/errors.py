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


class OptionError(GraphcError, ValueError):
    """An option, hyperparameter or environment variable has a value graphc cannot use."""


class GraphcWarning(UserWarning):
    """Something graphc worked around but the user should fix (an unwritable cache)."""


# PyTorch's words, in eager and compiled mode alike.
NO_GRAD_FN = (
    "element 0 of tensors does not require grad and does not have a grad_fn (was it computed "
    "under no_grad, or from detached tensors?); compute the loss from parameters or tensors "
    "that require grad, outside graphc.no_grad()"
)
LEAF_IN_PLACE = (
    "a leaf tensor that requires grad is being used in an in-place operation; wrap parameter "
    "updates in `with graphc.no_grad():`"
)
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


def scalar_outputs_only(loss_type: object) -> str:
    return (
        f"grad can be implicitly created only for scalar outputs; {loss_type} needs an explicit "
        "gradient: loss.backward(gradient), or reduce it first (loss.sum().backward())"
    )
