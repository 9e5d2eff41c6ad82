"""What an exported library holds and where, as data: the state block (every tensor kept
between calls), how each graph input is bound and where each output goes, the program of
host-computed scalars, and the structure record of weights files. bind.py builds it from a
traced step; csource.py writes it as C tables and abi.py as NAME.json.

The state block holds each tensor 64-byte aligned: the model's state_dict (saved under its
names), the optimizer's per-parameter state (optimizer.py), the random-number generator's
(seed, offset) if the step draws, and constants the step reads (never saved).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from graphc.errors import GraphcError
from graphc.ir import Graph, Node

ALIGN = 64
TRAIN, INFERENCE = "train", "inference"
SAFETENSORS_DTYPES = {
    np.dtype(np.float64): "F64",
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
    np.dtype(np.int16): "I16",
    np.dtype(np.int8): "I8",
    np.dtype(np.uint8): "U8",
    np.dtype(np.bool_): "BOOL",
}


class ExportError(GraphcError):
    """A step or model that cannot become a library, or a library that cannot be built."""


@dataclass
class Stored:
    """A tensor of the state block."""

    name: str | None  # in weights files; None: a constant, never saved
    alias: str | None  # also accepted when loading
    value: np.ndarray  # at export: the library's initial value
    offset: int = 0
    role: str = "model"  # "model" | "optimizer" | "rng" | "constant"
    entry: int = -1  # the optimizer entry it belongs to

    @property
    def nbytes(self) -> int:
        return int(self.value.nbytes)

    @property
    def st_dtype(self) -> str:
        return SAFETENSORS_DTYPES[self.value.dtype]

    @property
    def required(self) -> bool:
        return self.role == "model"


class StateBlock:
    """The state block's tensors, each held once: a tensor reached twice (a parameter that
    is also an input of the graph) is one slot, found by its numpy array."""

    def __init__(self) -> None:
        self.tensors: list[Stored] = []
        self._by_array: dict[int, int] = {}

    def add(self, stored: Stored, array: np.ndarray) -> int:
        self._by_array.setdefault(id(array), len(self.tensors))
        self.tensors.append(stored)
        return len(self.tensors) - 1

    def index(self, array: np.ndarray) -> int:
        """The slot of `array`; one it does not hold yet is a constant (captured data)."""
        if id(array) not in self._by_array:
            self.add(Stored(None, None, np.array(array), role="constant"), array)
        return self._by_array[id(array)]

    @staticmethod
    def value(t) -> np.ndarray:
        """A private copy of a tensor's value (the library's initial one)."""
        data = t._data
        if data is None or data.dtype not in SAFETENSORS_DTYPES:
            kind = getattr(data, "dtype", None)
            raise ExportError(f"a tensor of dtype {kind} cannot be saved in a weights file")
        return np.array(data, order="C", copy=True)  # (ascontiguousarray makes 0-d 1-d)

    def place(self) -> int:
        """Gives every tensor its offset; returns the block's size."""
        at = 0
        for t in self.tensors:
            t.offset = at
            at += -(-max(t.nbytes, 1) // ALIGN) * ALIGN
        return at


@dataclass
class OptimizerEntry:
    """One parameter's optimizer state: state_dict()["state"][index]."""

    index: int
    keys: list[str]
    first: int  # its tensors: tensors[first : first + len(keys)]
    present: bool  # at export (an SGD buffer before its first step is not, nor Adam's)


@dataclass
class Binding:
    kind: str  # "argument" | "state" | "scalar"
    index: int  # the argument, the stored tensor, or the scalar slot


@dataclass
class Argument:
    name: str  # "inputs", "labels"
    node: Node
    classes: int | None = None  # labels: valid values 0..classes-1 ...
    ignore: int | None = None  # ... and this one

    @property
    def count(self) -> int:
        return int(math.prod(self.node.shape))


@dataclass(frozen=True)
class Location:
    in_arena: bool
    where: int  # arena offset, or graph input index


@dataclass
class Scalar:
    """One host-computed value (graphc/host_scalars.py); see runtime.h's enum grt_op."""

    op: str
    name: str
    dtype: np.dtype
    slot: int = -1
    group: int = -1
    entry: int = -1
    tensor: int = -1
    a: float = 0.0
    n: int = 0


@dataclass
class Layout:
    name: str
    kind: str  # TRAIN or INFERENCE
    graph: Graph
    arguments: list[Argument]
    result: Location
    result_node: Node
    inputs: list[Binding]
    tensors: list[Stored]
    entries: list[OptimizerEntry]
    scalars: list[Scalar]
    slots: int
    writebacks: list[tuple[Location, int]]  # (where the new value is, the tensor it updates)
    lr_ratio: list[float]
    lr_initial: list[float]
    tree: list[tuple[str, str | int]]  # tree.py's pieces
    entry_fragments: list[str]
    kernel_errors: list[str | None]
    state_bytes: int = 0
    outputs: list[dict] = field(default_factory=list)  # for NAME.json

    @property
    def arena_bytes(self) -> int:
        return self.graph.meta["memory"].arena_bytes

    @property
    def uses_lr(self) -> bool:
        return any(s.op == "lr" for s in self.scalars)

    @property
    def file_order(self) -> list[int]:
        """The saved tensors in the order a file holds them: widest items first, as
        graphc.save does, so every tensor's data is aligned to its item size."""
        saved = [i for i, t in enumerate(self.tensors) if t.name is not None]
        return sorted(saved, key=lambda i: -self.tensors[i].value.dtype.itemsize)
