"""Ops that make tensors from attributes alone: constants, fills, ranges, random draws."""

from __future__ import annotations

import numpy as np

from graphc import dtypes
from graphc import random as rng
from graphc.errors import ShapeError
from graphc.ir import ConstArray, TensorType
from graphc.ops.registry import REQUIRED, NoGrad, defop, numel

CONSTANT = NoGrad("a constant has no inputs to differentiate")


def _full_ref(value, shape, dtype):
    return np.full(shape, value, dtype=dtype.np)


def _full_rule(value, shape, dtype) -> TensorType:
    if any(d < 0 for d in shape):
        raise ShapeError(f"full: negative dimension in shape {list(shape)}")
    return TensorType(tuple(shape), dtype)


defop(
    "full",
    type_rule=_full_rule,
    ref=_full_ref,
    arity=0,
    traits=("creation",),
    vjp=CONSTANT,
    attrs={"value": REQUIRED, "shape": (), "dtype": dtypes.float32},
    doc="a tensor of one repeated value",
)


def _const_array(value: ConstArray | np.ndarray) -> np.ndarray:
    # Nodes hold a ConstArray, but rules also see the raw array a builder was given.
    return value.array if isinstance(value, ConstArray) else np.asarray(value)


def _constant_rule(value: ConstArray | np.ndarray) -> TensorType:
    array = _const_array(value)
    return TensorType(array.shape, dtypes.from_numpy(array.dtype))


defop(
    "constant",
    type_rule=_constant_rule,
    ref=_const_array,
    arity=0,
    traits=("creation",),
    vjp=CONSTANT,
    attrs={"value": REQUIRED},
    doc="a tensor of literal values",
)


def _arange_rule(start, step, size, dtype) -> TensorType:
    if size < 0:
        raise ShapeError(f"arange: negative size {size}")
    return TensorType((size,), dtype)


defop(
    "arange",
    type_rule=_arange_rule,
    ref=lambda start, step, size, dtype: (start + step * np.arange(size)).astype(dtype.np),
    arity=0,
    traits=("creation",),
    vjp=CONSTANT,
    attrs={"start": 0, "step": 1, "size": REQUIRED, "dtype": dtypes.int64},
    doc="start + step * i for i in range(size)",
)


def _rng_rule(name):
    def rule(seed: TensorType, offset: TensorType, shape, dtype) -> TensorType:
        for t in (seed, offset):
            if t.shape != () or t.dtype != dtypes.int64:
                raise ShapeError(f"{name}: seed and offset must be i64[] scalars, got {t}")
        if not dtype.is_floating_point:
            raise ShapeError(f"{name}: dtype must be floating point, got {dtype}")
        return TensorType(tuple(shape), dtype)

    return rule


RANDOM = NoGrad("random draws do not depend differentiably on their seed")

defop(
    "rng_uniform",
    type_rule=_rng_rule("rng_uniform"),
    ref=lambda seed, offset, shape, dtype: rng.uniform(
        int(seed), int(offset), numel(shape), dtype.np
    ).reshape(shape),
    arity=2,
    traits=("random",),
    vjp=RANDOM,
    attrs={"shape": (), "dtype": dtypes.float32},
    doc="uniform [0, 1) floats from counters offset .. offset+numel-1 of the seed's stream",
)
defop(
    "rng_normal",
    type_rule=_rng_rule("rng_normal"),
    ref=lambda seed, offset, shape, dtype: rng.normal(
        int(seed), int(offset), numel(shape), dtype.np
    ).reshape(shape),
    arity=2,
    traits=("random",),
    vjp=RANDOM,
    attrs={"shape": (), "dtype": dtypes.float32},
    doc="standard normal floats; consumes 2*numel counters",
)
