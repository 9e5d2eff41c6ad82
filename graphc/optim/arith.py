"""PyTorch's CPU update arithmetic, rounding for rounding, for the optimizers' in-place steps.

PyTorch's vectorised CPU kernels compute several of the ops optimizers use as one fused
multiply-add (one rounding instead of two). Measured on PyTorch 2.13 (float32, 1e5 random
elements, results compared bit for bit):
- `a.add(b, alpha=s)` / `a.sub(b, alpha=s)` = fma(b, s, a)        (two roundings: 21% differ)
- `a.lerp(b, w)` = fma(w, b - a, a) if |w| < 0.5 else fma(w - 1, b - a, b)
- `a.addcmul(b, c, value=s)` = fma(s * b, c, a)
- `a.addcdiv(b, c, value=s)` = a + (s * b) / c                     (no fma: a division)
Scalars are rounded to the tensor's dtype before use, as PyTorch does. graphc has no fma op,
so a float32 fma is computed in float64 (the product of two float32 numbers is exact there)
and rounded once; in float64 it is an ordinary multiply-add.
"""

from __future__ import annotations

import numpy as np

from graphc import dtypes
from graphc import functions as G
from graphc.tensor import Tensor

Scalar = float | Tensor


def hyper(s: Scalar, like: Tensor) -> Scalar:
    """A hyperparameter as PyTorch applies it to `like`: rounded to like's dtype. (A float64
    runtime scalar would otherwise make arithmetic on a 0-d tensor run in float64.)"""
    return _rounded(s, like.dtype)


def _rounded(s: Scalar, dtype) -> Scalar:
    if isinstance(s, Tensor):
        return G.cast(s, dtype)
    return float(np.dtype(dtype.np).type(s))


def fma(x: Tensor | Scalar, y: Tensor | Scalar, c: Tensor) -> Tensor:
    """x * y + c rounded once, in c's dtype (x, y: tensors like c, or scalars)."""
    dt = c.dtype
    x, y = (v if isinstance(v, Tensor) and v.ndim > 0 else _rounded(v, dt) for v in (x, y))
    if dt == dtypes.float64:
        return G.add(G.mul(x, y), c)
    wide = dtypes.float64
    x, y = (G.cast(v, wide) if isinstance(v, Tensor) else v for v in (x, y))
    return G.cast(G.add(G.mul(x, y), G.cast(c, wide)), dt)


def add_scaled(a: Tensor, b: Tensor, alpha: Scalar) -> Tensor:
    """a.add(b, alpha=alpha)."""
    return fma(b, alpha, a)


def lerp(start: Tensor, end: Tensor, weight: float) -> Tensor:
    """start.lerp(end, weight) for a Python-number weight."""
    w = float(np.dtype(start.dtype.np).type(weight))
    diff = G.sub(end, start)
    if abs(w) < 0.5:
        return fma(w, diff, start)
    coeff = float(np.dtype(start.dtype.np).type(w - 1.0))  # w - 1 in the tensor's dtype
    return fma(coeff, diff, end)


def addcmul(a: Tensor, b: Tensor, c: Tensor, value: float) -> Tensor:
    """a.addcmul(b, c, value=value)."""
    return fma(G.mul(b, _rounded(value, a.dtype)), c, a)


def addcdiv(a: Tensor, b: Tensor, c: Tensor, value: Scalar) -> Tensor:
    """a.addcdiv(b, c, value=value)."""
    return G.add(a, G.div(G.mul(b, _rounded(value, a.dtype)), c))
