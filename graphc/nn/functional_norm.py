"""nn.functional's group and instance normalisation, on the batch_norm primitive.

batch_norm (graphc/ops/nn.py) is "(x - mean) * invstd * weight + bias where mean and invstd
are x's statistics over `axes`", with PyTorch's backward through the statistics. Group norm
is that op on the input viewed as [N, groups, C / groups, rest] with axes (2, 3), followed by
its per-channel affine map; instance norm is the op on [N, C, ...] with the spatial axes.
Each is one fused pass forwards and two backwards, as BatchNorm's.
"""

from __future__ import annotations

from graphc import dispatch, dtypes
from graphc import functions as G
from graphc.errors import GraphcError, ShapeError
from graphc.tensor import Tensor


def _statistics(x: Tensor, axes: tuple[int, ...], eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """(mean, centered sum of squares, invstd) over `axes`, kept as size-1 dims. invstd is
    1 / sqrt(var + eps) in the input's precision, as PyTorch's group norm kernel."""
    n = 1
    for a in axes:
        n *= x.shape[a]
    mean = G.mean(x, axes, keepdim=True)
    centered = G.sub(x, mean)
    var_sum = G.sum(G.mul(centered, centered), axes, keepdim=True)
    invstd = G.rsqrt(G.add(G.div(var_sum, float(n)), eps))
    return mean, var_sum, invstd


def _normalize(x: Tensor, axes, mean, invstd, weight: Tensor | None, bias: Tensor | None, shape):
    """The batch_norm op over `axes`; weight and bias (per channel) are viewed as `shape`."""
    full = tuple(x.shape)

    def operand(t: Tensor | None, default: float) -> Tensor:
        if t is None:
            return G.full(full, default, dtype=x.dtype)
        return G.broadcast_to(G.reshape(t, *shape), full)

    operands = (
        x,
        G.broadcast_to(mean, full),
        G.broadcast_to(invstd, full),
        operand(weight, 1.0),
        operand(bias, 0.0),
    )
    return dispatch.apply("batch_norm", operands, axes=tuple(axes))


def _check_affine(op: str, c: int, shape, weight: Tensor | None, bias: Tensor | None) -> None:
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != (c,):
            raise dispatch.user_error(
                ShapeError,
                f"{op}: the input has {c} channels (shape {list(shape)}) but {name} has shape "
                f"{list(t.shape)}; it needs one value per channel",
            )


def group_norm(
    input: Tensor,
    num_groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    G.tensor_argument(input, "group_norm")
    if input.ndim < 2:
        raise dispatch.user_error(
            ShapeError, f"group_norm: expected at least 2-D input, got {list(input.shape)}"
        )
    n, c = input.shape[:2]
    if num_groups < 1 or c % num_groups:
        raise dispatch.user_error(
            ShapeError,
            f"group_norm: expected number of channels in input to be divisible by num_groups, "
            f"but got input of shape {list(input.shape)} and num_groups={num_groups}",
        )
    _check_affine("group_norm", c, input.shape, weight, bias)
    rest = input.numel() // max(n * c, 1)
    x = G.reshape(input, n, num_groups, c // num_groups, rest)
    mean, _, invstd = _statistics(x, (2, 3), eps)
    # The weight varies inside a group, so the affine map is applied after the op (whose
    # backward formula takes its weight to be constant over the normalised positions).
    out = G.reshape(_normalize(x, (2, 3), mean, invstd, None, None, ()), *input.shape)
    shape = (1, c) + (1,) * (input.ndim - 2)
    if weight is not None:
        out = G.mul(out, G.reshape(weight, *shape))
    if bias is not None:
        out = G.add(out, G.reshape(bias, *shape))
    return out


def instance_norm(
    input: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Normalises each (sample, channel) over its spatial positions. With running stats
    and use_input_stats, they are updated as PyTorch does: each sample's update of the
    stats, averaged over the batch."""
    G.tensor_argument(input, "instance_norm")
    if input.ndim < 3:
        raise dispatch.user_error(
            ShapeError,
            f"instance_norm: expected an input with a batch, a channel and at least one "
            f"spatial dimension, got shape {list(input.shape)}",
        )
    n, c = input.shape[:2]
    _check_affine("instance_norm", c, input.shape, weight, bias)
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if t is not None and tuple(t.shape) != (c,):
            raise dispatch.user_error(
                ShapeError,
                f"instance_norm: the input has {c} channels but {name} has shape "
                f"{list(t.shape)}; num_features must equal the channels",
            )
    axes = tuple(range(2, input.ndim))
    shape = (1, c) + (1,) * (input.ndim - 2)
    if use_input_stats:
        if input.numel() == n * c:
            raise dispatch.user_error(
                GraphcError,
                f"instance_norm: expected more than 1 spatial element when training, got input "
                f"size {list(input.shape)}",
            )
        mean, var_sum, invstd = _statistics(input, axes, eps)
        if running_mean is not None and running_var is not None:
            with dispatch.no_grad():
                _update_running_stats(running_mean, running_var, mean, var_sum, input, momentum)
        return _normalize(input, axes, mean, invstd, weight, bias, shape)
    if running_mean is None or running_var is None:
        raise dispatch.user_error(
            GraphcError,
            "instance_norm: use_input_stats=False needs running_mean and running_var",
        )
    mean = G.broadcast_to(G.reshape(running_mean, *shape), (n, c) + (1,) * len(axes))
    var = G.broadcast_to(G.reshape(running_var, *shape), (n, c) + (1,) * len(axes))
    invstd = G.rsqrt(G.add(var, eps))
    out = G.mul(G.sub(input, mean), invstd)
    if weight is not None:
        out = G.mul(out, G.reshape(weight, *shape))
    if bias is not None:
        out = G.add(out, G.reshape(bias, *shape))
    return out


def _update_running_stats(running_mean, running_var, mean, var_sum, input, momentum) -> None:
    """PyTorch repeats the stats per sample, updates each with that sample's statistics
    (the variance unbiased), and keeps their mean over the batch."""
    n, c = input.shape[:2]
    count = input.numel() // (n * c)
    m = G.cast(G.full((), momentum, dtype=dtypes.float64), running_mean.dtype)
    keep = G.sub(1.0, m)
    per_sample_mean = G.add(G.mul(m, G.reshape(mean, n, c)), G.mul(keep, running_mean))
    unbiased = G.div(G.reshape(var_sum, n, c), float(count - 1))
    per_sample_var = G.add(G.mul(m, unbiased), G.mul(keep, running_var))
    running_mean.copy_(G.mean(per_sample_mean, 0))
    running_var.copy_(G.mean(per_sample_var, 0))
