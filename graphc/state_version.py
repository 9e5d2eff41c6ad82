"""Structure versions: a counter on each Module and Optimizer, bumped whenever the set of
tensors it holds changes (a parameter, buffer or submodule assigned or removed, a parameter
group added, optimizer state replaced by new tensors).

A compiled function captures tensors through the modules and optimizers its trace used; it
records their versions and re-traces when any of them moved, so swapping a layer is noticed
while creating an unrelated model is not.
"""

from __future__ import annotations

from typing import Any

_ATTR = "_graphc_version"


def bump(owner: Any) -> None:
    owner.__dict__[_ATTR] = owner.__dict__.get(_ATTR, 0) + 1


def of(owner: Any) -> int:
    return owner.__dict__.get(_ATTR, 0)
