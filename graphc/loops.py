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
    """Runs fn over the steps as one `scan` node, whatever the number of steps: the step is
    traced once. `unroll=True` traces every step into the graph instead (the reference the
    loop is tested against)."""
    x_leaves, x_def = _leaves(xs, "xs")
    steps = _length(x_leaves, length)
    if unroll:
        return _unrolled(fn, init, x_leaves, x_def, steps, reverse)
    return _loop(fn, init, x_leaves, x_def, steps, reverse)


def _loop(fn, init, x_leaves, x_def, steps: int, reverse: bool):
    from graphc.frontend.body import trace_body
    from graphc.ir import Body
    from graphc.ops.scan import segments
    from graphc.ops.scan_vjp import plan_saved, with_saved
    from graphc.passes.dce import eliminate_dead_code

    carries, c_def = _leaves(init, "init")
    y_defs: list[Any] = []

    def step(cs: list[Tensor], xs: list[Tensor]):
        new, y = fn(unflatten(c_def, cs), unflatten(x_def, xs))
        new_leaves, new_def = _leaves(new, "the carry fn returns")
        if new_def != c_def:
            raise dispatch.user_error(
                ShapeError, "scan: fn must return a carry of the same structure as init"
            )
        for before, after in zip(cs, new_leaves, strict=True):
            if before._type() != after._type():
                raise dispatch.user_error(
                    ShapeError,
                    f"scan: fn returned a carry of type {after._type()} for one of type "
                    f"{before._type()}; a carry keeps its shape and dtype from step to step",
                )
        y_leaves, y_def = ([], None) if y is None else _leaves(y, "the y fn returns")
        y_defs.append(y_def)
        return new_leaves, y_leaves

    x_types = [x._type().with_shape(tuple(x.shape[1:])) for x in x_leaves]
    body, consts, ny = trace_body(step, [c._type() for c in carries], x_types)
    body = eliminate_dead_code(body)
    nc, nx = len(carries), len(x_leaves)
    inputs = carries + x_leaves + consts
    if dispatch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        # save what the gradient's reverse loop reads, rather than run this loop twice
        body = with_saved(body, nc, ny, plan_saved(body, nc, nx, ny))
    packed = dispatch.apply(
        "scan",
        inputs,
        body=Body(body),
        num_carry=nc,
        num_xs=nx,
        num_ys=ny,
        length=steps,
        reverse=reverse,
    )
    parts = []
    for s in segments(body, nc, steps)[: nc + ny]:
        piece = dispatch.apply("slice", (packed,), axis=0, start=s.offset, stop=s.offset + s.size)
        parts.append(G.reshape(piece, s.shape))
    carry = unflatten(c_def, parts[:nc])
    return carry, (unflatten(y_defs[0], parts[nc:]) if y_defs[0] is not None else None)


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
