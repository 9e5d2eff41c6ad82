"""nn.functional's transposed convolution, as a composition: conv_transpose2d(x, w) is the
gradient of a conv2d with respect to its input, taken at x, which is exactly the primitive
conv2d_input_grad (graphc/ops/nn.py). Its VJPs (a conv2d for x, a conv2d_weight_grad for w)
and its native kernels (stride 1: a direct convolution with the flipped kernel; stride > 1:
by output phase, never over a zero-stuffed input) come with it.

PyTorch's weight layout for a transposed convolution, [in, out / groups, kH, kW], is the
OIHW layout of the forward convolution it transposes (O = the transposed conv's input
channels), so the weight is passed as it is.
"""

from __future__ import annotations

from graphc import dispatch
from graphc import functions as G
from graphc.errors import ShapeError
from graphc.nn.spatial import batched, bias_nchw, pair
from graphc.ops.nn import out_size
from graphc.tensor import Tensor

apply = dispatch.apply


def transposed_output_size(
    size: int, k: int, stride: int, padding: int, output_padding: int, dilation: int
) -> int:
    """PyTorch's ConvTranspose2d output size along one axis."""
    return (size - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1


def check_output_padding(output_padding, stride, dilation) -> None:
    """PyTorch's rule: output padding adds rows no tap reaches, so each must be smaller
    than the stride or the dilation of its axis."""
    if any(op >= s and op >= d for op, s, d in zip(output_padding, stride, dilation, strict=True)):
        raise dispatch.user_error(
            ShapeError,
            f"conv_transpose2d: output padding must be smaller than either stride or dilation, "
            f"but got output_padding={output_padding} with stride={stride} and "
            f"dilation={dilation}; use output_padding < stride (or pass output_size to "
            "ConvTranspose2d's forward)",
        )


def conv_transpose2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride=1,
    padding=0,
    output_padding=0,
    groups: int = 1,
    dilation=1,
) -> Tensor:
    G.tensor_argument(input, "conv_transpose2d")
    G.tensor_argument(weight, "conv_transpose2d", "weight")
    x, unbatched = batched(input, "conv_transpose2d")
    stride, padding = pair(stride, "stride"), pair(padding, "padding")
    output_padding, dilation = pair(output_padding, "output_padding"), pair(dilation, "dilation")
    groups = int(groups)
    if weight.ndim != 4:
        raise dispatch.user_error(
            ShapeError,
            f"conv_transpose2d: the weight must be 4-D [in, out / groups, kH, kW], got shape "
            f"{list(weight.shape)}",
        )
    n, c, h, w = x.shape
    cin, cg_out, kh, kw = weight.shape
    if groups < 1 or cin % groups:
        raise dispatch.user_error(
            ShapeError,
            f"conv_transpose2d: {cin} input channels are not divisible by groups={groups}",
        )
    if c != cin:
        raise dispatch.user_error(
            ShapeError,
            f"conv_transpose2d: given transposed=1, weight of size {list(weight.shape)}, "
            f"expected input{list(x.shape)} to have {cin} channels, but got {c} channels "
            "instead",
        )
    if x.dtype != weight.dtype:
        raise dispatch.user_error(
            ShapeError,
            f"conv_transpose2d: input is {x.dtype.name} but the weight is {weight.dtype.name}; "
            "convert the input with .float()",
        )
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0 or min(output_padding) < 0:
        raise dispatch.user_error(
            ShapeError,
            f"conv_transpose2d: invalid stride {stride}, padding {padding}, output_padding "
            f"{output_padding} or dilation {dilation} (strides and dilations are positive, "
            "paddings non-negative)",
        )
    check_output_padding(output_padding, stride, dilation)
    hw = [
        transposed_output_size(size, k, s, p, op, d)
        for size, k, s, p, op, d in zip(
            (h, w), (kh, kw), stride, padding, output_padding, dilation, strict=True
        )
    ]
    if min(hw) <= 0:
        raise dispatch.user_error(
            ShapeError,
            f"conv_transpose2d: the output would be {hw[0]}x{hw[1]} for an input of "
            f"{h}x{w} with padding {padding}; use less padding",
        )
    input_shape = (n, cg_out * groups, hw[0], hw[1])
    # The convolution this one transposes maps the output back to g; when output_padding
    # reaches a full stride (allowed by a larger dilation), it has more positions than x,
    # and the missing cotangents are zeros.
    for axis, k, s, p, d in ((2, kh, stride[0], padding[0], dilation[0]),
                             (3, kw, stride[1], padding[1], dilation[1])):  # fmt: skip
        need = out_size(input_shape[axis], k, s, p, d)
        if need > x.shape[axis]:
            shape = list(x.shape)
            shape[axis] = need
            x = apply("pad_slice", (x,), shape=tuple(shape), axis=axis, start=0, step=1)
    out = apply(
        "conv2d_input_grad",
        (x, weight),
        input_shape=input_shape,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
    )
    out = bias_nchw(out, bias)
    return G.squeeze(out, 0) if unbatched else out
