"""Views as index arithmetic: which values can be read in place, and how.

Every stored value is a contiguous row-major buffer. A chain of view ops over a stored value
is an *affine view* when element [i0, .., ik] of the view lives at
`base[offset + sum(i_j * strides_j)]`: reshape of a contiguous view, broadcast_to (stride 0),
transpose (permuted strides) and slice (offset and scaled stride) all keep that form.
Loop kernels read affine views directly; other kernels need a contiguous one (a pointer).
"""

from __future__ import annotations

from dataclasses import dataclass

from graphc.ir import Node

VIEW_OPS = ("reshape", "broadcast_to", "transpose", "slice")


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return tuple(reversed(strides))


@dataclass(frozen=True)
class View:
    base: Node  # the stored value read
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # in elements
    offset: int

    @property
    def contiguous(self) -> bool:
        dense = contiguous_strides(self.shape)
        return all(
            s == d for s, d, n in zip(self.strides, dense, self.shape, strict=True) if n != 1
        )


def affine_view(node: Node, stored: set[Node]) -> View | None:
    """The affine view that `node` is of some stored value, or None if it is not one."""
    if node in stored:
        return View(node, node.shape, contiguous_strides(node.shape), 0)
    if node.op not in VIEW_OPS:
        return None
    src = affine_view(node.inputs[0], stored)
    if src is None:
        return None
    a = node.attrs
    if node.op == "reshape":
        if not src.contiguous:
            return None
        return View(src.base, node.shape, contiguous_strides(node.shape), src.offset)
    if node.op == "transpose":
        perm = a["perm"]
        return View(src.base, node.shape, tuple(src.strides[p] for p in perm), src.offset)
    if node.op == "broadcast_to":
        lead = len(node.shape) - len(src.shape)
        strides = [0] * lead
        for i, (d, s) in enumerate(zip(src.shape, src.strides, strict=True)):
            strides.append(0 if d == 1 and node.shape[lead + i] != 1 else s)
        return View(src.base, node.shape, tuple(strides), src.offset)
    # slice
    axis = a["axis"]
    strides = list(src.strides)
    offset = src.offset + a["start"] * strides[axis]
    strides[axis] *= a["step"]
    return View(src.base, node.shape, tuple(strides), offset)


def alias_of(node: Node, stored: set[Node]) -> Node | None:
    """The stored value whose buffer `node` (a reshape chain) shares, if it is one."""
    v = affine_view(node, stored)
    if v is not None and v.contiguous and v.offset == 0 and node.type.numel == v.base.type.numel:
        return v.base
    return None


def fill_of(node: Node) -> Node | None:
    """The `full` node under a chain of views, if there is one: every element of the view is
    its value, so loops read it as a constant whatever the view."""
    while node.op in VIEW_OPS:
        node = node.inputs[0]
    return node if node.op == "full" else None
