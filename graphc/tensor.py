"""Tensor: PyTorch's user-facing tensor, backed by a numpy array (eager) or an IR node (traced).

A Tensor holds either `_data` (an ndarray: eager) or `_value` (a Node of the graph being
traced). Its methods never look at which: they call the math functions in
`graphc.functions`, which call `dispatch.apply`, and the active mode does the rest.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc import dispatch, dtypes
from graphc.device import CPU, check_device, is_device
from graphc.errors import GraphcError, TraceError
from graphc.ir import TensorType


class Size(tuple):
    """A tensor's shape: a tuple of ints (torch.Size)."""

    def numel(self) -> int:
        n = 1
        for d in self:
            n *= d
        return n

    def __repr__(self) -> str:
        return f"graphc.Size({list(self)})"


class Tensor:
    __slots__ = (
        "_data",
        "_value",
        "_trace",
        "_requires_grad",
        "_grad",
        "_node",
        "_version",
        "_base",
        "__weakref__",
        "__dict__",
    )
    __array_priority__ = 1000  # numpy defers `ndarray * tensor` to Tensor.__rmul__

    def __init__(self, data: Any = None, *, requires_grad: bool = False) -> None:
        if isinstance(data, Tensor):
            data = data._concrete("Tensor(tensor)")
        array = _as_array(data if data is not None else [])
        self._init(array, None, None)
        self.requires_grad = requires_grad

    def _init(self, data, value, trace) -> None:
        self._data = data
        self._value = value
        self._trace = trace
        self._requires_grad = False
        self._grad = None
        self._node = None
        self._version = [0]  # shared by views: in-place writes through any alias bump it
        self._base = None

    @classmethod
    def _wrap(cls, array: np.ndarray) -> Tensor:
        t = object.__new__(Tensor)
        t._init(array, None, None)
        return t

    @classmethod
    def _symbolic(cls, node, trace, requires_grad: bool = False) -> Tensor:
        t = object.__new__(Tensor)
        t._init(None, node, trace)
        t._requires_grad = requires_grad
        return t

    # ---- identity ------------------------------------------------------------------------

    def _type(self) -> TensorType:
        if self._data is not None:
            return TensorType(self._data.shape, dtypes.from_numpy(self._data.dtype))
        return self._value.type

    def _check_eager(self) -> None:
        if self._data is None:
            raise TraceError(
                "a tensor computed inside a compiled function was used outside it; return it "
                "from the function instead (compiled functions return ordinary tensors)"
            )

    def _concrete(self, why: str) -> np.ndarray:
        return dispatch.current().concrete(self, why)

    @property
    def shape(self) -> Size:
        return Size(self._data.shape if self._data is not None else self._value.shape)

    @property
    def dtype(self) -> dtypes.DType:
        if self._data is not None:
            return dtypes.from_numpy(self._data.dtype)
        return self._value.dtype

    @property
    def device(self):
        return CPU

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def dim(self) -> int:
        return len(self.shape)

    def size(self, dim: int | None = None):
        s = self.shape
        return s if dim is None else s[dim]

    def numel(self) -> int:
        return self.shape.numel()

    nelement = numel

    def element_size(self) -> int:
        return self.dtype.itemsize

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    __hash__ = object.__hash__

    # ---- autograd ------------------------------------------------------------------------

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if not value and self._requires_grad and not self.is_leaf:
            raise dispatch.user_error(
                GraphcError,
                "you can only change requires_grad flags of leaf tensors; to use a computed "
                "tensor without gradients, use t.detach()",
            )
        if value and not self.dtype.is_floating_point:
            raise dispatch.user_error(
                GraphcError,
                f"only floating-point tensors can require gradients, not {self.dtype}; "
                "convert it first (t.float())",
            )
        self._requires_grad = bool(value)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        self.requires_grad = requires_grad
        return self

    @property
    def is_leaf(self) -> bool:
        if self._value is not None:
            return self._trace.is_leaf(self)
        return self._node is None

    @property
    def grad_fn(self):
        return self._node

    @property
    def grad(self) -> Tensor | None:
        return dispatch.current().get_grad(self)

    @grad.setter
    def grad(self, g: Tensor | None) -> None:
        dispatch.current().set_grad(self, g)

    def backward(
        self,
        gradient: Tensor | None = None,
        retain_graph: bool | None = None,
        create_graph: bool = False,
    ) -> None:
        if create_graph:
            raise GraphcError(
                "create_graph=True is not supported; compute higher derivatives "
                "inside a compiled function instead"
            )
        dispatch.current().backward(self, gradient, bool(retain_graph))
        dispatch.run_after_backward()  # e.g. DistributedDataParallel's gradient averaging

    def detach(self) -> Tensor:
        """The same values without gradient history (in-place writes reach the original)."""
        if self._data is not None:
            t = Tensor._wrap(self._data)
            t._version = self._version
        else:
            t = Tensor._symbolic(self._value, self._trace)
        t._base = self
        return t

    def detach_(self) -> Tensor:
        self._node = None
        self._requires_grad = False
        return self

    @property
    def data(self) -> Tensor:
        return self.detach()

    @data.setter
    def data(self, new: Tensor) -> None:
        if self._data is not None and new._data is not None and not dispatch.is_tracing():
            self._data = new._data
            self._version = [0]
        else:
            dispatch.current().assign(self, new)

    # ---- reading values ------------------------------------------------------------------

    def numpy(self) -> np.ndarray:
        if self.requires_grad:
            raise GraphcError(
                "can't call numpy() on a tensor that requires grad; use tensor.detach().numpy()"
            )
        return self._concrete(".numpy()")

    def item(self) -> float | int | bool:
        if self.numel() != 1:
            raise GraphcError(
                f"a tensor with {self.numel()} elements cannot be converted to a Python scalar"
            )
        return self._concrete(".item()").reshape(()).item()

    def tolist(self):
        return self._concrete(".tolist()").tolist()

    def __array__(self, dtype=None, copy=None):
        a = self._concrete("numpy conversion")
        return a if dtype is None else a.astype(dtype)

    def __bool__(self) -> bool:
        if self.numel() != 1:
            raise GraphcError(
                f"the truth value of a tensor with {self.numel()} elements is "
                "ambiguous; use .any() or .all()"
            )
        return bool(self._concrete("a Python `if`/`while`/`and`/`or` on a tensor value"))

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self.dtype.is_floating_point or self.numel() != 1:
            raise TypeError("only integer tensors of a single element can be used as an index")
        return int(self.item())

    def __format__(self, spec: str) -> str:
        if spec and self.numel() == 1:
            return format(self.item(), spec)
        return repr(self)

    def __repr__(self) -> str:
        if self._data is None:
            where = f" from {self._value.loc}" if self._value.loc else ""
            return f"tensor(<traced {self._value.type}{where}>)"
        body = np.array2string(self._data, separator=", ", prefix="tensor(", precision=4)
        extra = ""
        if self.dtype not in (dtypes.float32, dtypes.int64, dtypes.bool_) or self.numel() == 0:
            extra += f", dtype={self.dtype!r}"
        if self._node is not None:
            extra += f", grad_fn=<{self._node.op}>"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    # ---- conversions ---------------------------------------------------------------------

    def to(self, *args, **kwargs) -> Tensor:
        """to(dtype), to(device), to(device, dtype), to(other): PyTorch's forms. The device
        must be the CPU; non_blocking and copy are accepted (there is nothing to overlap)."""

        dtype = kwargs.get("dtype")
        check_device(kwargs.get("device"), "Tensor.to")
        for a in args:
            if is_device(a):
                check_device(a, "Tensor.to")
            elif isinstance(a, Tensor):
                dtype = a.dtype
            elif isinstance(a, (dtypes.DType, str)):
                dtype = a
        if dtype is None:
            return self
        return F.cast(self, dtypes.get(dtype))

    def cuda(self, device=None, non_blocking: bool = False) -> Tensor:
        check_device("cuda" if device is None else device, "Tensor.cuda")
        return self

    def type(self, dtype=None):
        if dtype is None:
            return f"graphc.{self.dtype.name}"
        return self.to(dtype)

    def type_as(self, other: Tensor) -> Tensor:
        return self.to(other.dtype)

    def float(self) -> Tensor:
        return F.cast(self, dtypes.float32)

    def double(self) -> Tensor:
        return F.cast(self, dtypes.float64)

    def long(self) -> Tensor:
        return F.cast(self, dtypes.int64)

    def int(self) -> Tensor:
        return F.cast(self, dtypes.int32)

    def bool(self) -> Tensor:
        return F.cast(self, dtypes.bool_)

    def cpu(self) -> Tensor:
        return self

    def contiguous(self) -> Tensor:
        return self

    def clone(self) -> Tensor:
        return F.clone(self)

    def __deepcopy__(self, memo: dict) -> Tensor:
        """copy.deepcopy: a leaf (a parameter, data) with its own copy of the values and of
        its .grad, as in PyTorch (nn.TransformerEncoder deep-copies its layer this way)."""
        import copy

        self._check_eager()
        if self._node is not None:
            raise GraphcError(
                "only tensors created explicitly by the user (graph leaves) support deepcopy; "
                "detach() it first"
            )
        new = object.__new__(type(self))
        memo[id(self)] = new
        new._init(self._data.copy(), None, None)
        new._requires_grad = self._requires_grad
        if self._grad is not None:
            new._grad = copy.deepcopy(self._grad, memo)
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new

    # ---- in-place updates ----------------------------------------------------------------

    def _inplace(self, value: Tensor) -> Tensor:
        if value.dtype != self.dtype:
            if value.dtype.category > self.dtype.category:
                raise GraphcError(
                    f"result type {value.dtype.name} can't be cast to the "
                    f"desired output type {self.dtype.name}"
                )
            value = F.cast(value, self.dtype)
        if tuple(value.shape) != tuple(self.shape):
            value = F.broadcast_to(value, self.shape)
        dispatch.current().assign(self, value)
        return self

    def copy_(self, src) -> Tensor:
        return self._inplace(F.as_tensor_like(src, self))

    def zero_(self) -> Tensor:
        return self._inplace(F.full(self.shape, 0, dtype=self.dtype))

    def fill_(self, value) -> Tensor:
        return self._inplace(F.full(self.shape, value, dtype=self.dtype))

    def add_(self, other, alpha=1) -> Tensor:
        return self._inplace(F.add(self, other, alpha=alpha))

    def sub_(self, other, alpha=1) -> Tensor:
        return self._inplace(F.sub(self, other, alpha=alpha))

    def mul_(self, other) -> Tensor:
        return self._inplace(F.mul(self, other))

    def div_(self, other) -> Tensor:
        return self._inplace(F.div(self, other))

    def addcmul_(self, t1, t2, value=1) -> Tensor:
        # self + value * t1 * t2, evaluated left to right as PyTorch's kernel does
        return self._inplace(F.add(self, F.mul(F.mul(t1, value), t2)))

    def addcdiv_(self, t1, t2, value=1) -> Tensor:
        return self._inplace(F.add(self, F.div(F.mul(t1, value), t2)))

    def lerp_(self, end, weight) -> Tensor:
        return self._inplace(F.lerp(self, end, weight))

    def clamp_(self, min=None, max=None) -> Tensor:
        return self._inplace(F.clamp(self, min, max))

    def clamp_min_(self, min) -> Tensor:
        return self._inplace(F.clamp(self, min=min))

    def clamp_max_(self, max) -> Tensor:
        return self._inplace(F.clamp(self, max=max))

    def sqrt_(self) -> Tensor:
        return self._inplace(F.sqrt(self))

    def neg_(self) -> Tensor:
        return self._inplace(F.neg(self))

    def uniform_(self, a: float = 0.0, b: float = 1.0) -> Tensor:
        u = F.rand(self.shape, dtype=self.dtype)
        return self._inplace(F.add(F.mul(u, b - a), a))

    def normal_(self, mean: float = 0.0, std: float = 1.0) -> Tensor:
        n = F.randn(self.shape, dtype=self.dtype)
        return self._inplace(F.add(F.mul(n, std), mean))

    __iadd__ = add_
    __isub__ = sub_
    __imul__ = mul_
    __itruediv__ = div_

    # ---- arithmetic operators ------------------------------------------------------------

    def __add__(self, o):
        return F.add(self, o)

    def __radd__(self, o):
        return F.add(o, self)

    def __sub__(self, o):
        return F.sub(self, o)

    def __rsub__(self, o):
        return F.sub(o, self)

    def __mul__(self, o):
        return F.mul(self, o)

    def __rmul__(self, o):
        return F.mul(o, self)

    def __truediv__(self, o):
        return F.div(self, o)

    def __rtruediv__(self, o):
        return F.div(o, self)

    def __pow__(self, o):
        return F.pow(self, o)

    def __rpow__(self, o):
        return F.pow(o, self)

    def __matmul__(self, o):
        return F.matmul(self, o)

    def __rmatmul__(self, o):
        return F.matmul(o, self)

    def __neg__(self):
        return F.neg(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return F.abs(self)

    def __eq__(self, o):  # type: ignore[override]
        return F.eq(self, o)

    def __ne__(self, o):  # type: ignore[override]
        return F.ne(self, o)

    def __lt__(self, o):
        return F.lt(self, o)

    def __le__(self, o):
        return F.le(self, o)

    def __gt__(self, o):
        return F.gt(self, o)

    def __ge__(self, o):
        return F.ge(self, o)

    def __invert__(self):
        return F.logical_not(self)

    def __and__(self, o):
        return F.logical_and(self, o)

    def __or__(self, o):
        return F.logical_or(self, o)

    def __getitem__(self, index):
        return F.getitem(self, index)

    def __setitem__(self, index, value) -> None:
        if self._data is None or self.requires_grad and dispatch.is_grad_enabled():
            raise GraphcError(
                "item assignment (t[i] = v) is supported only on eager tensors "
                "without gradients; build the value with graphc.where instead"
            )
        self._data[index] = np.asarray(value._data if isinstance(value, Tensor) else value)
        self._version[0] += 1


def _as_array(data: Any) -> np.ndarray:
    """numpy array for graphc.tensor(data): PyTorch's dtype inference (floats -> float32)."""
    if isinstance(data, np.ndarray):
        arr = data
    elif isinstance(data, np.generic):
        arr = np.asarray(data)  # a numpy scalar keeps its dtype, as in torch.tensor
    elif isinstance(data, Tensor):
        arr = data._concrete("graphc.tensor(tensor)")
    else:
        if isinstance(data, (list, tuple)) and any(isinstance(d, Tensor) for d in data):
            data = [
                d._concrete("graphc.tensor([...])") if isinstance(d, Tensor) else d for d in data
            ]
        try:
            arr = np.asarray(data)
        except ValueError:
            raise ValueError(
                "the nested lists are ragged (rows of one dimension differ in length); a "
                "tensor needs lists of numbers of one shape"
            ) from None
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        elif arr.dtype.kind in "iu":
            arr = arr.astype(np.int64)
    if arr.dtype.kind == "f" and arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float32)
    dtypes.from_numpy(arr.dtype)  # refuses unsupported dtypes with a clear message
    return arr


# Every method above calls into the math functions; imported last (they import Tensor).
from graphc import functions as F  # noqa: E402
