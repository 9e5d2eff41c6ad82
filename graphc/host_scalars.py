"""What a compiled call's host-computed scalars are, described as data.

Some inputs of a compiled step are computed on the host before every call, by a Python
function (optimizer.py's `_runtime`, trace.py's `rng`): the learning rate, SGD's first-step
momentum mixing, Adam's bias corrections, the random-number counters. Next to the function,
its author passes one of these recipes saying what it computes, so that code without Python
(a library written by `graphc export`) can compute the same values with the same roundings.
Python itself never reads them; a function without a recipe just cannot be exported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(eq=False)
class SGDScalars:
    """`lr`, then per momentum buffer `keep, mix`: 0 and 1 on the buffer's first step (its
    `_fresh` mark), else `momentum` and `1 - dampening`; all rounded to the scalars' dtype."""

    optimizer: Any
    group: dict
    states: list[dict]  # optimizer.state[p] of each buffer's parameter, in scalar order


@dataclass(eq=False)
class AdamScalars:
    """`lr`, `1 - lr * weight_decay`, then per parameter, after its float32 `step` count is
    increased by one: `lr / (1 - beta1**step)` and `sqrt(1 - beta2**step)`, computed in
    double precision and rounded to the scalars' dtype."""

    optimizer: Any
    group: dict
    states: list[dict]


@dataclass(eq=False)
class RandomScalars:
    """`seed, offset` of `n` counters taken from `generator` (graphc/random.py)."""

    generator: Any
    n: int
