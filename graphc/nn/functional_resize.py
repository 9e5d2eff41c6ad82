"""nn.functional's resampling and padding: interpolate (nearest, linear, bilinear), pad
(constant, reflect, replicate, circular) and adaptive pooling. All are compositions of
primitives, each axis on its own (every mode here is separable):

- nearest by an integer factor is a pure view (reshape, broadcast_to, reshape; or a strided
  slice when shrinking), which loop kernels read in place;
- any other resampling of an axis is a matmul with a constant [in, out] matrix whose row
  weights are PyTorch's (two taps per output for linear, one for nearest), computed as
  PyTorch's CPU kernels compute them (in the input's precision). Its VJP is the transposed
  matmul. A product with the matrix's zeros is exact for finite values; an inf or NaN in
  the input spreads along its row (0 * inf), where PyTorch's two-tap loops keep it local;
- padding is concat of slices (reflect, circular), of broadcast edge slices (replicate) or
  of fills (constant), or pad_slice for zeros;
- adaptive pooling is max_pool2d / avg_pool2d when the windows tile the input, else each
  axis's windows reduced one by one and concatenated.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from graphc import dispatch
from graphc import functions as G
from graphc.errors import GraphcError, OptionError, ShapeError
from graphc.nn.spatial import batched
from graphc.tensor import Tensor

apply = dispatch.apply
MODES = ("nearest", "linear", "bilinear")
_SPATIAL = {"linear": 1, "bilinear": 2}  # the modes bound to one input rank


# ---- interpolate ----------------------------------------------------------------------------


def _per_axis(value, n: int, what: str, shape) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise dispatch.user_error(
                ShapeError,
                f"interpolate: the input has {n} spatial dimensions {list(shape[2:])} but "
                f"{what} has {len(value)} values ({list(value)}); give one per spatial "
                "dimension",
            )
        return list(value)
    return [value] * n


def _output_size(x: Tensor, size, scale_factor, recompute: bool | None) -> tuple[list, list]:
    """(output sizes, the scales PyTorch's index arithmetic uses: None = in / out)."""
    n = x.ndim - 2
    if size is not None and scale_factor is not None:
        raise dispatch.user_error(
            OptionError,
            "interpolate: only one of size or scale_factor should be defined; pass one of them",
        )
    if size is None and scale_factor is None:
        raise dispatch.user_error(
            OptionError,
            "interpolate: either size or scale_factor should be defined (size=(H, W) or "
            "scale_factor=2, for example)",
        )
    if size is not None:
        if recompute:
            raise dispatch.user_error(
                OptionError,
                "interpolate: recompute_scale_factor is not meaningful with an explicit size",
            )
        sizes = _per_axis(size, n, "size", x.shape)
        if not all(isinstance(s, numbers.Integral) and s > 0 for s in sizes):
            raise dispatch.user_error(
                ShapeError, f"interpolate: size must be positive integers, got {size}"
            )
        return [int(s) for s in sizes], [None] * n
    scales = [float(s) for s in _per_axis(scale_factor, n, "scale_factor", x.shape)]
    if not all(math.isfinite(s) and s > 0 for s in scales):
        raise dispatch.user_error(
            ShapeError, f"interpolate: scale_factor must be positive, got {scale_factor}"
        )
    sizes = [int(d * s) for d, s in zip(x.shape[2:], scales, strict=True)]  # floor, as torch
    if min(sizes) < 1:
        raise dispatch.user_error(
            ShapeError,
            f"interpolate: scale_factor {scale_factor} makes an empty output from the "
            f"input's {list(x.shape[2:])}; use a larger scale_factor or give size",
        )
    return sizes, [None] * n if recompute else scales


def _scale(n_in: int, n_out: int, scale: float | None, real) -> np.floating:
    """PyTorch's compute_scales_value: 1 / scale_factor if given, else in / out."""
    if scale is not None and scale > 0:
        return real(1.0 / scale)
    return real(n_in) / real(n_out)


def nearest_sources(n_in: int, n_out: int, scale: float | None) -> np.ndarray:
    """The input index each output reads (PyTorch's CPU nearest_idx, in float32)."""
    if n_out == n_in:
        return np.arange(n_out)
    if n_out == 2 * n_in:
        return np.arange(n_out) >> 1
    s = _scale(n_in, n_out, scale, np.float32)
    index = np.floor(np.arange(n_out, dtype=np.float32) * s).astype(np.int64)
    return np.minimum(index, n_in - 1)


def linear_weights(n_in: int, n_out: int, align_corners: bool, scale: float | None, real):
    """[out, in] weights of linear interpolation (PyTorch's compute_indices_weights_linear,
    in the input's precision `real`): lambda0 at the left tap, lambda1 at the right one."""
    if align_corners:
        s = real(n_in - 1) / real(n_out - 1) if n_out > 1 else real(0)
        src = s * np.arange(n_out, dtype=real)
    else:
        s = _scale(n_in, n_out, scale, real)
        src = np.maximum(s * (np.arange(n_out, dtype=real) + real(0.5)) - real(0.5), real(0))
    left = src.astype(np.int64)
    lam1 = np.clip(src - left.astype(real), real(0), real(1)).astype(real)
    lam0 = (real(1) - lam1).astype(real)
    right = np.where(left < n_in - 1, left + 1, left)
    m = np.zeros((n_out, n_in), real)
    np.add.at(m, (np.arange(n_out), left), lam0)
    np.add.at(m, (np.arange(n_out), right), lam1)
    return m


def _resample_axis(x: Tensor, axis: int, n_out: int, mode: str, align_corners, scale) -> Tensor:
    n_in = x.shape[axis]
    if mode == "nearest":
        src = nearest_sources(n_in, n_out, scale)
        if np.array_equal(src, np.arange(n_out)):
            return x
        view = _nearest_view(x, axis, src)
        if view is not None:
            return view
        matrix = np.zeros((n_out, n_in), x.dtype.np)
        matrix[np.arange(n_out), src] = 1
    else:
        matrix = linear_weights(n_in, n_out, bool(align_corners), scale, x.dtype.np)
        if n_in == n_out and np.array_equal(matrix, np.eye(n_in)):
            return x
    return _apply_matrix(x, axis, matrix)


def _nearest_view(x: Tensor, axis: int, src: np.ndarray) -> Tensor | None:
    """Nearest resampling by an integer factor as a view: each input repeated k times
    (reshape, broadcast, reshape) or every k-th input (a strided slice); else None."""
    n_in, n_out = x.shape[axis], len(src)
    if n_out % n_in == 0 and np.array_equal(src, np.arange(n_out) // (n_out // n_in)):
        k = n_out // n_in
        shape = list(x.shape)
        split = shape[: axis + 1] + [1] + shape[axis + 1 :]
        wide = shape[: axis + 1] + [k] + shape[axis + 1 :]
        out = G.broadcast_to(G.reshape(x, split), wide)
        shape[axis] = n_out
        return G.reshape(out, shape)
    if n_out > 1 and src[0] == 0 and np.all(np.diff(src) == src[1]):
        stop = int(src[-1]) + 1
        return apply("slice", (x,), axis=axis, start=0, stop=stop, step=int(src[1]))
    return None


def _nearest_repeat(x: Tensor, sizes: list[int], scales: list) -> Tensor | None:
    """Nearest upsampling by integer factors on every axis as one view: x viewed as
    [N, C, H, 1, W, 1], broadcast to [N, C, H, kh, W, kw], viewed as [N, C, H*kh, W*kw]
    (one copy where a kernel needs it, not one per axis); None for other factors."""
    factors = []
    for axis, n_out in enumerate(sizes, start=2):
        n_in = x.shape[axis]
        src = nearest_sources(n_in, n_out, scales[axis - 2])
        k = n_out // n_in
        if n_out % n_in or not np.array_equal(src, np.arange(n_out) // k):
            return None
        factors.append(k)
    if all(k == 1 for k in factors):
        return x
    split, wide = list(x.shape[:2]), list(x.shape[:2])
    for d, k in zip(x.shape[2:], factors, strict=True):
        split += [d, 1]
        wide += [d, k]
    out = G.broadcast_to(G.reshape(x, split), wide)
    return G.reshape(out, *x.shape[:2], *sizes)


def _apply_matrix(x: Tensor, axis: int, matrix: np.ndarray) -> Tensor:
    """x with `axis` replaced by matrix @ (that axis): a matmul over the other axes."""
    last = x.ndim - 1
    moved = x if axis == last else G.transpose(x, axis, last)
    rows = G.reshape(moved, -1, moved.shape[-1])
    out = G.matmul(rows, G.from_numpy(np.ascontiguousarray(matrix.T)))
    out = G.reshape(out, *moved.shape[:-1], matrix.shape[0])
    return out if axis == last else G.transpose(out, axis, last)


def interpolate(
    input: Tensor,
    size=None,
    scale_factor=None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
    antialias: bool = False,
) -> Tensor:
    """PyTorch's interpolate for modes nearest (3-D and 4-D input), linear (3-D) and
    bilinear (4-D), by size or scale_factor, align_corners either way."""
    G.tensor_argument(input, "interpolate")
    if mode not in MODES:
        raise dispatch.user_error(
            GraphcError,
            f"interpolate: mode {mode!r} is not supported; graphc has "
            f"{', '.join(repr(m) for m in MODES)}",
        )
    if mode == "nearest" and align_corners is not None:
        raise dispatch.user_error(
            OptionError,
            "interpolate: align_corners option can only be set with the interpolating modes: "
            "linear | bilinear; leave it out for mode='nearest'",
        )
    if antialias:
        raise dispatch.user_error(GraphcError, "interpolate: antialias=True is not supported")
    if input.ndim not in (3, 4) or input.ndim - 2 != _SPATIAL.get(mode, input.ndim - 2):
        want = {"linear": "3-D (N, C, L)", "bilinear": "4-D (N, C, H, W)"}.get(
            mode, "3-D (N, C, L) or 4-D (N, C, H, W)"
        )
        raise dispatch.user_error(
            ShapeError,
            f"interpolate: mode {mode!r} expects a {want} input, got shape {list(input.shape)}",
        )
    if not input.dtype.is_floating_point:
        raise dispatch.user_error(
            ShapeError, f"interpolate: needs a floating-point input, got {input.dtype.name}"
        )
    sizes, scales = _output_size(input, size, scale_factor, recompute_scale_factor)
    if mode == "nearest":
        repeated = _nearest_repeat(input, sizes, scales)
        if repeated is not None:
            return repeated
    out = input
    for i in reversed(range(input.ndim - 2)):  # the last axis first, as PyTorch
        out = _resample_axis(out, 2 + i, sizes[i], mode, align_corners, scales[i])
    return out


def upsample(input, size=None, scale_factor=None, mode="nearest", align_corners=None) -> Tensor:
    """The deprecated name of interpolate."""
    return interpolate(input, size, scale_factor, mode, align_corners)


def upsample_nearest(input: Tensor, size=None, scale_factor=None) -> Tensor:
    return interpolate(input, size, scale_factor, mode="nearest")


def upsample_bilinear(input: Tensor, size=None, scale_factor=None) -> Tensor:
    return interpolate(input, size, scale_factor, mode="bilinear", align_corners=True)


# ---- pad ------------------------------------------------------------------------------------

PAD_MODES = ("constant", "reflect", "replicate", "circular")


def pad(input: Tensor, pad, mode: str = "constant", value: float | None = None) -> Tensor:
    """PyTorch's F.pad: `pad` = (left, right, top, bottom, ...) from the last dim backwards."""
    G.tensor_argument(input, "pad")
    widths = [int(p) for p in pad]
    if len(widths) % 2 or len(widths) // 2 > input.ndim:
        raise dispatch.user_error(
            ShapeError,
            f"pad: the padding {tuple(widths)} must have an even length of at most twice the "
            f"input's {input.ndim} dimensions (left, right, top, bottom, ...)",
        )
    if mode not in PAD_MODES:
        raise dispatch.user_error(
            GraphcError,
            f"pad: mode {mode!r} is not one of {', '.join(repr(m) for m in PAD_MODES)}",
        )
    if mode != "constant":
        if value is not None and value != 0:
            raise dispatch.user_error(
                OptionError, f"pad: padding mode {mode!r} doesn't take in value argument"
            )
        k = len(widths) // 2
        if not (k + 1 <= input.ndim <= k + 2) or k > 3:
            raise dispatch.user_error(
                ShapeError,
                f"pad: {mode} padding of the last {k} dimension(s) needs a {k + 1}-D or "
                f"{k + 2}-D input, got shape {list(input.shape)}",
            )
    out = input
    for i in range(len(widths) // 2):
        axis = input.ndim - 1 - i
        before, after = widths[2 * i], widths[2 * i + 1]
        if before or after:
            out = _pad_axis(out, axis, before, after, mode, 0.0 if value is None else value)
    return out


def _pad_axis(x: Tensor, axis: int, before: int, after: int, mode: str, value) -> Tensor:
    n = x.shape[axis]

    def part(start: int, stop: int) -> Tensor:
        return apply("slice", (x,), axis=axis, start=start, stop=stop, step=1)

    if mode == "constant":
        if before < 0 or after < 0:  # negative padding crops
            x = part(max(0, -before), n - max(0, -after))
            before, after = max(before, 0), max(after, 0)
            if not (before or after):
                return x
            n = x.shape[axis]
        shape = list(x.shape)
        shape[axis] = n + before + after
        if value == 0:
            return apply("pad_slice", (x,), shape=tuple(shape), axis=axis, start=before, step=1)
        pieces = []
        for width in (before, after):
            side = list(x.shape)
            side[axis] = width
            pieces.append(G.full(side, value, dtype=x.dtype) if width else None)
        return G.cat([p for p in (pieces[0], x, pieces[1]) if p is not None], axis)
    limit = n - 1 if mode == "reflect" else n
    if min(before, after) < 0 or max(before, after) > limit:
        rule = "less than" if mode == "reflect" else "at most"
        raise dispatch.user_error(
            ShapeError,
            f"pad: {mode} padding ({before}, {after}) of dimension {axis} must be "
            f"non-negative and {rule} its size {n} (input shape {list(x.shape)})",
        )
    if mode == "reflect":
        left = [part(before - i, before - i + 1) for i in range(before)]
        right = [part(n - 2 - i, n - 1 - i) for i in range(after)]
    elif mode == "replicate":
        left = [_widen(part(0, 1), axis, before)] if before else []
        right = [_widen(part(n - 1, n), axis, after)] if after else []
    else:  # circular
        left = [part(n - before, n)] if before else []
        right = [part(0, after)] if after else []
    return G.cat(left + [x] + right, axis)


def _widen(edge: Tensor, axis: int, width: int) -> Tensor:
    shape = list(edge.shape)
    shape[axis] = width
    return G.broadcast_to(edge, shape)


# ---- adaptive pooling -----------------------------------------------------------------------


def _adaptive_sizes(input: Tensor, output_size, op: str) -> tuple[int, int]:
    if isinstance(output_size, (list, tuple)):
        sizes = list(output_size)
        if len(sizes) != 2:
            raise dispatch.user_error(
                ShapeError, f"{op}: output_size must be an int or a pair, got {output_size}"
            )
    else:
        sizes = [output_size, output_size]
    sizes = [input.shape[-2 + i] if s is None else int(s) for i, s in enumerate(sizes)]
    if min(sizes) < 1:
        raise dispatch.user_error(
            ShapeError, f"{op}: output_size must be positive, got {output_size}"
        )
    return sizes[0], sizes[1]


def _windows(n_in: int, n_out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive windows: [floor(i * in / out), ceil((i + 1) * in / out))."""
    return [((i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)) for i in range(n_out)]


def _adaptive(input: Tensor, output_size, op: str, pool, reduce) -> Tensor:
    G.tensor_argument(input, op)
    x, unbatched = batched(input, op)
    oh, ow = _adaptive_sizes(x, output_size, op)
    h, w = x.shape[2:]
    if h % oh == 0 and w % ow == 0:  # the windows tile the input: one pooling kernel
        k = (h // oh, w // ow)
        out = pool(x, k)
    else:
        out = x
        for axis, n_out in ((3, ow), (2, oh)):
            parts = [
                reduce(apply("slice", (out,), axis=axis, start=a, stop=b, step=1), axis)
                for a, b in _windows(out.shape[axis], n_out)
            ]
            out = G.cat(parts, axis) if len(parts) > 1 else parts[0]
    return G.squeeze(out, 0) if unbatched else out


def adaptive_avg_pool2d(input: Tensor, output_size) -> Tensor:
    def pool(x, k):
        return apply(
            "avg_pool2d",
            (x,),
            kernel_size=k,
            stride=k,
            padding=(0, 0),
            ceil_mode=False,
            count_include_pad=True,
            divisor_override=None,
        )

    return _adaptive(
        input, output_size, "adaptive_avg_pool2d", pool, lambda t, a: G.mean(t, a, keepdim=True)
    )


def adaptive_max_pool2d(input: Tensor, output_size, return_indices: bool = False) -> Tensor:
    if return_indices:
        raise dispatch.user_error(
            GraphcError, "adaptive_max_pool2d(return_indices=True) is not supported"
        )

    def pool(x, k):
        return apply(
            "max_pool2d",
            (x,),
            kernel_size=k,
            stride=k,
            padding=(0, 0),
            dilation=(1, 1),
            ceil_mode=False,
        )

    return _adaptive(
        input, output_size, "adaptive_max_pool2d", pool, lambda t, a: G.amax(t, a, keepdim=True)
    )
