"""graphc.scan: a loop over the leading axis of its inputs, with carried state (lax.scan).

    carry, ys = graphc.scan(fn, init, xs)      # fn(carry, x) -> (new_carry, y)

`init`, `xs` and what `fn` returns are tensors or tuples/lists of them; each x is one step's
slice of xs along axis 0, and ys stacks the steps' y along a new axis 0. With reverse=True
the steps run from the last slice to the first (ys keep the slices' order).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graphc import dispatch
from graphc import functions as G
from graphc.errors import GraphcError, ShapeError
from graphc.frontend.pytree import flatten, unflatten
from graphc.tensor import Tensor


def _leaves(tree: Any, what: str) -> tuple[list[Tensor], Any]:
    leaves, treedef = flatten(tree)
    for leaf in leaves:
        if not isinstance(leaf, Tensor):
            raise dispatch.user_error(
                GraphcError,
                f"scan: {what} must be tensors or tuples/lists of tensors, got a "
                f"{type(leaf).__name__}",
            )
    return leaves, treedef


def _length(xs: list[Tensor], length: int | None) -> int:
    sizes = {x.shape[0] if x.ndim else None for x in xs}
    if None in sizes:
        raise dispatch.user_error(ShapeError, "scan: every xs tensor needs a leading axis")
    if length is not None:
        sizes.add(length)
    if len(sizes) != 1:
        raise dispatch.user_error(
            ShapeError,
            f"scan: the xs (and length) disagree on the number of steps: {sorted(sizes)}",
        )
    return sizes.pop()


def scan(
    fn: Callable,
    init: Any,
    xs: Any = (),
    length: int | None = None,
    reverse: bool = False,
    unroll: bool = False,
) -> tuple[Any, Any]:
    """Runs fn over the steps; `unroll=True` traces every step into the graph instead of
    one loop node (the reference the loop is tested against)."""
    x_leaves, x_def = _leaves(xs, "xs")
    steps = _length(x_leaves, length)
    return _unrolled(fn, init, x_leaves, x_def, steps, reverse)


def _unrolled(fn, init, x_leaves, x_def, steps: int, reverse: bool):
    carry = init
    ys: list[list[Tensor]] = []
    y_def = None
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    for t in order:
        x = unflatten(x_def, [G.getitem(v, t) for v in x_leaves])
        carry, y = fn(carry, x)
        leaves, y_def = _leaves(y, "the y fn returns")
        ys.append(leaves)
    if reverse:
        ys.reverse()
    if y_def is None:
        return carry, None
    stacked = [G.stack([step[i] for step in ys]) for i in range(len(ys[0]))] if ys else []
    return carry, unflatten(y_def, stacked)
