"""Work estimates the passes and the reports share: FLOPs per node, bytes per node and kernel.

- A node's FLOPs come from its op's `flops` rule (graphc/ops); views and fills do no work.
- A node's bytes are what it would move run on its own: its distinct inputs plus its result.
- A kernel's bytes are what it moves after fusion: each stored value it reads (once; through
  a broadcast only the base's bytes, through a slice only the view's) plus the values it
  stores.
"""

from __future__ import annotations

from graphc.ir import Node
from graphc.ops import OPS
from graphc.passes.schedule import INLINE_OPS, VIEW_OPS, Kernel
from graphc.passes.views import affine_view

FREE_OPS = ("input",) + VIEW_OPS + INLINE_OPS  # index arithmetic, constants: no work, no traffic


def node_flops(n: Node) -> int:
    op = OPS.get(n.op)
    if n.op in FREE_OPS or op is None or op.flops is None:
        return 0
    return int(op.flops(n.type, *(i.type for i in n.inputs), **n.attrs))


def node_bytes(n: Node) -> int:
    if n.op in FREE_OPS:
        return 0
    distinct = list(dict.fromkeys(n.inputs))
    return sum(i.type.nbytes for i in distinct) + n.type.nbytes


def kernel_bytes(k: Kernel, stored: set[Node]) -> tuple[int, int]:
    """(bytes read, bytes written) by kernel k."""
    read: dict[Node, int] = {}
    for r in k.reads():
        if r.op in INLINE_OPS:
            continue
        view = affine_view(r, stored)
        base = view.base if view is not None else r
        read[base] = max(read.get(base, 0), min(r.type.nbytes, base.type.nbytes))
    return sum(read.values()), sum(o.type.nbytes for o in k.outputs)
