"""Argument handling shared by the 2-D layers of nn.functional: pairs, the optional batch
dimension, the per-channel bias."""

from __future__ import annotations

from graphc import dispatch
from graphc import functions as G
from graphc.errors import ShapeError
from graphc.tensor import Tensor


def pair(v, name: str) -> tuple[int, int]:
    """An int or a 1- or 2-sequence of ints, as a pair (PyTorch's _pair)."""
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(x) for x in v)
    if len(v) == 1:
        return (v[0], v[0])
    if len(v) != 2:
        raise dispatch.user_error(ShapeError, f"{name} must be an int or a pair, got {v}")
    return v


def batched(input: Tensor, op: str) -> tuple[Tensor, bool]:
    """PyTorch accepts unbatched CHW input for 2-D layers: add and later drop the batch dim."""
    if input.ndim == 3:
        return G.unsqueeze(input, 0), True
    if input.ndim != 4:
        raise dispatch.user_error(
            ShapeError,
            f"{op}: expected a 3-D (CHW) or 4-D (NCHW) input, got shape {list(input.shape)}",
        )
    return input, False


def bias_nchw(out: Tensor, bias: Tensor | None) -> Tensor:
    if bias is None:
        return out
    return G.add(out, G.reshape(bias, 1, -1, 1, 1))
