"""How a compiled function's graph inputs and outputs connect to Python objects at each call.

Every graph input has a Source (where its value comes from on this call) and every graph
output a Sink (where its value goes). They are the only code that touches user objects per
call, so they are kept to a few attribute reads and writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from graphc.tensor import Tensor


class Source:
    kind = "input"

    def read(self, args: Sequence, host: dict) -> np.ndarray:
        raise NotImplementedError


@dataclass(eq=False)
class ArgSource(Source):
    """The index-th tensor among the call's (flattened) arguments."""

    index: int
    kind = "input"

    def read(self, args, host):
        a = args[self.index]
        return a._data if isinstance(a, Tensor) else np.asarray(a)


@dataclass(eq=False)
class TensorSource(Source):
    """A tensor that lives outside the function: a parameter, buffer or optimizer state."""

    tensor: Tensor
    kind: str = "capture"

    def read(self, args, host):
        return self.tensor._data


@dataclass(eq=False)
class GradSource(Source):
    """The .grad of a tensor (gradient accumulation across calls)."""

    tensor: Tensor
    kind = "grad"

    def read(self, args, host):
        return self.tensor._grad._data


@dataclass(eq=False)
class HostGroup:
    """A host function computing some scalars once per call (lr, step-dependent factors)."""

    fn: Callable[[], Sequence[float]]
    dtype: type
    recipe: object = None  # what fn computes, as data (graphc/host_scalars.py), if known


@dataclass(eq=False)
class HostSource(Source):
    group: HostGroup
    k: int
    kind = "scalar"

    def __post_init__(self) -> None:
        # One persistent 0-d array: native code keeps its pointer from call to call.
        self.buffer = np.zeros((), self.group.dtype)

    def read(self, args, host):
        self.buffer[()] = host[self.group][self.k]
        return self.buffer


def evaluate_host(groups: Sequence[HostGroup]) -> dict:
    return {g: tuple(g.fn()) for g in groups}


class Sink:
    def write(self, value: np.ndarray, args: Sequence) -> None:
        raise NotImplementedError


@dataclass(eq=False)
class ReturnSink(Sink):
    def write(self, value, args):  # return values are assembled by the caller
        pass


@dataclass(eq=False)
class TensorSink(Sink):
    """Writes a new value into a tensor in place, so every alias and view sees it."""

    tensor: Tensor

    def write(self, value, args):
        t = self.tensor
        if value is not t._data:  # native code already updated it in place
            np.copyto(t._data, value)
        t._version[0] += 1


@dataclass(eq=False)
class GradSink(Sink):
    tensor: Tensor

    def write(self, value, args):
        self.tensor._grad = _grad_tensor(self.tensor._grad, value)


@dataclass(eq=False)
class ArgGradSink(Sink):
    index: int

    def write(self, value, args):
        a = args[self.index]
        if isinstance(a, Tensor):
            a._grad = _grad_tensor(a._grad, value)


def _grad_tensor(current: Tensor | None, value: np.ndarray) -> Tensor:
    """The .grad tensor holding `value`: reused when it already does (native outputs are
    persistent buffers), wrapped without a copy when the array is private and writable."""
    if current is not None and current._data is value:
        return current
    if not (value.flags.writeable and value.flags.c_contiguous):
        value = np.array(value)
    return Tensor._wrap(value)
