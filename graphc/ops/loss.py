"""Loss ops whose derivative is not the derivative of their formula.

binary_cross_entropy is an op, not a composition of log and clamps, because PyTorch defines
its gradient by a formula of its own: (x - y) / max((1 - x) x, 1e-12). Differentiating the
clamped logs instead gives 0 where a log is clamped (x = 0 with y = 1: PyTorch's -1e12
pushes x back up) and up to 1e30 near the ends, where PyTorch's stays below 1e12. Every
other loss is a composition in graphc/nn/functional_loss.py.
"""

from __future__ import annotations

import numpy as np

from graphc.ir import TensorType
from graphc.ops.registry import defop, require_float, same_type

LOG_FLOOR = -100.0  # PyTorch clamps both logs here, so a saturated probability costs 100
GRAD_EPS = 1e-12  # and the gradient's denominator x (1 - x) here


def _bce_rule(x: TensorType, y: TensorType) -> TensorType:
    t = same_type("binary_cross_entropy", x, y)
    require_float("binary_cross_entropy", t)
    return t


def _bce_ref(x, y):
    # -(y log(x) + (1 - y) log(1 - x)), written as PyTorch's kernel writes it
    floor = x.dtype.type(LOG_FLOOR)
    log_x = np.maximum(np.log(x), floor)
    log_1mx = np.maximum(np.log1p(-x), floor)
    return ((y - 1) * log_1mx - y * log_x).astype(x.dtype, copy=False)


def _bce_vjp(b, g, out, x, y):
    one = b.full_like(x, 1.0)
    denom = b.maximum(b.mul(b.sub(one, x), x), b.full_like(x, GRAD_EPS))
    gx = b.div(b.mul(g, b.sub(x, y)), denom)
    # d/dy = log(1 - x) - log(x) = -logit(x), as PyTorch's target gradient
    gy = b.mul(g, b.neg(b.log(b.div(x, b.sub(one, x)))))
    return gx, gy


defop(
    "binary_cross_entropy",
    type_rule=_bce_rule,
    ref=_bce_ref,
    vjp=_bce_vjp,
    arity=2,
    traits=("elementwise",),
    flops=lambda out, x, y: 8 * out.numel,
    doc="-(y log x + (1 - y) log(1 - x)) per element, each log clamped at -100 (BCELoss)",
)
