"""A counter bumped whenever the set of tensors a compiled function may have captured changes
(a module gains or swaps a parameter, an optimizer loads state into new tensors). Compiled
traces remember the value they were made under and re-trace when it moved."""

from __future__ import annotations

import itertools

_counter = itertools.count(1)
_current = 0


def bump() -> None:
    global _current
    _current = next(_counter)


def current() -> int:
    return _current
