"""Tracing: symbolic tensors flow through the user's real Python code and leave a graph.

While a `Trace` is the active mode, every op appends a node stamped with the user's file:line.
Tensors that live outside the function (parameters, buffers, optimizer state, .grad) are
captured as graph inputs the first time they are read; in-place updates to them become graph
outputs written back after each call; `loss.backward()` leaves `grad` placeholders that the
autodiff pass expands. Reading a value (`.item()`, `if t:`) is impossible while tracing and
raises a TraceError naming the line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from graphc import dispatch, dtypes
from graphc.errors import (
    BACKWARD_TWICE,
    LEAF_IN_PLACE,
    NO_GRAD_FN,
    AutogradError,
    ShapeError,
    TraceError,
    scalar_outputs_only,
    with_location,
)
from graphc.frontend.bindings import (
    ArgSource,
    GradSource,
    HostGroup,
    HostSource,
    Source,
    TensorSource,
)
from graphc.host_scalars import RandomScalars
from graphc.ir import Graph, GraphBuilder, Loc, Node
from graphc.ops import OPS
from graphc.random import default_generator
from graphc.tensor import Tensor


@dataclass
class Guard:
    fn: Callable[[], Any]
    value: Any
    what: str

    def holds(self) -> bool:
        try:
            return self.fn() == self.value
        except Exception:
            return False


class Trace(dispatch.Mode):
    def __init__(self, name: str) -> None:
        self.builder = GraphBuilder(name)
        self.sources: dict[Node, Source] = {}
        self.host_groups: list[HostGroup] = []
        self.current: dict[int, tuple[Tensor, Node]] = {}  # outside tensor -> its value now
        self.captured: dict[int, tuple[Tensor, Node]] = {}  # outside tensor -> its input
        self.written: dict[int, Tensor] = {}
        self.grads: dict[int, tuple[Tensor, Tensor | None]] = {}  # the .grad overlay
        self.grad_inputs: dict[int, Node] = {}
        self.tainted: set[Node] = set()  # nodes that depend on a tensor requiring grad
        # Eager mode's tape, in nodes: ops recorded for autograd, and those a backward()
        # without retain_graph has consumed (a second backward through them is an error).
        self.recorded: set[Node] = set()
        self.freed: set[Node] = set()
        self.leaf_args: dict[Node, int] = {}  # input node -> argument index (requires_grad)
        self.guards: list[Guard] = []
        self.owners: list[Any] = []
        self._grad_flags: list[Tensor] = []
        self.forward_end: int | None = None  # number of nodes before the first backward()
        self.finished = False

    # ---- values --------------------------------------------------------------------------

    def node_of(self, t: Tensor) -> Node:
        if t._value is not None:
            if t._trace is not self:
                raise TraceError(
                    "a tensor from another compiled function's trace was used "
                    "here; return it from that function instead"
                )
            return t._value
        while t._base is not None and t._base.shape == t.shape:
            t = t._base  # .data / .detach() aliases read their origin's current value
        hit = self.current.get(id(t))
        if hit is not None:
            return hit[1]
        return self._capture(t)

    def _capture(self, t: Tensor) -> Node:
        node = self.builder.add_input(f"capture{len(self.captured)}", t._type(), "capture")
        self.sources[node] = TensorSource(t)
        self.captured[id(t)] = self.current[id(t)] = (t, node)
        if t.requires_grad:
            self.tainted.add(node)
        self._grad_flags.append(t)  # one guard checks them all (see flag_guard)
        return node

    def structure_guard(self) -> None:
        """One guard over the structure versions of every module (with its submodules) and
        optimizer the trace used: swapping a layer or optimizer state re-traces."""
        from graphc import state_version

        objs: list = []
        for owner in self.owners:
            members = (
                [m for _, m in owner.named_modules()]
                if hasattr(owner, "named_modules")
                else [owner]
            )
            objs += [m for m in members if not any(m is o for o in objs)]
        objs_t = tuple(objs)
        if objs_t:
            self.guards.append(
                Guard(
                    lambda: [state_version.of(o) for o in objs_t],
                    [state_version.of(o) for o in objs_t],
                    "structure of the modules and optimizers used",
                )
            )

    def flag_guard(self) -> None:
        """A single guard over every captured tensor's requires_grad (checked per call)."""
        tensors = tuple(self._grad_flags)
        if tensors:
            self.guards.append(
                Guard(
                    lambda: [t._requires_grad for t in tensors],
                    [t._requires_grad for t in tensors],
                    "requires_grad of the captured tensors",
                )
            )

    def requires_grad(self, t: Tensor) -> bool:
        return t._requires_grad

    def is_leaf(self, t: Tensor) -> bool:
        if t._value is None:  # a tensor from outside (a parameter): a leaf unless computed
            return t._node is None
        return not t._requires_grad or t._value in self.leaf_args

    # ---- the Mode interface --------------------------------------------------------------

    def apply(self, op_name: str, inputs: Sequence[Tensor], attrs: dict[str, Any]) -> Tensor:
        op = OPS[op_name]
        nodes = [self.node_of(t) for t in inputs]
        grad = (
            dispatch.is_grad_enabled()
            and op.differentiable
            and any(t._requires_grad for t in inputs)
        )
        loc = dispatch.user_location(2)
        if grad:
            # A value computed without gradients (under no_grad, or detached) but derived
            # from a parameter must not pass gradients back: fence it off.
            nodes = [
                n
                if t._requires_grad or n not in self.tainted
                else self.builder.emit("stop_gradient", [n], {}, loc)
                for t, n in zip(inputs, nodes, strict=True)
            ]
        try:
            node = self.builder.emit(op_name, nodes, attrs, loc)
        except ShapeError as e:
            raise with_location(e, str(loc) if loc else "") from None
        if any(n in self.tainted for n in nodes):
            self.tainted.add(node)
        if grad:
            self.recorded.add(node)
        return Tensor._symbolic(node, self, grad)

    def constant(self, array) -> Tensor:
        return self.apply("constant", (), {"value": array})

    def assign(self, target: Tensor, value: Tensor) -> None:
        root = target
        while root._base is not None and root._base.shape == root.shape:
            root = root._base
        node = self.node_of(value)
        # As in eager mode: a parameter written directly, with gradients on, is an error; an
        # alias that does not require grad (p.data, p.detach()) may write it.
        if (
            dispatch.is_grad_enabled()
            and target.requires_grad
            and self.is_leaf(target)
            and target._value is None
        ):
            raise with_location(AutogradError(LEAF_IN_PLACE), _where())
        if root._value is None:  # state that lives outside: written back after each call
            self.current[id(root)] = (root, node)
            self.written[id(root)] = root
        else:
            root._value = node
            root._requires_grad = (
                dispatch.is_grad_enabled()
                and value._requires_grad
                or root._requires_grad
                and not dispatch.is_grad_enabled()
            )
        if target is not root and target._value is not None:
            target._value = node

    def get_grad(self, t: Tensor) -> Tensor | None:
        key = id(t)
        if key in self.grads:
            return self.grads[key][1]
        if t._value is not None:
            return None  # only leaves outside the function carry .grad across calls
        has = self.guard(lambda: t._grad is not None, "whether .grad is set")
        if not has:
            return None
        g = t._grad
        self.guard(lambda: tuple(t._grad.shape), ".grad shape")
        node = self.builder.add_input(f"grad{len(self.grad_inputs)}", g._type(), "grad")
        self.sources[node] = GradSource(t)
        self.grad_inputs[key] = node
        sym = Tensor._symbolic(node, self)
        self.grads[key] = (t, sym)
        return sym

    def set_grad(self, t: Tensor, g: Tensor | None) -> None:
        if g is not None and tuple(g.shape) != tuple(t.shape):
            raise ShapeError(
                f"assigned grad has shape {list(g.shape)}, but the tensor has shape {list(t.shape)}"
            )
        if g is not None:
            g = Tensor._symbolic(self.node_of(g), self)
        self.grads[id(t)] = (t, g)

    def backward(self, loss: Tensor, gradient: Tensor | None, retain_graph: bool) -> None:
        if not loss._requires_grad:
            raise with_location(AutogradError(NO_GRAD_FN), _where())
        if gradient is None and loss.numel() != 1:
            raise with_location(AutogradError(scalar_outputs_only(loss._type())), _where())
        if self.forward_end is None:
            self.forward_end = len(self.builder.nodes)
        loss_node = self.node_of(loss)
        tape = self._tape(loss_node)
        if tape & self.freed:
            raise with_location(AutogradError(BACKWARD_TWICE), _where())
        extra = [self.node_of(gradient)] if gradient is not None else []
        loc = dispatch.user_location(2)
        reached = _reachable_leaves(loss_node)
        leaves = [
            (t, n)
            for key, (t, n) in self.current.items()
            if t.requires_grad and t._node is None and n in reached
        ]
        leaves += [(None, n) for n in self.leaf_args if n in reached]
        for t, n in leaves:
            try:
                g = self.builder.emit("grad", [loss_node, n] + extra, {}, loc)
            except ShapeError as e:
                raise with_location(e, str(loc) if loc else "") from None
            g_t = Tensor._symbolic(g, self)
            holder = t if t is not None else self.arg_key(self.leaf_args[n])
            old = self.get_grad(t) if t is not None else self.grads.get(id(holder), (0, None))[1]
            if old is not None:
                with dispatch.no_grad():
                    g_t = self.apply("add", (old, g_t), {})
            self.grads[id(holder)] = (holder, g_t)
        if not retain_graph:
            self.freed |= tape

    def _tape(self, loss: Node) -> set[Node]:
        """The recorded nodes a backward() from `loss` walks, as eager mode's tape would."""
        seen: set[Node] = set()
        stack = [loss] if loss in self.recorded else []
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(i for i in n.inputs if i in self.recorded)
        return seen

    def concrete(self, t: Tensor, why: str):
        if t._value is None and id(t) not in self.current:
            return t._data  # an outside tensor this trace has not touched
        raise with_location(
            TraceError(
                f"{why} needs the value of a tensor, but a compiled function only has symbolic "
                "tensors while it is traced. Return the tensor and read it outside the compiled "
                "function, or express the choice with graphc.where(cond, a, b)"
            ),
            _where(),
        )

    def runtime_scalars(self, fn, names, dtype=None, recipe=None) -> tuple:
        dtype = dtype or dtypes.float32
        group = HostGroup(fn, dtype.np, recipe)
        self.host_groups.append(group)
        out = []
        for k, name in enumerate(names):
            node = self.builder.add_input(name, _scalar_type(dtype), "scalar")
            self.sources[node] = HostSource(group, k)
            out.append(Tensor._symbolic(node, self))
        return tuple(out)

    def rng(self, n: int) -> tuple:
        return self.runtime_scalars(
            lambda: default_generator.take(n),
            ("seed", "offset"),
            dtypes.int64,
            RandomScalars(default_generator, n),
        )

    def guard(self, fn, what: str):
        value = fn()
        self.guards.append(Guard(fn, value, what))
        return value

    def note_owner(self, owner: Any) -> None:
        if not any(o is owner for o in self.owners):
            self.owners.append(owner)

    # ---- arguments -----------------------------------------------------------------------

    def arg_key(self, index: int) -> _ArgKey:
        keys = self.__dict__.setdefault("_arg_keys", {})
        return keys.setdefault(index, _ArgKey(index))

    def add_arg(self, index: int, name: str, value) -> Tensor:
        t = value if isinstance(value, Tensor) else None
        typ = t._type() if t is not None else _array_type(value)
        node = self.builder.add_input(name, typ, "input")
        self.sources[node] = ArgSource(index)
        rg = t is not None and t.requires_grad
        if rg:
            self.leaf_args[node] = index
            self.tainted.add(node)
        return Tensor._symbolic(node, self, rg)


class _ArgKey:
    """Stands for 'the .grad of argument i' in the grad overlay."""

    def __init__(self, index: int) -> None:
        self.index = index


def _reachable_leaves(loss: Node) -> set[Node]:
    """Nodes reachable from the loss without crossing a stop_gradient."""
    seen: set[Node] = set()
    stack = [loss]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n.op != "stop_gradient" and (n.op not in OPS or OPS[n.op].differentiable):
            stack.extend(n.inputs)
    return seen


def _scalar_type(dtype):
    from graphc.ir import TensorType

    return TensorType((), dtype)


def _array_type(value):
    import numpy as np

    from graphc.ir import TensorType

    a = np.asarray(value)
    return TensorType(a.shape, dtypes.from_numpy(a.dtype))


def _where() -> str:
    loc: Loc | None = dispatch.user_location(3)
    return str(loc) if loc else ""


__all__ = ["Trace", "Guard", "Graph"]
