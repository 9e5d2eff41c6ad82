"""Element types: the few dtypes graphc knows, their numpy twins and PyTorch's promotion rules."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DType:
    name: str  # PyTorch's spelling: "float32"
    short: str  # IR spelling: "f32"
    np: type  # numpy scalar type
    category: int  # 0 bool < 1 integer < 2 floating (PyTorch promotion categories)
    itemsize: int

    @property
    def is_floating_point(self) -> bool:
        return self.category == 2

    def __repr__(self) -> str:
        return f"graphc.{self.name}"

    def __str__(self) -> str:
        return self.short


float32 = DType("float32", "f32", np.float32, 2, 4)
float64 = DType("float64", "f64", np.float64, 2, 8)
int64 = DType("int64", "i64", np.int64, 1, 8)
int32 = DType("int32", "i32", np.int32, 1, 4)
bool_ = DType("bool", "bool", np.bool_, 0, 1)

ALL = (float32, float64, int64, int32, bool_)
_BY_NP = {np.dtype(d.np): d for d in ALL}
_BY_NAME = {d.name: d for d in ALL} | {d.short: d for d in ALL}
_RANK = {bool_: 0, int32: 1, int64: 2, float32: 3, float64: 4}

default_float = float32


def from_numpy(dt: np.dtype | type) -> DType:
    """The graphc dtype of a numpy dtype; other numpy dtypes are refused rather than guessed."""
    d = _BY_NP.get(np.dtype(dt))
    if d is None:
        raise TypeError(
            f"numpy dtype {np.dtype(dt)} is not supported by graphc; "
            "convert to float32, float64, int64, int32 or bool first"
        )
    return d


def get(name: str | DType) -> DType:
    if isinstance(name, DType):
        return name
    try:
        return _BY_NAME[name]
    except KeyError:
        raise TypeError(
            f"unknown dtype {name!r}; known: {', '.join(d.name for d in ALL)}"
        ) from None


def promote(a: DType, b: DType) -> DType:
    """Result dtype of a binary op on two tensors: the higher kind, then the wider type."""
    return a if _RANK[a] >= _RANK[b] else b


def promote_with_scalar(t: DType, scalar: object) -> DType:
    """A Python scalar only lifts the category (PyTorch's weak scalars): f32 * 2.5 stays f32."""
    if isinstance(scalar, bool):
        cat = 0
    elif isinstance(scalar, int):
        cat = 1
    else:
        cat = 2
    if cat <= t.category:
        return t
    return int64 if cat == 1 else default_float
