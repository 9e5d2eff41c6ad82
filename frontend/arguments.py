"""What a compiled function takes as arguments, and the conversions at its boundary.

Tensors and numpy arrays become tensor inputs; Python numbers, strings, None and other
hashable values are constants (a new value re-traces); tuples, lists and dicts nest. Two kinds
of data that are not tensors yet become tensors, exactly as `graphc.tensor` makes them: a list
whose leaves are all numbers (nested lists: a matrix; floats become float32, ints int64) and
a numpy scalar (a 0-d tensor of its dtype: a new value does not re-trace). Tuples of numbers
stay constants (shapes, kernel sizes). Anything that can be neither a tensor nor a constant is
an error naming the argument and what to pass instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from graphc import dispatch
from graphc.errors import ArgumentError, TraceError
from graphc.tensor import Tensor, _as_array

EXPECTED = "a tensor, a numpy array, or a (nested) list of numbers of one shape"
_NUMBER = (bool, int, float, np.number, np.bool_)


def convert_arguments(fn: Callable, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """(args, kwargs) with numeric lists and numpy scalars made tensors; raises a graphc error
    naming the argument for a value a compiled function cannot take."""
    where = getattr(fn, "__name__", "the compiled function")
    names = _positional_names(fn, len(args))
    new_args = tuple(_convert(a, name, where) for a, name in zip(args, names, strict=True))
    new_kwargs = {k: _convert(v, k, where) for k, v in kwargs.items()}
    return new_args, new_kwargs


def _convert(x: Any, path: str, where: str) -> Any:
    if isinstance(x, (Tensor, np.ndarray)):
        return x
    if isinstance(x, (np.number, np.bool_)):
        return _to_tensor(x, path, where)
    if isinstance(x, list):
        if x and _all_numbers(x):
            return _to_tensor(x, path, where)
        return [_convert(v, f"{path}[{i}]", where) for i, v in enumerate(x)]
    if isinstance(x, tuple):
        items = [_convert(v, f"{path}[{i}]", where) for i, v in enumerate(x)]
        return type(x)(*items) if hasattr(x, "_fields") else tuple(items)
    if isinstance(x, dict):
        return {k: _convert(v, f"{path}[{k!r}]", where) for k, v in x.items()}
    try:
        hash(x)
    except TypeError:
        raise dispatch.user_error(
            TraceError,
            f"argument {path!r} of {where} is an unhashable {type(x).__name__}: compiled "
            f"functions take tensors, arrays, numbers, strings and tuples/lists/dicts of them "
            f"(an unhashable value cannot key the compiled-code cache); pass {EXPECTED}, or "
            "a tuple",
        ) from None
    return x


def _all_numbers(x: list) -> bool:
    """True for a non-empty list whose leaves (through nested lists) are all numbers."""
    return all(
        (_all_numbers(v) if v else False) if isinstance(v, list) else isinstance(v, _NUMBER)
        for v in x
    )


def _to_tensor(x: Any, path: str, where: str) -> Tensor:
    try:
        array = _as_array(x)
    except (ValueError, TypeError) as e:  # ragged lists, dtypes graphc has no tensors of
        what = "numpy scalar" if isinstance(x, np.generic) else "list"
        raise dispatch.user_error(
            ArgumentError,
            f"argument {path!r} of {where}: this {what} cannot become a tensor ({e}); pass "
            f"{EXPECTED}",
        ) from None
    return Tensor._wrap(np.array(array, copy=True))


def _positional_names(fn: Callable, n: int) -> list[str]:
    """The parameter name each of n positional arguments binds to ("args[2]" for *args)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = []
    for i in range(n):
        if i < len(params) and params[i].kind == inspect.Parameter.VAR_POSITIONAL:
            names += [f"{params[i].name}[{k}]" for k in range(n - i)]
            break
        if i < len(params) and params[i].kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            names.append(params[i].name)
        else:
            names.append(f"argument {i}")
    return names
