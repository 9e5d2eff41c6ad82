"""Neural-network ops: 2-D convolution and pooling (with their gradient ops), softmax, one_hot.

Layouts are PyTorch's: activations NCHW, conv weights OIHW (I = channels per group).
The gradient ops are ops of their own because they lower to kernels of their own.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from graphc import dtypes
from graphc.errors import ShapeError
from graphc.ir import TensorType
from graphc.ops.registry import REQUIRED, NoGrad, defop, require_float

PAIR = (1, 1)
CONV_ATTRS = {"stride": PAIR, "padding": (0, 0), "dilation": PAIR, "groups": 1}


def out_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool = False) -> int:
    """PyTorch's output-size formula, including ceil_mode's last-window rule."""
    span = size + 2 * p - d * (k - 1) - 1
    if not ceil_mode:
        return span // s + 1 if span >= 0 else 0
    out = -(-span // s) + 1
    if (out - 1) * s >= size + p:  # the last window would start inside the right padding
        out -= 1
    return out


def _patches(xp: np.ndarray, k: tuple, s: tuple, d: tuple, out_hw: tuple) -> np.ndarray:
    """A read-only [N, C, KH, KW, OH, OW] view of the windows of a padded NCHW array."""
    n, c = xp.shape[:2]
    sn, sc, sh, sw = xp.strides
    shape = (n, c, k[0], k[1], out_hw[0], out_hw[1])
    strides = (sn, sc, d[0] * sh, d[1] * sw, s[0] * sh, s[1] * sw)
    return as_strided(xp, shape, strides, writeable=False)


def _pad(x: np.ndarray, p: tuple, extra: tuple = (0, 0), value: float = 0.0) -> np.ndarray:
    widths = ((0, 0), (0, 0), (p[0], p[0] + extra[0]), (p[1], p[1] + extra[1]))
    return np.pad(x, widths, constant_values=value) if any(sum(w) for w in widths) else x


def _window_slice(k: int, s: int, d: int, n_out: int) -> slice:
    return slice(k * d, k * d + s * (n_out - 1) + 1, s)


# ---- conv2d -------------------------------------------------------------------------------


def _conv_geometry(op: str, x: tuple, w: tuple, stride, padding, dilation, groups):
    if len(x) != 4 or len(w) != 4:
        raise ShapeError(
            f"{op}: expects a 4-D NCHW input and OIHW weight, got {list(x)}, {list(w)}"
        )
    n, c, h, wd = x
    o, cg, kh, kw = w
    if groups < 1 or c % groups or o % groups:
        raise ShapeError(
            f"{op}: {c} input and {o} output channels are not divisible by groups={groups}"
        )
    if cg * groups != c:
        raise ShapeError(
            f"{op}: given groups={groups}, weight of size {list(w)} expects the input to have "
            f"{cg * groups} channels, but got {c} channels (input {list(x)})"
        )
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ShapeError(f"{op}: invalid stride {stride}, padding {padding} or dilation {dilation}")
    oh = out_size(h, kh, stride[0], padding[0], dilation[0])
    ow = out_size(wd, kw, stride[1], padding[1], dilation[1])
    if oh <= 0 or ow <= 0:
        raise ShapeError(
            f"{op}: input of spatial size {h}x{wd} (padding {padding}) is smaller than the "
            f"dilated kernel {dilation[0] * (kh - 1) + 1}x{dilation[1] * (kw - 1) + 1}"
        )
    return n, o, oh, ow


def _check_float_pair(op: str, a: TensorType, b: TensorType) -> None:
    require_float(op, a)
    if a.dtype != b.dtype:
        raise ShapeError(
            f"{op}: input is {a} but weight is {b}; they must have the same dtype "
            "(convert with .float())"
        )


def _conv2d_rule(x: TensorType, w: TensorType, stride, padding, dilation, groups) -> TensorType:
    _check_float_pair("conv2d", x, w)
    n, o, oh, ow = _conv_geometry("conv2d", x.shape, w.shape, stride, padding, dilation, groups)
    return x.with_shape((n, o, oh, ow))


def _conv2d_ref(x, w, stride, padding, dilation, groups):
    n, c = x.shape[:2]
    o, cg, kh, kw = w.shape
    _, _, oh, ow = _conv_geometry("conv2d", x.shape, w.shape, stride, padding, dilation, groups)
    cols = _patches(_pad(x, padding), (kh, kw), stride, dilation, (oh, ow))
    if groups > 1:
        return _grouped_conv2d(cols, w, groups)
    # [N, OH, OW, O] <- sum over (c, kh, kw)
    return np.ascontiguousarray(
        np.tensordot(cols, w, axes=([1, 2, 3], [1, 2, 3])).transpose(0, 3, 1, 2)
    )


def _group_rows(cols: np.ndarray, groups: int) -> np.ndarray:
    """[N, C, KH, KW, OH, OW] windows -> [G, N*OH*OW, Cg*KH*KW]: one im2col matrix per group."""
    n, c, kh, kw, oh, ow = cols.shape
    split = cols.reshape(n, groups, c // groups, kh, kw, oh, ow)
    return split.transpose(1, 0, 5, 6, 2, 3, 4).reshape(groups, n * oh * ow, -1)


def _group_cotangent(g: np.ndarray, groups: int) -> np.ndarray:
    """[N, O, OH, OW] -> [G, N*OH*OW, Og]."""
    n, o, oh, ow = g.shape
    return (
        g.reshape(n, groups, o // groups, oh, ow)
        .transpose(1, 0, 3, 4, 2)
        .reshape(groups, -1, o // groups)
    )


def _grouped_conv2d(cols: np.ndarray, w: np.ndarray, groups: int) -> np.ndarray:
    """All groups at once, as one batched matmul (a loop over groups costs a numpy call per
    channel of a depthwise convolution)."""
    n, _, _, _, oh, ow = cols.shape
    o = w.shape[0]
    og = o // groups
    weights = w.reshape(groups, og, -1).transpose(0, 2, 1)  # [G, Cg*KH*KW, Og]
    out = np.matmul(_group_rows(cols, groups), weights)  # [G, N*OH*OW, Og]
    out = out.reshape(groups, n, oh, ow, og).transpose(1, 0, 4, 2, 3)
    return np.ascontiguousarray(out.reshape(n, o, oh, ow))


def _conv2d_vjp(b, g, out, x, w, **attrs):
    return (
        b.conv2d_input_grad(g, w, input_shape=x.shape, **attrs),
        b.conv2d_weight_grad(x, g, weight_shape=w.shape, **attrs),
    )


def _conv_flops(out: TensorType, x: TensorType, w: TensorType, **attrs) -> int:
    o, cg, kh, kw = w.shape
    return 2 * out.numel * cg * kh * kw


defop(
    "conv2d",
    type_rule=_conv2d_rule,
    ref=_conv2d_ref,
    vjp=_conv2d_vjp,
    arity=2,
    attrs=CONV_ATTRS,
    traits=("contraction",),
    flops=_conv_flops,
    doc="cross-correlation of NCHW input with OIHW weight (no bias)",
)


def _conv2d_input_grad_rule(g: TensorType, w: TensorType, input_shape, **attrs) -> TensorType:
    _check_float_pair("conv2d_input_grad", g, w)
    n, o, oh, ow = _conv_geometry("conv2d_input_grad", input_shape, w.shape, **attrs)
    if g.shape != (n, o, oh, ow):
        raise ShapeError(
            f"conv2d_input_grad: cotangent {g} does not match output [{n},{o},{oh},{ow}]"
        )
    return g.with_shape(tuple(input_shape))


def _conv2d_input_grad_ref(g, w, input_shape, stride, padding, dilation, groups):
    n, c, h, wd = input_shape
    o, cg, kh, kw = w.shape
    oh, ow = g.shape[2:]
    hp = max(h + 2 * padding[0], dilation[0] * (kh - 1) + stride[0] * (oh - 1) + 1)
    wp = max(wd + 2 * padding[1], dilation[1] * (kw - 1) + stride[1] * (ow - 1) + 1)
    dxp = np.zeros((n, c, hp, wp), g.dtype)
    if groups == 1:
        dcols = np.tensordot(g, w, axes=([1], [0]))  # [N, OH, OW, C, KH, KW]
        dcols = dcols.transpose(0, 3, 4, 5, 1, 2)
    else:  # every group at once: [G, N*OH*OW, Og] @ [G, Og, Cg*KH*KW]
        prod = np.matmul(_group_cotangent(g, groups), w.reshape(groups, o // groups, -1))
        dcols = prod.reshape(groups, n, oh, ow, cg, kh, kw).transpose(1, 0, 4, 5, 6, 2, 3)
        dcols = dcols.reshape(n, c, kh, kw, oh, ow)
    for i in range(kh):
        for j in range(kw):
            rows = _window_slice(i, stride[0], dilation[0], oh)
            cols = _window_slice(j, stride[1], dilation[1], ow)
            dxp[:, :, rows, cols] += dcols[:, :, i, j]
    return dxp[:, :, padding[0] : padding[0] + h, padding[1] : padding[1] + wd].copy()


def _conv2d_input_grad_vjp(b, ct, out, g, w, input_shape, **attrs):
    # Bilinear in (g, w): see the pairing <ct, dx> = <g, conv2d(ct, w)>.
    return (b.conv2d(ct, w, **attrs), b.conv2d_weight_grad(ct, g, weight_shape=w.shape, **attrs))


defop(
    "conv2d_input_grad",
    type_rule=_conv2d_input_grad_rule,
    ref=_conv2d_input_grad_ref,
    vjp=_conv2d_input_grad_vjp,
    arity=2,
    attrs={"input_shape": REQUIRED, **CONV_ATTRS},
    traits=("contraction",),
    flops=lambda out, g, w, **a: 2 * g.numel * w.shape[1] * w.shape[2] * w.shape[3],
    doc="gradient of conv2d with respect to its input (a transposed convolution)",
)


def _conv2d_weight_grad_rule(x: TensorType, g: TensorType, weight_shape, **attrs) -> TensorType:
    _check_float_pair("conv2d_weight_grad", x, g)
    n, o, oh, ow = _conv_geometry("conv2d_weight_grad", x.shape, weight_shape, **attrs)
    if g.shape != (n, o, oh, ow):
        raise ShapeError(
            f"conv2d_weight_grad: cotangent {g} does not match output [{n},{o},{oh},{ow}]"
        )
    return x.with_shape(tuple(weight_shape))


def _conv2d_weight_grad_ref(x, g, weight_shape, stride, padding, dilation, groups):
    o, cg, kh, kw = weight_shape
    oh, ow = g.shape[2:]
    cols = _patches(_pad(x, padding), (kh, kw), stride, dilation, (oh, ow))
    if groups == 1:
        return np.tensordot(g, cols, axes=([0, 2, 3], [0, 4, 5]))
    # every group at once: [G, Og, N*OH*OW] @ [G, N*OH*OW, Cg*KH*KW]
    dw = np.matmul(_group_cotangent(g, groups).transpose(0, 2, 1), _group_rows(cols, groups))
    return dw.reshape(weight_shape)


def _conv2d_weight_grad_vjp(b, ct, out, x, g, weight_shape, **attrs):
    return (b.conv2d_input_grad(g, ct, input_shape=x.shape, **attrs), b.conv2d(x, ct, **attrs))


defop(
    "conv2d_weight_grad",
    type_rule=_conv2d_weight_grad_rule,
    ref=_conv2d_weight_grad_ref,
    vjp=_conv2d_weight_grad_vjp,
    arity=2,
    attrs={"weight_shape": REQUIRED, **CONV_ATTRS},
    traits=("contraction",),
    flops=lambda out, x, g, **a: 2 * g.numel * out.shape[1] * out.shape[2] * out.shape[3],
    doc="gradient of conv2d with respect to its weight",
)

# ---- pooling ------------------------------------------------------------------------------

POOL_ATTRS = {"kernel_size": REQUIRED, "stride": REQUIRED, "padding": (0, 0), "ceil_mode": False}


def _pool_geometry(op, x, kernel_size, stride, padding, dilation=PAIR, ceil_mode=False):
    if len(x) != 4:
        raise ShapeError(f"{op}: expects a 4-D NCHW input, got shape {list(x)}")
    for i in range(2):
        if padding[i] * 2 > kernel_size[i]:
            raise ShapeError(
                f"{op}: padding {padding} must be at most half the kernel size {kernel_size}"
            )
        if min(kernel_size[i], stride[i], dilation[i]) < 1:
            raise ShapeError(f"{op}: kernel size, stride and dilation must be positive")
    oh = out_size(x[2], kernel_size[0], stride[0], padding[0], dilation[0], ceil_mode)
    ow = out_size(x[3], kernel_size[1], stride[1], padding[1], dilation[1], ceil_mode)
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"{op}: input {list(x)} is too small for kernel {kernel_size}")
    return oh, ow


def _pool_extra(size, k, s, p, d, n_out):
    """Right padding beyond p needed so every (ceil_mode) window lies inside the array."""
    return max(0, (n_out - 1) * s + d * (k - 1) + 1 - size - 2 * p)


def _max_pool_rule(x: TensorType, **attrs) -> TensorType:
    require_float("max_pool2d", x)
    oh, ow = _pool_geometry("max_pool2d", x.shape, **attrs)
    return x.with_shape(x.shape[:2] + (oh, ow))


def _max_windows(x, kernel_size, stride, padding, dilation, ceil_mode, fill=-np.inf):
    oh, ow = _pool_geometry(
        "max_pool2d", x.shape, kernel_size, stride, padding, dilation, ceil_mode
    )
    extra = tuple(
        _pool_extra(x.shape[2 + i], kernel_size[i], stride[i], padding[i], dilation[i], (oh, ow)[i])
        for i in range(2)
    )
    xp = _pad(x, padding, extra, value=fill)
    return _patches(xp, kernel_size, stride, dilation, (oh, ow))


def _max_pool_ref(x, **attrs):
    return _max_windows(x, **attrs).max(axis=(2, 3))


def _max_pool_vjp(b, g, out, x, **attrs):
    return (b.max_pool2d_grad(g, x, **attrs),)


MAXPOOL_ATTRS = {**POOL_ATTRS, "dilation": PAIR}
defop(
    "max_pool2d",
    type_rule=_max_pool_rule,
    ref=_max_pool_ref,
    vjp=_max_pool_vjp,
    arity=1,
    attrs=MAXPOOL_ATTRS,
    traits=("pool",),
    flops=lambda out, x, kernel_size, **a: out.numel * kernel_size[0] * kernel_size[1],
)


def _max_pool_grad_rule(g: TensorType, x: TensorType, **attrs) -> TensorType:
    expect = _max_pool_rule(x, **attrs)
    if g != expect:
        raise ShapeError(f"max_pool2d_grad: cotangent {g} does not match the pooled {expect}")
    return x


def _max_pool_grad_ref(g, x, kernel_size, stride, padding, dilation, ceil_mode):
    geometry = (kernel_size, stride, padding, dilation, ceil_mode)
    win = _max_windows(x, *geometry)
    real = _max_windows(np.ones(x.shape, bool), *geometry, fill=False)
    n, c, kh, kw, oh, ow = win.shape
    # PyTorch routes the gradient to the first maximum in row-major window order, and
    # padding never wins (not even a tie with an input of -inf). A NaN is the maximum of
    # its window; the first NaN takes the gradient (numpy's argmax; the kernels agree).
    hit = ((win == win.max(axis=(2, 3), keepdims=True)) | np.isnan(win)) & real
    first = hit.reshape(n, c, kh * kw, oh, ow).argmax(axis=2)
    h, w = x.shape[2:]
    extra = [
        _pool_extra(x.shape[2 + i], kernel_size[i], stride[i], padding[i], dilation[i], (oh, ow)[i])
        for i in range(2)
    ]
    dxp = np.zeros((n, c, h + 2 * padding[0] + extra[0], w + 2 * padding[1] + extra[1]), g.dtype)
    for i in range(kh):
        for j in range(kw):
            hit = first == i * kw + j
            rows = _window_slice(i, stride[0], dilation[0], oh)
            cols = _window_slice(j, stride[1], dilation[1], ow)
            dxp[:, :, rows, cols] += np.where(hit, g, 0)
    return dxp[:, :, padding[0] : padding[0] + h, padding[1] : padding[1] + w].copy()


defop(
    "max_pool2d_grad",
    type_rule=_max_pool_grad_rule,
    ref=_max_pool_grad_ref,
    arity=2,
    attrs=MAXPOOL_ATTRS,
    traits=("pool",),
    # re-finds each window's maximum, then one add per output
    flops=lambda out, g, x, kernel_size, **a: g.numel * (kernel_size[0] * kernel_size[1] + 1),
    vjp=NoGrad("second derivatives of max pooling are not supported", unsupported=True),
    doc="routes each output cotangent to the first maximum of its window",
)


def _avg_geometry(x, kernel_size, stride, padding, ceil_mode):
    return _pool_geometry("avg_pool2d", x, kernel_size, stride, padding, PAIR, ceil_mode)


def _avg_divisors(h, w, oh, ow, kernel_size, stride, padding, count_include_pad, divisor_override):
    if divisor_override:
        return np.full((oh, ow), float(divisor_override))

    def extent(size, n_out, k, s, p):
        start = np.arange(n_out) * s - p
        end = np.minimum(start + k, size + p)
        full = end - start
        clipped = np.minimum(end, size) - np.maximum(start, 0)
        return full, clipped

    fh, ch = extent(h, oh, kernel_size[0], stride[0], padding[0])
    fw, cw = extent(w, ow, kernel_size[1], stride[1], padding[1])
    return np.outer(fh, fw) if count_include_pad else np.outer(ch, cw)


AVG_ATTRS = {**POOL_ATTRS, "count_include_pad": True, "divisor_override": None}


def _avg_pool_rule(x: TensorType, **attrs) -> TensorType:
    require_float("avg_pool2d", x)
    oh, ow = _avg_geometry(
        x.shape, attrs["kernel_size"], attrs["stride"], attrs["padding"], attrs["ceil_mode"]
    )
    return x.with_shape(x.shape[:2] + (oh, ow))


def _avg_pool_ref(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    h, w = x.shape[2:]
    oh, ow = _avg_geometry(x.shape, kernel_size, stride, padding, ceil_mode)
    extra = tuple(
        _pool_extra(x.shape[2 + i], kernel_size[i], stride[i], padding[i], 1, (oh, ow)[i])
        for i in range(2)
    )
    win = _patches(_pad(x, padding, extra), kernel_size, stride, PAIR, (oh, ow))
    div = _avg_divisors(
        h, w, oh, ow, kernel_size, stride, padding, count_include_pad, divisor_override
    )
    return (win.sum(axis=(2, 3)) / div.astype(x.dtype)).astype(x.dtype)


def _avg_pool_vjp(b, g, out, x, **attrs):
    return (b.avg_pool2d_grad(g, input_shape=x.shape, **attrs),)


defop(
    "avg_pool2d",
    type_rule=_avg_pool_rule,
    ref=_avg_pool_ref,
    vjp=_avg_pool_vjp,
    arity=1,
    attrs=AVG_ATTRS,
    traits=("pool",),
    flops=lambda out, x, kernel_size, **a: out.numel * kernel_size[0] * kernel_size[1],
)


def _avg_pool_grad_rule(g: TensorType, input_shape, **attrs) -> TensorType:
    expect = _avg_pool_rule(g.with_shape(input_shape), **attrs)
    if g != expect:
        raise ShapeError(f"avg_pool2d_grad: cotangent {g} does not match the pooled {expect}")
    return g.with_shape(tuple(input_shape))


def _avg_pool_grad_ref(
    g, input_shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
):
    n, c, h, w = input_shape
    oh, ow = g.shape[2:]
    div = _avg_divisors(
        h, w, oh, ow, kernel_size, stride, padding, count_include_pad, divisor_override
    )
    share = (g / div.astype(g.dtype)).astype(g.dtype)
    extra = [
        _pool_extra(input_shape[2 + i], kernel_size[i], stride[i], padding[i], 1, (oh, ow)[i])
        for i in range(2)
    ]
    dxp = np.zeros((n, c, h + 2 * padding[0] + extra[0], w + 2 * padding[1] + extra[1]), g.dtype)
    for i in range(kernel_size[0]):
        for j in range(kernel_size[1]):
            dxp[:, :, _window_slice(i, stride[0], 1, oh), _window_slice(j, stride[1], 1, ow)] += (
                share
            )
    return dxp[:, :, padding[0] : padding[0] + h, padding[1] : padding[1] + w].copy()


def _avg_pool_grad_vjp(b, ct, out, g, input_shape, **attrs):
    return (b.avg_pool2d(ct, **attrs),)  # linear in g: the adjoint of the adjoint


defop(
    "avg_pool2d_grad",
    type_rule=_avg_pool_grad_rule,
    ref=_avg_pool_grad_ref,
    vjp=_avg_pool_grad_vjp,
    arity=1,
    attrs={"input_shape": REQUIRED, **AVG_ATTRS},
    traits=("pool",),
    flops=lambda out, g, kernel_size, **a: g.numel * (kernel_size[0] * kernel_size[1] + 1),
    doc="spreads each output cotangent evenly over its window",
)

# ---- batch normalisation in training ------------------------------------------------------


def _batch_norm_rule(x, mean, invstd, weight, bias, axes) -> TensorType:
    require_float("batch_norm", x)
    for t in (mean, invstd, weight, bias):
        if t != x:
            raise ShapeError(f"batch_norm: every operand must be {x} (broadcast first), got {t}")
    if not axes or any(not 0 <= a < x.rank for a in axes):
        raise ShapeError(f"batch_norm: axes {axes} do not fit {x}")
    return x


def _batch_norm_ref(x, mean, invstd, weight, bias, axes):
    return (x - mean) * invstd * weight + bias


def _batch_norm_vjp(b, g, out, x, mean, invstd, weight, bias, axes):
    # PyTorch's batch_norm_backward: with dotp = sum(g * (x - mean)) and the sums over
    # `axes` (n values each), dx = (g - (x - mean) * dotp * invstd^2 / n - sum(g) / n)
    # * invstd * weight. It is the whole derivative through the statistics, which is why
    # mean and invstd themselves get none (they are x's, computed just before).
    n = 1
    for a in axes:
        n *= x.shape[a]
    centered = b.sub(x, mean)
    gc = b.mul(g, centered)
    dotp = b.broadcast_to(b.reduce_sum(gc, axes=axes, keepdims=True), shape=x.shape)
    total = b.broadcast_to(b.reduce_sum(g, axes=axes, keepdims=True), shape=x.shape)
    inv_n = b.full_like(x, 1.0 / n)
    proj = b.mul(b.mul(dotp, b.mul(invstd, invstd)), inv_n)
    dx = b.mul(b.sub(b.sub(g, b.mul(centered, proj)), b.mul(total, inv_n)), b.mul(invstd, weight))
    return dx, None, None, b.mul(gc, invstd), g


defop(
    "batch_norm",
    type_rule=_batch_norm_rule,
    ref=_batch_norm_ref,
    vjp=_batch_norm_vjp,
    arity=5,
    attrs={"axes": REQUIRED},
    traits=("elementwise",),
    flops=lambda out, *ins, **a: 4 * out.numel,
    doc="(x - mean) * invstd * weight + bias, where mean and invstd are x's statistics over "
    "`axes` (batch_norm in training): the derivative goes through them, so they get none; "
    "weight must be constant over `axes` (per channel), as the backward formula assumes",
)

# ---- softmax family -----------------------------------------------------------------------


def _softmax_rule(name):
    def rule(x: TensorType, axis: int) -> TensorType:
        require_float(name, x)
        if not 0 <= axis < x.rank:
            raise ShapeError(f"{name}: axis {axis} is out of range for {x}")
        return x

    return rule


def _log_softmax_ref(x, axis):
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def _softmax_ref(x, axis):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _log_softmax_vjp(b, g, out, x, axis):
    total = b.reduce_sum(g, axes=(axis,), keepdims=True)
    return (b.sub(g, b.mul(b.exp(out), b.broadcast_to(total, shape=g.shape))),)


def _softmax_vjp(b, g, out, x, axis):
    dot = b.reduce_sum(b.mul(g, out), axes=(axis,), keepdims=True)
    return (b.mul(out, b.sub(g, b.broadcast_to(dot, shape=g.shape))),)


defop(
    "log_softmax",
    type_rule=_softmax_rule("log_softmax"),
    ref=_log_softmax_ref,
    vjp=_log_softmax_vjp,
    arity=1,
    attrs={"axis": REQUIRED},
    traits=("normalization",),
    flops=lambda out, x, **a: 4 * x.numel,
)
defop(
    "softmax",
    type_rule=_softmax_rule("softmax"),
    ref=_softmax_ref,
    vjp=_softmax_vjp,
    arity=1,
    attrs={"axis": REQUIRED},
    traits=("normalization",),
    flops=lambda out, x, **a: 4 * x.numel,
)

# ---- one_hot ------------------------------------------------------------------------------


def _one_hot_rule(x: TensorType, num_classes, ignore_index, dtype) -> TensorType:
    if x.dtype not in (dtypes.int64, dtypes.int32):
        raise ShapeError(
            f"one_hot: class indices must be an integer tensor, got {x} "
            "(convert labels with .long())"
        )
    if num_classes < 1:
        raise ShapeError(f"one_hot: num_classes must be positive, got {num_classes}")
    return TensorType(x.shape + (num_classes,), dtype)


def _one_hot_ref(x, num_classes, ignore_index, dtype):
    valid = x != ignore_index if ignore_index is not None else np.ones(x.shape, bool)
    bad = valid & ((x < 0) | (x >= num_classes))
    if bad.any():
        value = int(x[bad].flat[0])
        raise IndexError(
            f"class index {value} is out of range for {num_classes} classes "
            f"(valid: 0..{num_classes - 1})"
        )
    # valid masks ignored rows even when ignore_index is itself a class (ignore_index=0)
    return ((x[..., None] == np.arange(num_classes)) & valid[..., None]).astype(dtype.np)


defop(
    "one_hot",
    type_rule=_one_hot_rule,
    ref=_one_hot_ref,
    arity=1,
    attrs={"num_classes": REQUIRED, "ignore_index": None, "dtype": dtypes.float32},
    traits=("index",),
    vjp=NoGrad("class indices are integers"),
    doc="1 at each index's class, 0 elsewhere; rows equal to ignore_index are all 0; "
    "any other index outside [0, num_classes) is an error",
)


def windows_tile(node, max_window: int = 16) -> bool:
    """Whether a max_pool2d(_grad) node's windows tile its input without overlap (stride ==
    kernel, no padding or dilation): each input position is then in at most one window, which
    the fast pooling kernels rely on."""
    a = node.attrs
    x = node.inputs[0] if node.op == "max_pool2d" else node.inputs[1]
    kh, kw = a["kernel_size"]
    h, w = x.shape[2:]
    out = node.shape if node.op == "max_pool2d" else node.inputs[0].shape
    return (
        tuple(a["stride"]) == (kh, kw)
        and tuple(a["padding"]) == (0, 0)
        and tuple(a["dilation"]) == (1, 1)
        and kh * kw <= max_window
        and out[2] * kh <= h
        and out[3] * kw <= w
    )
