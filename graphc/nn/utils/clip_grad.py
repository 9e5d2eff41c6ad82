"""Gradient clipping with PyTorch's arithmetic. Inside a compiled step the norms and the
scaling are part of the graph: .grad is scaled where it lives, before optimizer.step()
reads it, with no value leaving the compiled code."""

from __future__ import annotations

import math
from collections.abc import Iterable

from graphc import dispatch
from graphc import functions as G
from graphc.errors import GraphcError
from graphc.tensor import Tensor


def _grads(parameters: Tensor | Iterable[Tensor]) -> list[Tensor]:
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def _norm(t: Tensor, norm_type: float) -> Tensor:
    """torch.linalg.vector_norm of every element of t."""
    a = G.abs(t)
    if norm_type == math.inf:
        return G.amax(a)
    if norm_type == -math.inf:
        return G.amin(a)
    if norm_type == 0:
        return G.sum(G.cast(G.ne(t, 0), t.dtype))
    if norm_type == 1:
        return G.sum(a)
    if norm_type == 2:
        return G.sqrt(G.sum(G.mul(t, t)))
    return G.pow(G.sum(G.pow(a, norm_type)), 1.0 / norm_type)


def get_total_norm(
    tensors: Tensor | Iterable[Tensor],
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    """The norm of the norms of `tensors` (as if all were one vector)."""
    tensors = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    norm_type = float(norm_type)
    if not tensors:
        return G.tensor(0.0)
    norms = [_norm(t, norm_type) for t in tensors]
    total = _norm(G.stack(norms), norm_type) if len(norms) > 1 else norms[0]
    if error_if_nonfinite:
        if dispatch.is_tracing():
            raise dispatch.user_error(
                GraphcError,
                "clip_grad_norm_(error_if_nonfinite=True) needs the norm's value, which a "
                "compiled step does not have while it is traced; leave error_if_nonfinite "
                "False (a NaN loss stops `graphc train` anyway) or clip outside the step",
            )
        value = float(total.item())
        if math.isnan(value) or math.isinf(value):
            raise dispatch.user_error(
                GraphcError,
                f"The total norm of order {norm_type} for gradients from `parameters` is "
                "non-finite, so it cannot be clipped. To disable this error and scale the "
                "gradients by the non-finite norm anyway, set `error_if_nonfinite=False`",
            )
    return total


def clip_grad_norm_(
    parameters: Tensor | Iterable[Tensor],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    """Scales every .grad by min(1, max_norm / (total_norm + 1e-6)); returns total_norm."""
    grads = _grads(parameters)
    if not grads:
        return G.tensor(0.0)
    with dispatch.no_grad():
        total = get_total_norm(grads, norm_type, error_if_nonfinite)
        coef = G.clamp(G.div(float(max_norm), G.add(total, 1e-6)), max=1.0)
        for g in grads:
            g.mul_(G.cast(coef, g.dtype))
    return total


def clip_grad_value_(
    parameters: Tensor | Iterable[Tensor], clip_value: float, foreach: bool | None = None
) -> None:
    """Clamps every .grad to [-clip_value, clip_value]."""
    with dispatch.no_grad():
        for g in _grads(parameters):
            g.clamp_(-float(clip_value), float(clip_value))
