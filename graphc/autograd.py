"""Eager execution: ops run their numpy reference at once; a tape records what backward needs.

`loss.backward()` turns the recorded tape into an IR graph, runs the same `derive_backward`
the compiler uses, and interprets the backward nodes with the forward values already known.
So eager and compiled gradients come from one set of VJP rules.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from graphc import dispatch
from graphc.dtypes import from_numpy, int64
from graphc.errors import (
    BACKWARD_TWICE,
    LEAF_IN_PLACE,
    NO_GRAD_FN,
    AutogradError,
    GraphcError,
    ShapeError,
    scalar_outputs_only,
    with_location,
)
from graphc.interpreter import interpret
from graphc.ir import GraphBuilder, Node, TensorType
from graphc.ops import OPS
from graphc.random import default_generator
from graphc.tensor import Tensor

_seq = itertools.count()


class TapeNode:
    """One recorded op: what it was applied to and what it produced."""

    __slots__ = (
        "seq",
        "op",
        "attrs",
        "parents",
        "leaves",
        "arrays",
        "versions",
        "out_type",
        "out",
        "loc",
        "freed",
    )

    def __init__(
        self, op: str, attrs: dict, inputs: Sequence[Tensor], out: np.ndarray, out_type: TensorType
    ) -> None:
        self.seq = next(_seq)  # creation order is a topological order of the tape
        self.op = op
        self.attrs = attrs
        # Per input: the tape node that produced it (or None), the leaf tensor whose .grad it
        # feeds (or None), its value and version at record time. Holding these, not the
        # Tensor objects, keeps the record valid if a tensor is later rebound in place.
        self.parents = tuple(t._node for t in inputs)
        self.leaves = tuple(t if (t._node is None and t.requires_grad) else None for t in inputs)
        self.arrays = tuple(t._data for t in inputs)
        self.versions = tuple((t._version, t._version[0]) for t in inputs)
        self.out_type = out_type
        self.out = out
        self.loc = None
        self.freed = False


class EagerMode(dispatch.Mode):
    def apply(self, op_name: str, inputs: Sequence[Tensor], attrs: dict[str, Any]) -> Tensor:
        op = OPS[op_name]
        for t in inputs:
            if t._data is None:
                t._check_eager()
        try:
            attrs = op.full_attrs(attrs)
            out_type = op.infer([t._type() for t in inputs], attrs)
        except ShapeError as e:
            loc = dispatch.user_location(2)
            raise with_location(e, str(loc) if loc else "") from None
        try:
            with np.errstate(all="ignore"):
                out = op.evaluate([t._data for t in inputs], attrs, out_type)
        except (ValueError, IndexError) as e:
            loc = dispatch.user_location(2)
            raise with_location(GraphcError(f"{op_name}: {e}"), str(loc) if loc else "") from None
        result = Tensor._wrap(out)
        if "view" in op.traits and inputs and np.shares_memory(out, inputs[0]._data):
            result._version = inputs[0]._version  # views share a version counter
        if (
            dispatch.is_grad_enabled()
            and op.differentiable
            and any(t.requires_grad for t in inputs)
        ):
            result._node = TapeNode(op_name, attrs, inputs, out, out_type)
            result._requires_grad = True
        return result

    def constant(self, array) -> Tensor:
        return Tensor._wrap(array)

    def assign(self, target: Tensor, value: Tensor) -> None:
        target._check_eager()
        value._check_eager()
        if target.shape != value.shape and np.broadcast_shapes(target.shape, value.shape) != tuple(
            target.shape
        ):
            raise ShapeError(f"in-place update: cannot write {value._type()} into {target._type()}")
        records = dispatch.is_grad_enabled() and value.requires_grad
        if target.requires_grad and target._node is None and dispatch.is_grad_enabled():
            raise dispatch.user_error(AutogradError, LEAF_IN_PLACE)
        if records or (target._node is not None and dispatch.is_grad_enabled()):
            # Autograd through an in-place update: the tensor is rebound to the new value
            # (other views of the old storage do not see it).
            target._data = np.array(np.broadcast_to(value._data, target.shape))
            target._node = value._node
            target._requires_grad = value.requires_grad
            target._version = [0]
            return
        if not target._data.flags.writeable:
            raise GraphcError(
                "in-place update of a read-only tensor (an expanded view?); clone() it first"
            )
        np.copyto(target._data, value._data, casting="same_kind")
        target._version[0] += 1

    def get_grad(self, t: Tensor) -> Tensor | None:
        return t._grad

    def set_grad(self, t: Tensor, g: Tensor | None) -> None:
        if g is not None:
            g._check_eager()
            if tuple(g.shape) != tuple(t.shape):
                raise ShapeError(
                    f"assigned grad has shape {list(g.shape)}, "
                    f"but the tensor has shape {list(t.shape)}"
                )
        t._grad = g

    def backward(self, t: Tensor, gradient: Tensor | None, retain_graph: bool) -> None:
        run_backward(t, gradient, retain_graph)

    def concrete(self, t: Tensor, why: str):
        t._check_eager()
        return t._data

    def runtime_scalars(
        self, fn: Callable[[], Sequence[float]], names: Sequence[str], dtype=None, recipe=None
    ) -> tuple:
        return tuple(fn())

    def rng(self, n: int) -> tuple:
        seed, offset = default_generator.take(n)
        return (Tensor._wrap(np.array(seed, np.int64)), Tensor._wrap(np.array(offset, np.int64)))


# ---- eager backward -----------------------------------------------------------------------


def run_backward(root: Tensor, gradient: Tensor | None, retain_graph: bool) -> None:
    if not root.requires_grad:
        raise dispatch.user_error(AutogradError, NO_GRAD_FN)
    if gradient is None and root.numel() != 1:
        raise dispatch.user_error(AutogradError, scalar_outputs_only(root._type()))
    seed = (
        np.ones(root.shape, root._data.dtype)
        if gradient is None
        else np.asarray(
            gradient._data if isinstance(gradient, Tensor) else gradient, root._data.dtype
        )
    )
    if root._node is None:  # a leaf: its gradient is the seed itself
        _accumulate(root, seed)
        return
    tape = _collect(root._node)
    if any(tn.freed for tn in tape):
        raise dispatch.user_error(AutogradError, BACKWARD_TWICE)
    b = GraphBuilder("backward")
    env: dict[Node, np.ndarray] = {}
    ir_of: dict[int, Node] = {}  # tape seq -> node
    leaf_nodes: dict[int, tuple[Tensor, Node]] = {}
    const_nodes: dict[int, Node] = {}
    for tn in tape:
        ins = []
        for k, (parent, leaf, arr, (counter, version)) in enumerate(
            zip(tn.parents, tn.leaves, tn.arrays, tn.versions, strict=True)
        ):
            if counter[0] != version:
                raise GraphcError(
                    f"one of the tensors needed by {tn.op} (input {k}) was modified by an "
                    "in-place operation after it was used; use an out-of-place op instead"
                )
            if parent is not None:
                ins.append(ir_of[parent.seq])
            elif leaf is not None:
                if id(leaf) not in leaf_nodes:
                    node = b.add_input(f"leaf{len(leaf_nodes)}", leaf._type(), "leaf")
                    leaf_nodes[id(leaf)] = (leaf, node)
                    env[node] = arr
                ins.append(leaf_nodes[id(leaf)][1])
            else:
                if id(arr) not in const_nodes:
                    node = b.add_input(
                        f"c{len(const_nodes)}",
                        TensorType(arr.shape, from_numpy(arr.dtype)),
                        "constant",
                    )
                    const_nodes[id(arr)] = node
                    env[node] = arr
                ins.append(const_nodes[id(arr)])
        node = b.append(Node(tn.op, ins, tn.attrs, tn.out_type, tn.loc))
        ir_of[tn.seq] = node
        env[node] = tn.out
    from graphc.passes.autodiff import backward

    loss = ir_of[root._node.seq]
    seed_node = b.add_input("seed", loss.type, "seed")
    env[seed_node] = seed
    leaves = list(leaf_nodes.values())
    grads = backward(b, loss, [n for _, n in leaves], seed_node)
    graph = b.build(grads)
    values = interpret(graph, env=env, wanted=grads)
    for (leaf, _), g in zip(leaves, values, strict=True):
        _accumulate(leaf, g)
    if not retain_graph:
        for tn in tape:
            tn.freed = True
            tn.arrays = ()
            tn.out = None


def _collect(root: TapeNode) -> list[TapeNode]:
    seen: dict[int, TapeNode] = {}
    stack = [root]
    while stack:
        tn = stack.pop()
        if tn.seq in seen:
            continue
        seen[tn.seq] = tn
        stack.extend(p for p in tn.parents if p is not None)
    return [seen[k] for k in sorted(seen)]


def _accumulate(leaf: Tensor, g: np.ndarray) -> None:
    g = np.array(g, dtype=leaf._data.dtype, copy=True)  # own, writable, contiguous
    if leaf._grad is None:
        leaf._grad = Tensor._wrap(g)
    else:
        leaf._grad = Tensor._wrap(leaf._grad._data + g)


def scalar_int64(value: int) -> Tensor:
    return Tensor._wrap(np.array(value, np.int64))


__all__ = ["EagerMode", "TapeNode", "run_backward", "int64"]
