"""Shared pieces of the inspection views: the error they raise and number formatting."""

from __future__ import annotations

from graphc.errors import GraphcError


class InspectError(GraphcError, ValueError):
    """A bad inspection request: unknown stage or kernel, bad TARGET, missing input shape."""


def count(n: int | float) -> str:
    """Integers with thousands separators (exact and deterministic, unlike 1.2M)."""
    return f"{int(n):,}"


def duration(seconds: float) -> str:
    """1.23 ms, 45.6 us, 789 ns: three significant digits in the unit that fits."""
    for factor, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if seconds >= factor:
            return f"{seconds / factor:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def table(rows: list[list[str]], right: set[int] = frozenset()) -> list[str]:
    """Rows aligned in columns; columns in `right` are right-aligned (numbers)."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return out
