"""nn.functional: PyTorch's functional layers, built from graphc's primitive ops.

Activations and losses live in functional_activation.py and functional_loss.py and are
re-exported here, so users find every function under one name, as in torch.nn.functional.
"""

from __future__ import annotations

import warnings

import numpy as np

from graphc import dispatch, dtypes
from graphc import functions as G
from graphc.errors import GraphcError, ShapeError
from graphc.nn.functional_activation import (  # noqa: F401  (re-exported)
    elu,
    elu_,
    gelu,
    hardsigmoid,
    hardswish,
    hardtanh,
    hardtanh_,
    leaky_relu,
    leaky_relu_,
    logsigmoid,
    prelu,
    relu6,
    silu,
    softplus,
)
from graphc.nn.functional_conv import conv_transpose2d  # noqa: F401  (re-exported)
from graphc.nn.functional_loss import (  # noqa: F401  (re-exported)
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    huber_loss,
    kl_div,
    l1_loss,
    mse_loss,
    nll_loss,
    smooth_l1_loss,
)
from graphc.nn.functional_norm import group_norm, instance_norm  # noqa: F401  (re-exported)
from graphc.nn.functional_resize import (  # noqa: F401  (re-exported)
    adaptive_avg_pool2d,
    adaptive_max_pool2d,
    interpolate,
    pad,
    upsample,
    upsample_bilinear,
    upsample_nearest,
)
from graphc.nn.functional_sequence import (  # noqa: F401  (re-exported)
    embedding,
    layer_norm,
    multi_head_attention_forward,
    scaled_dot_product_attention,
)
from graphc.nn.spatial import batched, bias_nchw, pair
from graphc.tensor import Tensor

apply = dispatch.apply

# These activations are the tensor functions themselves.
sigmoid = G.sigmoid
tanh = G.tanh
flatten = G.flatten


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    G.tensor_argument(input, "relu")
    out = G.relu(input)
    return input._inplace(out) if inplace else out


def relu_(input: Tensor) -> Tensor:
    G.tensor_argument(input, "relu_")
    return input._inplace(G.relu(input))


def _softmax_dim(ndim: int) -> int:
    """PyTorch's (deprecated) implicit dim: 0 for 0-, 1- and 3-D input, else 1."""
    return 0 if ndim in (0, 1, 3) else 1


def softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype=None) -> Tensor:
    G.tensor_argument(input, "softmax")
    x = G.cast(input, dtype) if dtype is not None else input
    return G.softmax(x, _softmax_dim(x.ndim) if dim is None else dim)


def log_softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype=None) -> Tensor:
    G.tensor_argument(input, "log_softmax")
    x = G.cast(input, dtype) if dtype is not None else input
    return G.log_softmax(x, _softmax_dim(x.ndim) if dim is None else dim)


# ---- linear and convolution -----------------------------------------------------------------


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    G.tensor_argument(input, "linear")
    if weight.ndim != 2 or input.ndim == 0 or input.shape[-1] != weight.shape[1]:
        rows = "x".join(map(str, (G._size(input.shape[:-1]) or (1,)))) if input.ndim else "1"
        raise dispatch.user_error(
            ShapeError,
            f"linear: input has {input.shape[-1] if input.ndim else 0} features but the weight "
            f"{list(weight.shape)} expects {weight.shape[1] if weight.ndim == 2 else '?'} "
            f"(mat1 and mat2 shapes cannot be multiplied ({rows}x"
            f"{input.shape[-1] if input.ndim else 0} and "
            f"{'x'.join(map(str, weight.shape[::-1]))}))",
        )
    x = input if input.ndim == 2 else G.reshape(input, -1, input.shape[-1])
    if x.dtype != weight.dtype:
        raise dispatch.user_error(
            ShapeError,
            f"linear: input is {x.dtype.name} but the weight "
            f"is {weight.dtype.name}; convert the input with .float()",
        )
    out = apply("matmul", (x, weight), trans_b=True)
    if bias is not None:
        out = G.add(out, bias)
    if input.ndim != 2:
        out = G.reshape(out, *input.shape[:-1], weight.shape[0])
    return out


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> Tensor:
    G.tensor_argument(input, "conv2d")
    x, unbatched = batched(input, "conv2d")
    stride, dilation = pair(stride, "stride"), pair(dilation, "dilation")
    kh, kw = weight.shape[2:] if weight.ndim == 4 else (1, 1)
    trim = (0, 0)  # leading output rows/cols to drop (asymmetric 'same' padding)
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        if stride != (1, 1):
            raise dispatch.user_error(
                GraphcError, "padding='same' is not supported for strided convolutions"
            )
        # PyTorch pads total//2 before and the rest after. An odd total (even kernel) is
        # computed as a symmetric pad of ceil(total/2) whose first output row/col is dropped.
        totals = (dilation[0] * (kh - 1), dilation[1] * (kw - 1))
        padding = ((totals[0] + 1) // 2, (totals[1] + 1) // 2)
        trim = (totals[0] % 2, totals[1] % 2)
    else:
        padding = pair(padding, "padding")
    out = apply(
        "conv2d", (x, weight), stride=stride, padding=padding, dilation=dilation, groups=int(groups)
    )
    for axis, k in ((2, trim[0]), (3, trim[1])):
        if k:
            out = apply("slice", (out,), axis=axis, start=k, stop=out.shape[axis], step=1)
    out = bias_nchw(out, bias)
    return G.squeeze(out, 0) if unbatched else out


# ---- pooling --------------------------------------------------------------------------------


def max_pool2d(
    input: Tensor,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Tensor:
    G.tensor_argument(input, "max_pool2d")
    if return_indices:
        raise dispatch.user_error(GraphcError, "max_pool2d(return_indices=True) is not supported")
    x, unbatched = batched(input, "max_pool2d")
    k = pair(kernel_size, "kernel_size")
    s = k if stride is None or stride == [] else pair(stride, "stride")
    out = apply(
        "max_pool2d",
        (x,),
        kernel_size=k,
        stride=s,
        padding=pair(padding, "padding"),
        dilation=pair(dilation, "dilation"),
        ceil_mode=bool(ceil_mode),
    )
    return G.squeeze(out, 0) if unbatched else out


def avg_pool2d(
    input: Tensor,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    G.tensor_argument(input, "avg_pool2d")
    x, unbatched = batched(input, "avg_pool2d")
    k = pair(kernel_size, "kernel_size")
    s = k if stride is None or stride == [] else pair(stride, "stride")
    out = apply(
        "avg_pool2d",
        (x,),
        kernel_size=k,
        stride=s,
        padding=pair(padding, "padding"),
        ceil_mode=bool(ceil_mode),
        count_include_pad=bool(count_include_pad),
        divisor_override=divisor_override,
    )
    return G.squeeze(out, 0) if unbatched else out


# ---- regularisation -------------------------------------------------------------------------


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    G.tensor_argument(input, "dropout")
    if not 0.0 <= p <= 1.0:
        raise dispatch.user_error(
            GraphcError, f"dropout probability has to be between 0 and 1, but got {p}"
        )
    if not training or p == 0.0:
        return input
    if p == 1.0:
        out = G.mul(input, 0.0)
    else:
        # PyTorch's CPU dropout: a Bernoulli(1 - p) mask divided by (1 - p) in the input's
        # dtype, times the input.
        keep = G.lt(G.rand_like(input), 1.0 - p)
        real = np.dtype(input.dtype.np).type
        scale = float(real(1) / real(1.0 - p))  # 1 - p in double, then rounded, as PyTorch
        out = G.where(keep, G.mul(input, scale), 0.0)
    return input._inplace(out) if inplace else out


def dropout2d(
    input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False
) -> Tensor:
    """Zeroes whole channels: one Bernoulli(1 - p) draw per (sample, channel), scaled by
    1 / (1 - p), as PyTorch's feature dropout. A 3-D input is (N, C, L), as in PyTorch."""
    G.tensor_argument(input, "dropout2d")
    if not 0.0 <= p <= 1.0:
        raise dispatch.user_error(
            GraphcError, f"dropout probability has to be between 0 and 1, but got {p}"
        )
    if input.ndim not in (3, 4):
        warnings.warn(
            f"dropout2d: Received a {input.ndim}-D input to dropout2d, which is deprecated; "
            "dropout2d exists to provide channel-wise dropout on 3-D or 4-D inputs",
            UserWarning,
            stacklevel=2,
        )
    if not training or p == 0.0:
        return input
    if input.ndim < 2:
        raise dispatch.user_error(
            ShapeError, f"dropout2d: expected at least 2-D input, got {list(input.shape)}"
        )
    mask_shape = tuple(input.shape[:2]) + (1,) * (input.ndim - 2)
    if p == 1.0:
        noise = G.zeros(*mask_shape, dtype=input.dtype)
    else:
        keep = G.lt(G.rand(*mask_shape, dtype=input.dtype), 1.0 - p)
        real = np.dtype(input.dtype.np).type
        scale = G.full(mask_shape, float(real(1) / real(1.0 - p)), dtype=input.dtype)
        noise = G.where(keep, scale, 0.0)
    out = G.mul(input, noise)
    return input._inplace(out) if inplace else out


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum=0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Normalises over every dim but 1; in training, updates the running stats in place."""
    G.tensor_argument(input, "batch_norm")
    if input.ndim < 2:
        raise dispatch.user_error(
            ShapeError, f"batch_norm: expected at least 2-D input, got {list(input.shape)}"
        )
    c = input.shape[1]
    per_channel = [
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("weight", weight),
        ("bias", bias),
    ]
    for name, t in per_channel:
        if t is not None and tuple(t.shape) != (c,):
            raise dispatch.user_error(
                ShapeError,
                f"batch_norm: the input has {c} channels (shape {list(input.shape)}) but "
                f"{name} has shape {list(t.shape)}; num_features must equal the channels",
            )
    axes = tuple(i for i in range(input.ndim) if i != 1)
    shape = [1, c] + [1] * (input.ndim - 2)
    n = input.numel() // c
    if training:
        if n <= 1:
            raise dispatch.user_error(
                GraphcError,
                f"expected more than 1 value per channel when "
                f"training, got input size {list(input.shape)}",
            )
        # PyTorch's CPU kernel: mean, then the sum of squared deviations; the normaliser
        # invstd = 1/sqrt(var_sum/n + eps) is evaluated in double and rounded once.
        mean = G.mean(input, axes, keepdim=True)
        centered = G.sub(input, mean)
        var_sum = G.sum(G.mul(centered, centered), axes, keepdim=True)
        invstd = _invstd(G.div(var_sum, float(n)), eps, dtypes.float64)
        if running_mean is not None and running_var is not None:
            with dispatch.no_grad():
                _update_running_stats(
                    running_mean,
                    running_var,
                    G.reshape(mean, c),
                    G.reshape(var_sum, c),
                    n,
                    momentum,
                )
        # One op whose derivative goes through the batch statistics (PyTorch's formula):
        # two passes over the data backwards instead of the four that differentiating
        # mean, variance and normalisation one by one takes.
        full = tuple(input.shape)

        def per_channel(t: Tensor | None, default: float) -> Tensor:
            if t is None:
                return G.full(full, default, dtype=input.dtype)
            return G.broadcast_to(G.reshape(t, *shape), full)

        operands = (
            input,
            G.broadcast_to(mean, full),
            G.broadcast_to(invstd, full),
            per_channel(weight, 1.0),
            per_channel(bias, 0.0),
        )
        return dispatch.apply("batch_norm", operands, axes=axes)
    if running_mean is None or running_var is None:
        raise dispatch.user_error(GraphcError, "batch_norm in eval mode needs running stats")
    centered = G.sub(input, G.reshape(running_mean, *shape))
    invstd = _invstd(G.reshape(running_var, *shape), eps, input.dtype)
    out = G.mul(centered, invstd)
    if weight is not None:
        out = G.mul(out, G.reshape(weight, *shape))
    if bias is not None:
        out = G.add(out, G.reshape(bias, *shape))
    return out


def _invstd(var: Tensor, eps: float, precision) -> Tensor:
    """1/sqrt(var + eps), evaluated in `precision` and rounded back to var's dtype."""
    wide = G.cast(var, precision) if precision.itemsize > var.dtype.itemsize else var
    return G.cast(G.rsqrt(G.add(wide, eps)), var.dtype)


def _update_running_stats(
    running_mean: Tensor, running_var: Tensor, mean: Tensor, var_sum: Tensor, n: int, momentum
) -> None:
    """running = momentum * batch + (1 - momentum) * running, as PyTorch's CPU kernel does it:
    momentum rounded to the stats' dtype first; the unbiased-variance term added in double."""
    dt = running_mean.dtype
    m = momentum if isinstance(momentum, Tensor) else G.full((), momentum, dtype=dt)
    m = G.cast(m, dt)
    keep = G.sub(1.0, m)
    running_mean.copy_(G.add(G.mul(m, mean), G.mul(keep, running_mean)))
    unbiased = G.div(var_sum, float(n - 1))
    wide = dtypes.float64
    rv = G.add(
        G.mul(G.cast(m, wide), G.cast(unbiased, wide)), G.cast(G.mul(keep, running_var), wide)
    )
    running_var.copy_(G.cast(rv, running_var.dtype))


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    if num_classes < 0:
        num_classes = int(G.amax(tensor).item()) + 1
    return apply("one_hot", (tensor,), num_classes=num_classes, dtype=dtypes.int64)
