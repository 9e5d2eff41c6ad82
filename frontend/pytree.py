"""Flattening nested arguments and results (tuples, lists, dicts, namedtuples) into leaves."""

from __future__ import annotations

from typing import Any

LEAF = ("leaf",)


def flatten(obj: Any) -> tuple[list, Any]:
    """(leaves, treedef): every non-container value is a leaf; treedef is hashable."""
    leaves: list = []

    def walk(x):
        if isinstance(x, tuple) and hasattr(x, "_fields"):
            return ("namedtuple", type(x), tuple(walk(v) for v in x))
        if isinstance(x, tuple):
            return ("tuple", tuple(walk(v) for v in x))
        if isinstance(x, list):
            return ("list", tuple(walk(v) for v in x))
        if isinstance(x, dict):
            keys = tuple(x)
            return ("dict", keys, tuple(walk(x[k]) for k in keys))
        leaves.append(x)
        return LEAF

    return leaves, walk(obj)


def unflatten(treedef: Any, leaves: list) -> Any:
    it = iter(leaves)

    def build(d):
        kind = d[0]
        if kind == "leaf":
            return next(it)
        if kind == "tuple":
            return tuple(build(c) for c in d[1])
        if kind == "list":
            return [build(c) for c in d[1]]
        if kind == "namedtuple":
            return d[1](*(build(c) for c in d[2]))
        if kind == "dict":
            return {k: build(c) for k, c in zip(d[1], d[2], strict=True)}
        raise ValueError(f"bad treedef {d!r}")

    return build(treedef)
