"""nn.functional's losses, with PyTorch's signatures (including the deprecated size_average
and reduce arguments, in their positions), reductions and edge cases.

All are compositions of primitives except binary_cross_entropy, whose per-element loss is an
op (graphc/ops/loss.py) because PyTorch gives it a gradient formula of its own.
"""

from __future__ import annotations

import warnings

import numpy as np

from graphc import dispatch, dtypes
from graphc import functions as G
from graphc.errors import GraphcError, ShapeError
from graphc.nn.functional_activation import logsigmoid
from graphc.tensor import Tensor

apply = dispatch.apply
REDUCTIONS = ("mean", "sum", "none")


def _reduction(reduction: str, size_average=None, reduce=None, extra: tuple = ()) -> str:
    """The reduction in force: the deprecated (size_average, reduce) pair wins if given,
    as in PyTorch's _Reduction.legacy_get_string."""
    if size_average is not None or reduce is not None:
        size_average = True if size_average is None else size_average
        reduce = True if reduce is None else reduce
        legacy = "none" if not reduce else "mean" if size_average else "sum"
        warnings.warn(
            "size_average and reduce args will be deprecated, please use "
            f"reduction={legacy!r} instead.",
            UserWarning,
            stacklevel=3,
        )
        return legacy
    if reduction not in REDUCTIONS + extra:
        valid = ", ".join(repr(r) for r in REDUCTIONS + extra)
        raise dispatch.user_error(
            GraphcError, f"{reduction!r} is not a valid reduction (one of {valid})"
        )
    return reduction


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return G.mean(loss)
    if reduction == "sum":
        return G.sum(loss)
    return loss


def _warn_if_broadcast(input: Tensor, target: Tensor, op: str) -> None:
    """PyTorch's warning for a target that broadcasts against the input, and, for one that
    cannot, an error in the loss's terms (not the subtraction's)."""
    a, b = tuple(input.shape), tuple(target.shape)
    for d in range(1, min(len(a), len(b)) + 1):
        if a[-d] != b[-d] and 1 not in (a[-d], b[-d]):
            raise dispatch.user_error(
                ShapeError,
                f"{op}: the target's size {list(b)} does not match the input's size {list(a)} "
                f"(the size of tensor a ({a[-d]}) must match the size of tensor b ({b[-d]}) at "
                f"non-singleton dimension {max(len(a), len(b)) - d}); give a target of the "
                "input's shape",
            )
    if tuple(target.shape) != tuple(input.shape):
        warnings.warn(
            f"Using a target size ({list(target.shape)}) that is different to the input size "
            f"({list(input.shape)}). This will likely lead to incorrect results due to "
            "broadcasting. Please ensure they have the same size.",
            UserWarning,
            stacklevel=3,
        )


def _require_same_size(op: str, input: Tensor, target: Tensor) -> None:
    if tuple(target.shape) != tuple(input.shape):
        raise dispatch.user_error(
            ValueError,
            f"{op}: target size {list(target.shape)} must be the same as input size "
            f"{list(input.shape)}",
        )


def _like_input(target: Tensor, input: Tensor) -> Tensor:
    return G.cast(target, input.dtype) if target.dtype != input.dtype else target


def _weighted(loss: Tensor, weight: Tensor | None, reduction: str, mean_by_weight: bool) -> Tensor:
    """PyTorch's optional per-element weights of l1/mse/huber: the weights must have the
    input's shape; l1 and mse divide a weighted 'mean' by the sum of the weights, huber by
    the number of elements."""
    if weight is None:
        return _reduce(loss, reduction)
    if tuple(weight.shape) != tuple(loss.shape):
        raise dispatch.user_error(
            ValueError,
            f"weights and input must have the same size: weight {list(weight.shape)}, "
            f"input {list(loss.shape)}",
        )
    loss = G.mul(loss, weight)
    if reduction == "mean" and mean_by_weight:
        return G.div(G.sum(loss), G.sum(weight))
    return _reduce(loss, reduction)


# ---- classification ---------------------------------------------------------------------------


def _check_weight(weight: Tensor | None, c: int) -> None:
    if weight is not None and tuple(weight.shape) != (c,):
        raise dispatch.user_error(
            ShapeError,
            f"weight tensor should be defined either for all {c} classes or no classes "
            f"but got weight tensor of shape: {list(weight.shape)}",
        )


def _target_one_hot(target: Tensor, c: int, ignore_index: int, dtype) -> Tensor:
    """[..., C] rows: 1 at each target's class; all 0 where target == ignore_index (even
    when the ignored index is itself a class)."""
    return apply("one_hot", (target,), num_classes=c, ignore_index=ignore_index, dtype=dtype)


def _class_last(input: Tensor) -> Tensor:
    """[N, C, d1, ...] -> [N, d1, ..., C]: one_hot puts classes last."""
    if input.ndim <= 2:
        return input
    return G.permute(input, 0, *range(2, input.ndim), 1)


def nll_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    G.tensor_argument(input, "nll_loss")
    G.tensor_argument(target, "nll_loss", "target")
    if input.ndim < 1 or target.dtype not in (dtypes.int64, dtypes.int32):
        raise dispatch.user_error(
            ShapeError,
            f"nll_loss: target must hold int64 class indices, got {target.dtype.name}"
            " (use labels.long(); for probabilities use cross_entropy)",
        )
    c = input.shape[1] if input.ndim >= 2 else input.shape[0]
    expect = (input.shape[:1] + input.shape[2:]) if input.ndim >= 2 else ()
    if tuple(target.shape) != tuple(expect):
        raise dispatch.user_error(
            ShapeError,
            f"nll_loss: expected target of shape {list(expect)} for input of shape "
            f"{list(input.shape)}, got {list(target.shape)}",
        )
    reduction = _reduction(reduction, size_average, reduce)
    _check_weight(weight, c)
    hot = _target_one_hot(target, c, ignore_index, input.dtype)
    logp = _class_last(input)
    if weight is not None:
        hot = G.mul(hot, weight)
    loss = G.neg(G.sum(G.mul(logp, hot), -1))
    if reduction == "mean":  # weighted mean over the targets that are not ignored
        return G.div(G.sum(loss), G.sum(hot))
    return _reduce(loss, reduction)


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    G.tensor_argument(input, "cross_entropy")
    G.tensor_argument(target, "cross_entropy", "target")
    reduction = _reduction(reduction, size_average, reduce)
    if not 0.0 <= label_smoothing <= 1.0:
        raise dispatch.user_error(
            GraphcError, f"label_smoothing must be between 0.0 and 1.0, got {label_smoothing}"
        )
    class_dim = 1 if input.ndim >= 2 else 0
    c = input.shape[class_dim]
    _check_weight(weight, c)
    logp = G.log_softmax(input, class_dim)
    if target.dtype.is_floating_point:  # class probabilities (ignore_index does not apply)
        if tuple(target.shape) != tuple(input.shape):
            raise dispatch.user_error(
                ShapeError,
                f"cross_entropy: target is {target.dtype.name}{list(target.shape)}; expected "
                f"int64 class indices of shape {list(input.shape[:1] + input.shape[2:])} "
                f"(convert labels with .long()) or class probabilities of shape "
                f"{list(input.shape)}",
            )
        if label_smoothing:
            target = G.add(G.mul(target, 1.0 - label_smoothing), label_smoothing / c)
        terms = G.mul(logp, target)
        if weight is not None:
            terms = G.mul(_class_last(terms), weight)
            loss = G.neg(G.sum(terms, -1))
        else:
            loss = G.neg(G.sum(terms, class_dim))
        return _reduce(loss, reduction)  # 'mean' divides by the number of samples
    loss = nll_loss(logp, target, weight, ignore_index=ignore_index, reduction=reduction)
    if not label_smoothing:
        return loss
    # PyTorch: (1 - s) * nll + s / C * smooth, where smooth sums -w_c log p_c over every
    # class; its 'mean' divides by the same denominator as nll's, sum_i w[target_i].
    valid = G.cast(G.ne(target, ignore_index), input.dtype)
    lp = _class_last(logp)
    per = G.neg(G.sum(G.mul(lp, weight), -1) if weight is not None else G.sum(lp, -1))
    smooth = G.mul(per, valid)
    if reduction == "mean":
        if weight is not None:
            hot = _target_one_hot(target, c, ignore_index, input.dtype)
            denom = G.sum(G.mul(hot, weight))
        else:
            denom = G.sum(valid)
        smooth = G.div(G.sum(smooth), denom)
    else:
        smooth = _reduce(smooth, reduction)
    return G.add(G.mul(loss, 1.0 - label_smoothing), G.mul(smooth, label_smoothing / c))


def _check_probabilities(op: str, input: Tensor, target: Tensor) -> None:
    """PyTorch refuses values outside [0, 1]; so does eager mode here. (A compiled step
    cannot raise mid-kernel: there, such values give NaN.)"""
    if dispatch.is_tracing():
        return
    for what, t in (("input", input), ("target", target)):
        a = t._data
        with np.errstate(invalid="ignore"):
            bad = ~((a >= 0) & (a <= 1))
        if bad.any():
            raise dispatch.user_error(
                GraphcError,
                f"{op}: all elements of {what} should be between 0 and 1, got "
                f"{float(a[bad].flat[0])}"
                + (
                    "; apply sigmoid first, or use binary_cross_entropy_with_logits "
                    "(BCEWithLogitsLoss), which takes logits and is more stable"
                    if what == "input"
                    else ""
                ),
            )


def binary_cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """-w (y log x + (1 - y) log(1 - x)) with each log clamped at -100, as PyTorch."""
    G.tensor_argument(input, "binary_cross_entropy")
    G.tensor_argument(target, "binary_cross_entropy", "target")
    reduction = _reduction(reduction, size_average, reduce)
    _require_same_size("binary_cross_entropy", input, target)
    target = _like_input(target, input)
    _check_probabilities("binary_cross_entropy", input, target)
    loss = apply("binary_cross_entropy", (input, target))
    if weight is not None:
        loss = G.mul(loss, weight)  # broadcast against the elements, as PyTorch
    return _reduce(loss, reduction)


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> Tensor:
    """(1 - y) x - log_sigmoid(x) ((pos_weight - 1) y + 1), times weight: PyTorch's form,
    finite for any logits (log_sigmoid never exponentiates a positive number)."""
    G.tensor_argument(input, "binary_cross_entropy_with_logits")
    G.tensor_argument(target, "binary_cross_entropy_with_logits", "target")
    reduction = _reduction(reduction, size_average, reduce)
    _require_same_size("binary_cross_entropy_with_logits", input, target)
    target = _like_input(target, input)
    log_sig = logsigmoid(input)
    if pos_weight is not None:
        log_sig = G.mul(log_sig, G.add(G.mul(G.sub(pos_weight, 1.0), target), 1.0))
    loss = G.sub(G.mul(G.sub(1.0, target), input), log_sig)
    if weight is not None:
        loss = G.mul(loss, weight)
    return _reduce(loss, reduction)


# ---- regression -------------------------------------------------------------------------------


def mse_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Tensor:
    G.tensor_argument(input, "mse_loss")
    G.tensor_argument(target, "mse_loss", "target")
    reduction = _reduction(reduction, size_average, reduce)
    _warn_if_broadcast(input, target, "mse_loss")
    diff = G.sub(input, target)
    return _weighted(G.mul(diff, diff), weight, reduction, mean_by_weight=True)


def l1_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Tensor:
    G.tensor_argument(input, "l1_loss")
    G.tensor_argument(target, "l1_loss", "target")
    reduction = _reduction(reduction, size_average, reduce)
    _warn_if_broadcast(input, target, "l1_loss")
    return _weighted(G.abs(G.sub(input, target)), weight, reduction, mean_by_weight=True)


def smooth_l1_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    beta: float = 1.0,
) -> Tensor:
    """0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (d = input - target)."""
    G.tensor_argument(input, "smooth_l1_loss")
    G.tensor_argument(target, "smooth_l1_loss", "target")
    reduction = _reduction(reduction, size_average, reduce)
    if beta < 0:
        raise dispatch.user_error(
            GraphcError, f"smooth_l1_loss does not support negative values for beta, got {beta}"
        )
    _warn_if_broadcast(input, target, "smooth_l1_loss")
    z = G.abs(G.sub(input, target))
    if beta == 0.0:
        return _reduce(z, reduction)
    quadratic = G.div(G.mul(G.mul(z, 0.5), z), beta)
    return _reduce(G.where(G.lt(z, beta), quadratic, G.sub(z, 0.5 * beta)), reduction)


def huber_loss(
    input: Tensor,
    target: Tensor,
    reduction: str = "mean",
    delta: float = 1.0,
    weight: Tensor | None = None,
) -> Tensor:
    """0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta) (d = input - target)."""
    G.tensor_argument(input, "huber_loss")
    G.tensor_argument(target, "huber_loss", "target")
    reduction = _reduction(reduction)
    if delta <= 0:
        raise dispatch.user_error(
            GraphcError, f"huber_loss does not support non-positive values for delta, got {delta}"
        )
    _warn_if_broadcast(input, target, "huber_loss")
    z = G.abs(G.sub(input, target))
    quadratic = G.mul(G.mul(z, 0.5), z)
    linear = G.mul(G.sub(z, 0.5 * delta), delta)
    loss = G.where(G.lt(z, delta), quadratic, linear)
    return _weighted(loss, weight, reduction, mean_by_weight=False)


def kl_div(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    log_target: bool = False,
) -> Tensor:
    """target (log target - input) per element; input holds log-probabilities."""
    G.tensor_argument(input, "kl_div")
    G.tensor_argument(target, "kl_div", "target")
    if size_average is not None or reduce is not None:
        reduction = _reduction(reduction, size_average, reduce)
    else:
        reduction = _reduction(reduction, extra=("batchmean",))
        if reduction == "mean":
            warnings.warn(
                "reduction: 'mean' divides the total loss by both the batch size and the "
                "support size. 'batchmean' divides only by the batch size, and aligns with "
                "the KL div math definition.",
                UserWarning,
                stacklevel=2,
            )
    if log_target:
        loss = G.mul(G.exp(target), G.sub(target, input))
    else:
        loss = G.sub(G.xlogy(target, target), G.mul(target, input))
    if reduction == "batchmean":
        total = G.sum(loss)
        return G.div(total, float(input.shape[0])) if input.ndim else total
    return _reduce(loss, reduction)
