"""Types for the commands' numeric options (not a command itself).

Each refuses what the user cannot have meant — nan, inf, a value out of the option's range —
as an argparse usage error that names the option and the range (`graphc train: error:
argument --lr: must be a finite number > 0, not nan`, exit status 2), before anything runs.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from graphc.threads import MAX_THREADS
from graphc.training.config import SEED_MAX


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    above: bool = False,
    below: bool = False,
) -> Callable[[str], float]:
    """A finite float in [low, high]; `above`/`below` make that end open (> low, < high)."""
    rng = _range_text(low, high, above, below)

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {rng}, not {text!r}") from None
        low_bad = low is not None and (value <= low if above else value < low)
        high_bad = high is not None and (value >= high if below else value > high)
        if not math.isfinite(value) or low_bad or high_bad:
            raise argparse.ArgumentTypeError(f"must be a finite number {rng}, not {text}")
        return value

    parse.__name__ = "number"  # argparse names the type in some messages
    return parse


def integer(low: int = 0, high: int | None = None) -> Callable[[str], int]:
    """An int in [low, high]."""
    rng = _range_text(low, high, False, False)

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a whole number {rng}, not {text!r}"
            ) from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be a whole number {rng}, not {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _range_text(low, high, above: bool, below: bool) -> str:
    lo, hi = _text(low), _text(high)
    if low is not None and high is not None:
        return f"in {'(' if above else '['}{lo}, {hi}{')' if below else ']'}"
    if low is not None:
        return f"{'>' if above else '>='} {lo}"
    if high is not None:
        return f"{'<' if below else '<='} {hi}"
    return ""


def _text(v) -> str:
    return "" if v is None else str(v) if isinstance(v, int) else f"{v:g}"


# The options several commands share.
positive = number(0, above=True)  # a learning rate, a timeout
non_negative = number(0)  # a weight decay, a tolerance
count = integer(1)  # epochs, steps, a batch size
count_or_zero = integer(0)  # warm-up steps, loader workers
threads = integer(1, MAX_THREADS)
seed = integer(0, SEED_MAX)
momentum = number(0, 1, below=True)
