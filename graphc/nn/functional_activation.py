"""nn.functional's activations, composed from primitive ops (see also `relu` in functional.py).

None of these is an op of its own: each is a few elementwise primitives, which the compiler
fuses with their neighbours into one loop kernel, and whose VJPs give the derivative. Two
rules shape the compositions:
- at a kink, the derivative is PyTorch's: which side of a `where` a boundary value falls on
  is chosen to match its backward kernels (hardtanh passes the gradient strictly inside its
  range, leaky_relu takes the slope at 0, ...);
- a branch that `where` discards gets a zero cotangent, and zero times an overflowed exp is
  NaN, so an exponential only ever sees the inputs of the branch that uses it.
Arithmetic follows PyTorch's CPU kernels' order of operations, so float32 results agree to
the last bit or two.
"""

from __future__ import annotations

import math

from graphc import dispatch
from graphc import functions as G
from graphc.errors import GraphcError, ShapeError
from graphc.tensor import Tensor


def _result(input: Tensor, out: Tensor, inplace: bool) -> Tensor:
    return input._inplace(out) if inplace else out


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    out = G.where(G.gt(input, 0), input, G.mul(input, negative_slope))
    return _result(input, out, inplace)


def leaky_relu_(input: Tensor, negative_slope: float = 0.01) -> Tensor:
    return leaky_relu(input, negative_slope, inplace=True)


def hardtanh(
    input: Tensor, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False
) -> Tensor:
    if min_val > max_val:
        raise dispatch.user_error(
            GraphcError, f"hardtanh: min_val ({min_val}) cannot be greater than max_val ({max_val})"
        )
    # The values are clamp's; the gradient passes only strictly inside (min_val, max_val),
    # as in PyTorch's hardtanh_backward (clamp's passes at the boundaries too).
    out = G.where(G.le(input, min_val), min_val, G.where(G.ge(input, max_val), max_val, input))
    return _result(input, out, inplace)


def hardtanh_(input: Tensor, min_val: float = -1.0, max_val: float = 1.0) -> Tensor:
    return hardtanh(input, min_val, max_val, inplace=True)


def relu6(input: Tensor, inplace: bool = False) -> Tensor:
    return hardtanh(input, 0.0, 6.0, inplace)


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    positive = G.gt(input, 0)
    negative_part = G.where(positive, 0.0, input)  # expm1 never sees a large positive input
    out = G.where(positive, input, G.mul(G.expm1(negative_part), alpha))
    return _result(input, out, inplace)


def elu_(input: Tensor, alpha: float = 1.0) -> Tensor:
    return elu(input, alpha, inplace=True)


_SQRT1_2 = math.sqrt(0.5)
_TANH_BETA = math.sqrt(2.0) * (2.0 / math.sqrt(math.pi)) * 0.5  # sqrt(2/pi), as PyTorch forms it
_TANH_KAPPA = 0.044715


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    if approximate == "none":
        # x * 0.5 * (1 + erf(x / sqrt(2)))
        return G.mul(G.mul(input, 0.5), G.add(G.erf(G.mul(input, _SQRT1_2)), 1.0))
    if approximate == "tanh":
        # 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))
        cube = G.mul(G.mul(input, input), input)
        inner = G.mul(G.add(input, G.mul(cube, _TANH_KAPPA)), _TANH_BETA)
        return G.mul(G.mul(input, 0.5), G.add(G.tanh(inner), 1.0))
    raise dispatch.user_error(
        GraphcError, f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}"
    )


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    # x * sigmoid(x): sigmoid's stable form keeps the derivative finite for every x
    return _result(input, G.mul(input, G.sigmoid(input)), inplace)


def _shifted_relu6(input: Tensor) -> Tensor:
    """min(max(x + 3, 0), 6), its gradient passing strictly inside -3 < x < 3 as in PyTorch's
    hardsigmoid/hardswish backward. The bounds are tested on x itself: x + 3 may round onto
    a bound (2.9999998 + 3 is 6.0 in float32) where PyTorch's gradient still passes."""
    return G.where(G.le(input, -3.0), 0.0, G.where(G.ge(input, 3.0), 6.0, G.add(input, 3.0)))


def hardsigmoid(input: Tensor, inplace: bool = False) -> Tensor:
    # min(max(x + 3, 0), 6) / 6
    return _result(input, G.div(_shifted_relu6(input), 6.0), inplace)


def hardswish(input: Tensor, inplace: bool = False) -> Tensor:
    # x * min(max(x + 3, 0), 6) / 6
    return _result(input, G.div(G.mul(input, _shifted_relu6(input)), 6.0), inplace)


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    # log1p(exp(beta * x)) / beta, and x itself where beta * x > threshold
    scaled = G.mul(input, beta)
    linear = G.gt(scaled, threshold)
    curved = G.div(G.log1p(G.exp(G.where(linear, 0.0, scaled))), beta)
    return G.where(linear, input, curved)


def logsigmoid(input: Tensor) -> Tensor:
    # min(x, 0) - log1p(exp(-|x|)), with -|x| written as a where so that its derivative at
    # x = 0 is -1 (not sign(0) = 0): log_sigmoid is smooth there, with slope 1/2.
    negative = G.lt(input, 0)
    low = G.where(negative, input, 0.0)
    minus_abs = G.where(negative, input, G.neg(input))
    return G.sub(low, G.log1p(G.exp(minus_abs)))


def prelu(input: Tensor, weight: Tensor) -> Tensor:
    """max(0, x) + weight * min(0, x), one weight per channel (dim 1) or one for all."""
    n = weight.numel()
    if n == 1:
        w = G.reshape(weight, ())
    else:
        channels = input.shape[1] if input.ndim >= 2 else 1
        if channels != n:
            raise dispatch.user_error(
                ShapeError,
                f"prelu: mismatch of parameter numbers and input channel size: {n} weights "
                f"for {channels} channel(s) (input shape {list(input.shape)}); use "
                f"nn.PReLU(num_parameters={channels}) or a single weight",
            )
        w = G.reshape(weight, [1, n] + [1] * (input.ndim - 2))
    return G.where(G.gt(input, 0), input, G.mul(w, input))
