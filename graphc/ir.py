"""The IR: an immutable, typed SSA graph.

A `Graph` is an ordered tuple of `Node`s in topological order plus named outputs. Every node
has exactly one result, so a node *is* its SSA value. Graph inputs are nodes with op "input"
(their `kind` says what they are bound to: a user argument, a parameter, optimizer state, a
per-call host scalar, ...). Nodes never change after construction; passes build new graphs
with `GraphBuilder` and reuse the node objects they do not touch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from graphc.dtypes import DType


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int, ...]
    dtype: DType

    def __post_init__(self) -> None:
        if not all(isinstance(d, (int, np.integer)) and d >= 0 for d in self.shape):
            raise ValueError(f"invalid shape {self.shape}: dimensions must be integers >= 0")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def with_shape(self, shape: Sequence[int]) -> TensorType:
        return TensorType(tuple(shape), self.dtype)

    def with_dtype(self, dtype: DType) -> TensorType:
        return TensorType(self.shape, dtype)

    def __str__(self) -> str:
        return f"{self.dtype.short}[{','.join(map(str, self.shape))}]"


@dataclass(frozen=True)
class Loc:
    """Where in the user's code a node came from."""

    file: str
    line: int
    func: str = ""

    def __str__(self) -> str:
        where = f"{shorten_path(self.file)}:{self.line}"
        return f"{where} in {self.func}" if self.func else where


def shorten_path(path: str) -> str:
    """Paths print relative to the working directory when they are under it (stable output)."""
    import os

    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


class ConstArray:
    """A numpy array held as an attribute: hashed and compared by content, printed briefly."""

    __slots__ = ("array", "_digest")

    def __init__(self, array: np.ndarray) -> None:
        # ascontiguousarray alone would turn a 0-d array into shape [1]
        self.array = np.ascontiguousarray(array).reshape(np.shape(array))
        self.array.setflags(write=False)
        h = hashlib.sha256(self.array.tobytes())
        h.update(str((self.array.dtype, self.array.shape)).encode())
        self._digest = h.hexdigest()

    def __hash__(self) -> int:
        return hash(self._digest)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConstArray) and other._digest == self._digest

    def __repr__(self) -> str:
        a = self.array
        if a.size <= 4:
            return np.array2string(a.reshape(-1), separator=",")
        return f"<{a.dtype}{list(a.shape)} sha256:{self._digest[:10]}>"


class Body:
    """A graph held as an attribute (the step of a `scan`): hashed, compared and named by its
    printed structure (ops, attributes, types, wiring; not source locations), so two loops
    with the same step are one value to CSE, kernel sharing and the compile caches."""

    __slots__ = ("graph", "_digest")

    def __init__(self, graph: Graph) -> None:
        from graphc.printer import format_graph

        self.graph = graph
        text = format_graph(graph, locations=False, meta=False)
        self._digest = hashlib.sha256(text.encode()).hexdigest()

    def __hash__(self) -> int:
        return hash(self._digest)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Body) and other._digest == self._digest

    def __repr__(self) -> str:
        return f"body#{self._digest[:12]}"


def freeze_attr(value: Any) -> Any:
    """Attribute values must be hashable and immutable; lists become tuples, arrays ConstArray."""
    if isinstance(value, np.ndarray):
        return ConstArray(value)
    if isinstance(value, (list, tuple)):
        return tuple(freeze_attr(v) for v in value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if value is None or isinstance(value, (int, float, str, bool, DType, ConstArray, Body)):
        return value
    raise TypeError(f"attribute value {value!r} of type {type(value).__name__} is not allowed")


class Node:
    """One SSA value: `type = op(*inputs, **attrs)`, stamped with the user's source location."""

    __slots__ = ("op", "inputs", "attrs", "type", "loc", "__weakref__")

    def __init__(
        self,
        op: str,
        inputs: Sequence[Node],
        attrs: Mapping[str, Any],
        type: TensorType,
        loc: Loc | None = None,
    ) -> None:
        # object.__setattr__: this class's own refuses every assignment (immutability), and
        # going around it here keeps node construction cheap (tracing builds thousands).
        init = object.__setattr__
        init(self, "op", op)
        init(self, "inputs", tuple(inputs))
        init(self, "attrs", MappingProxyType({k: freeze_attr(attrs[k]) for k in sorted(attrs)}))
        init(self, "type", type)
        init(self, "loc", loc)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("IR nodes are immutable; build a new node instead")

    def with_inputs(self, inputs: Sequence[Node]) -> Node:
        """This node over `inputs` (itself if they are its own). The attributes are shared,
        frozen already: rewriting a graph's nodes need not sort and freeze them again."""
        inputs = tuple(inputs)
        if inputs == self.inputs:
            return self
        new = object.__new__(Node)
        init = object.__setattr__
        init(new, "op", self.op)
        init(new, "inputs", inputs)
        init(new, "attrs", self.attrs)
        init(new, "type", self.type)
        init(new, "loc", self.loc)
        return new

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    @property
    def is_input(self) -> bool:
        return self.op == "input"

    @property
    def name(self) -> str | None:
        return self.attrs.get("name")

    def attrs_key(self) -> tuple:
        return tuple(self.attrs.items())

    def __repr__(self) -> str:
        label = self.name or self.op
        return f"<Node {label}: {self.type}>"


class Graph:
    """An ordered, immutable tuple of nodes with named outputs."""

    __slots__ = ("name", "nodes", "inputs", "outputs", "output_names", "meta", "_index")

    def __init__(
        self,
        nodes: Iterable[Node],
        outputs: Sequence[Node],
        output_names: Sequence[str] | None = None,
        name: str = "graph",
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.nodes = tuple(nodes)
        self.inputs = tuple(n for n in self.nodes if n.is_input)
        self.outputs = tuple(outputs)
        if output_names is None:
            output_names = [f"out{i}" for i in range(len(self.outputs))]
        self.output_names = tuple(output_names)
        # meta: decisions and facts passes attach (fusion groups, memory plan); printed, not
        # executed. Stored read-only so a later pass cannot edit an earlier graph's record.
        self.meta = MappingProxyType(dict(meta or {}))
        self._index: dict[Node, int] | None = None

    def index(self, node: Node) -> int:
        if self._index is None:
            self._index = {n: i for i, n in enumerate(self.nodes)}
        return self._index[node]

    def __contains__(self, node: Node) -> bool:
        if self._index is None:
            self._index = {n: i for i, n in enumerate(self.nodes)}
        return node in self._index

    def __len__(self) -> int:
        return len(self.nodes)

    def input(self, name: str) -> Node:
        for n in self.inputs:
            if n.name == name:
                return n
        raise KeyError(f"graph {self.name} has no input named {name!r}")

    def output(self, name: str) -> Node:
        for n, o in zip(self.output_names, self.outputs, strict=True):
            if n == name:
                return o
        raise KeyError(f"graph {self.name} has no output named {name!r}")

    def users(self) -> dict[Node, list[Node]]:
        """node -> the nodes that read it, in graph order."""
        out: dict[Node, dict[Node, None]] = {n: {} for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                out[i][n] = None  # (a dict: no quadratic scan for values read many times)
        return {n: list(us) for n, us in out.items()}

    def replace(self, **changes: Any) -> Graph:
        fields = dict(
            nodes=self.nodes,
            outputs=self.outputs,
            output_names=self.output_names,
            name=self.name,
            meta=self.meta,
        )
        fields.update(changes)
        return Graph(**fields)

    def with_meta(self, **meta: Any) -> Graph:
        return self.replace(meta={**self.meta, **meta})

    def __str__(self) -> str:
        from graphc.printer import format_graph

        return format_graph(self)

    def structural_hash(self) -> str:
        """sha256 of the graph's structure: ops, attrs, types, wiring and outputs, not locations."""
        from graphc.printer import format_graph

        text = format_graph(self, locations=False, meta=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def to_networkx(self):
        """A networkx.DiGraph view: vertices are node indices, with the Node in attribute 'node'."""
        import networkx as nx

        g = nx.DiGraph()
        for i, n in enumerate(self.nodes):
            g.add_node(i, node=n, op=n.op)
        for i, n in enumerate(self.nodes):
            for src in n.inputs:
                g.add_edge(self.index(src), i)
        return g


class GraphBuilder:
    """Appends nodes in order, checking each against its op's type rule."""

    def __init__(self, name: str = "graph", loc: Loc | None = None) -> None:
        self.name = name
        self.nodes: list[Node] = []
        self._names: set[str] = set()
        self.loc = loc  # default location stamped on emitted nodes

    @classmethod
    def from_graph(cls, graph: Graph) -> GraphBuilder:
        b = cls(graph.name)
        b.nodes = list(graph.nodes)
        b._names = {n.name for n in graph.inputs}
        return b

    def unique_name(self, base: str) -> str:
        name, k = base, 1
        while name in self._names:
            k += 1
            name = f"{base}_{k}"
        self._names.add(name)
        return name

    def add_input(self, name: str, type: TensorType, kind: str = "input") -> Node:
        node = Node("input", (), {"name": self.unique_name(name), "kind": kind}, type, self.loc)
        self.nodes.append(node)
        return node

    def emit(
        self,
        op: str,
        inputs: Sequence[Node],
        attrs: Mapping[str, Any] | None = None,
        loc: Loc | None = None,
    ) -> Node:
        from graphc.ops import get_op

        node = get_op(op).make_node(inputs, attrs or {}, loc or self.loc)
        self.nodes.append(node)
        return node

    def append(self, node: Node) -> Node:
        """Adds an already-built node (used by passes that keep nodes they do not change)."""
        self.nodes.append(node)
        return node

    def __getattr__(self, op: str):
        """`b.mul(x, y)` is `b.emit("mul", [x, y])`: op names read like functions in rules."""
        if op.startswith("_"):
            raise AttributeError(op)
        from graphc.ops import OPS

        if op not in OPS:
            raise AttributeError(f"no op named {op!r}")

        def emit_op(*inputs: Node, **attrs: Any) -> Node:
            return self.emit(op, inputs, attrs)

        return emit_op

    def full(self, value: float, shape: Sequence[int], dtype: DType) -> Node:
        return self.emit("full", (), {"value": value, "shape": tuple(shape), "dtype": dtype})

    def full_like(self, x: Node, value: float) -> Node:
        return self.full(value, x.shape, x.dtype)

    def sum_to(self, x: Node, shape: Sequence[int]) -> Node:
        """Sums away the axes that broadcasting `shape` to x.shape created (broadcast's VJP)."""
        shape = tuple(shape)
        if x.shape == shape:
            return x
        lead = x.type.rank - len(shape)
        axes = list(range(lead))
        axes += [lead + i for i, d in enumerate(shape) if d == 1 and x.shape[lead + i] != 1]
        y = self.emit("reduce_sum", [x], {"axes": tuple(axes), "keepdims": True}) if axes else x
        return self.emit("reshape", [y], {"shape": shape}) if y.shape != shape else y

    def build(
        self,
        outputs: Sequence[Node],
        output_names: Sequence[str] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Graph:
        from graphc.verify import verify

        g = Graph(self.nodes, outputs, output_names, self.name, meta)
        verify(g)
        return g
