"""The layers of the CNN families beyond LeNet: transposed convolution, upsampling, padding,
adaptive max pooling and channel dropout, with PyTorch's constructor arguments, defaults,
parameters and reprs. Each forward is its nn.functional form."""

from __future__ import annotations

from graphc import dispatch
from graphc.errors import ShapeError
from graphc.nn import functional as F
from graphc.nn.functional_conv import transposed_output_size
from graphc.nn.layers import _check_device, _DropoutNd, _empty, _pair, _reset_conv
from graphc.nn.module import Module
from graphc.tensor import Tensor


class ConvTranspose2d(Module):
    """weight: [in_channels, out_channels / groups, kH, kW], as PyTorch's."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        output_padding=0,
        groups: int = 1,
        bias: bool = True,
        dilation=1,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        _check_device(device)
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError("in_channels and out_channels must be divisible by groups")
        if padding_mode != "zeros":
            raise ValueError(
                f'Only "zeros" padding mode is supported for ConvTranspose2d, got {padding_mode!r}'
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.output_padding = _pair(output_padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.padding_mode = padding_mode
        self.weight = _empty(in_channels, out_channels // groups, *self.kernel_size, dtype=dtype)
        if bias:
            self.bias = _empty(out_channels, dtype=dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # PyTorch's _ConvNd rule; the fan-in of this layout is out_channels / groups * kH * kW
        _reset_conv(self.weight, self.bias)

    def _output_padding(self, input: Tensor, output_size) -> tuple[int, int]:
        """The output_padding that makes the output `output_size` (PyTorch's rule: any
        size from the smallest to a stride - 1 larger)."""
        if output_size is None:
            return self.output_padding
        sizes = [int(s) for s in output_size][-2:]
        if len(sizes) != 2:
            raise dispatch.user_error(
                ShapeError,
                f"ConvTranspose2d: output_size must have 2 or more elements, got "
                f"{list(output_size)}",
            )
        pads = []
        for i in range(2):
            smallest = transposed_output_size(
                input.shape[-2 + i],
                self.kernel_size[i],
                self.stride[i],
                self.padding[i],
                0,
                self.dilation[i],
            )
            largest = smallest + self.stride[i] - 1
            if not smallest <= sizes[i] <= largest:
                raise dispatch.user_error(
                    ShapeError,
                    f"ConvTranspose2d: requested an output size of {sizes}, but valid sizes "
                    f"range from {smallest} to {largest} (for an input of "
                    f"{list(input.shape[-2:])}) along dimension {i}",
                )
            pads.append(sizes[i] - smallest)
        return (pads[0], pads[1])

    def forward(self, input: Tensor, output_size=None) -> Tensor:
        return F.conv_transpose2d(
            input,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self._output_padding(input, output_size),
            self.groups,
            self.dilation,
        )

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.output_padding != (0, 0):
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class Upsample(Module):
    def __init__(
        self,
        size=None,
        scale_factor=None,
        mode: str = "nearest",
        align_corners: bool | None = None,
        recompute_scale_factor: bool | None = None,
    ) -> None:
        super().__init__()
        self.size = size
        if isinstance(scale_factor, (tuple, list)):
            scale_factor = tuple(float(s) for s in scale_factor)
        self.scale_factor = float(scale_factor) if isinstance(scale_factor, int) else scale_factor
        self.mode, self.align_corners = mode, align_corners
        self.recompute_scale_factor = recompute_scale_factor

    def forward(self, input: Tensor) -> Tensor:
        return F.interpolate(
            input,
            self.size,
            self.scale_factor,
            self.mode,
            self.align_corners,
            recompute_scale_factor=self.recompute_scale_factor,
        )

    def extra_repr(self) -> str:
        if self.scale_factor is not None:
            info = f"scale_factor={self.scale_factor!r}"
        else:
            info = f"size={self.size!r}"
        return f"{info}, mode={self.mode!r}"


class UpsamplingNearest2d(Upsample):
    def __init__(self, size=None, scale_factor=None) -> None:
        super().__init__(size, scale_factor, mode="nearest")


class UpsamplingBilinear2d(Upsample):
    def __init__(self, size=None, scale_factor=None) -> None:
        super().__init__(size, scale_factor, mode="bilinear", align_corners=True)


class _Pad2d(Module):
    mode = "constant"

    def __init__(self, padding) -> None:
        super().__init__()
        if isinstance(padding, int):
            padding = (padding,) * 4
        self.padding = tuple(int(p) for p in padding)
        if len(self.padding) != 4:
            raise ValueError(
                f"padding must be an int or a 4-tuple (left, right, top, bottom), got {padding}"
            )

    def forward(self, input: Tensor) -> Tensor:
        return F.pad(input, self.padding, self.mode)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class ZeroPad2d(_Pad2d):
    pass


class ConstantPad2d(_Pad2d):
    def __init__(self, padding, value: float) -> None:
        super().__init__(padding)
        self.value = value

    def forward(self, input: Tensor) -> Tensor:
        return F.pad(input, self.padding, "constant", self.value)

    def extra_repr(self) -> str:
        return f"padding={self.padding}, value={self.value}"


class ReflectionPad2d(_Pad2d):
    mode = "reflect"


class ReplicationPad2d(_Pad2d):
    mode = "replicate"


class CircularPad2d(_Pad2d):
    mode = "circular"


class AdaptiveMaxPool2d(Module):
    def __init__(self, output_size, return_indices: bool = False) -> None:
        super().__init__()
        self.output_size, self.return_indices = output_size, return_indices

    def forward(self, input: Tensor) -> Tensor:
        return F.adaptive_max_pool2d(input, self.output_size, self.return_indices)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class Dropout2d(_DropoutNd):
    def forward(self, input: Tensor) -> Tensor:
        return F.dropout2d(input, self.p, self.training, self.inplace)
