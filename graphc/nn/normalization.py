"""GroupNorm and InstanceNorm2d, with PyTorch's arguments, defaults, parameters and buffers."""

from __future__ import annotations

from graphc import dispatch
from graphc.errors import ShapeError
from graphc.nn import functional as F
from graphc.nn.layers import _affine_parameters, _check_device, _running_stats
from graphc.nn.module import Module
from graphc.tensor import Tensor


class GroupNorm(Module):
    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        _check_device(device)
        if num_groups < 1 or num_channels % num_groups:
            raise ValueError("num_channels must be divisible by num_groups")
        self.num_groups, self.num_channels = num_groups, num_channels
        self.eps, self.affine = eps, affine
        _affine_parameters(self, num_channels, affine, bias, dtype)

    def forward(self, input: Tensor) -> Tensor:
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
            f"bias={self.use_bias}"
        )


class InstanceNorm2d(Module):
    """Statistics per sample and channel. By default (as PyTorch) no affine parameters and
    no running statistics; with track_running_stats=True, eval mode uses the running ones."""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        _check_device(device)
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        _affine_parameters(self, num_features, affine, bias, dtype)
        _running_stats(self, num_features, track_running_stats, dtype)

    def forward(self, input: Tensor) -> Tensor:
        if input.ndim not in (3, 4):
            raise dispatch.user_error(
                ShapeError, f"InstanceNorm2d: expected 3D or 4D input (got {input.ndim}D input)"
            )
        unbatched = input.ndim == 3
        x = input.unsqueeze(0) if unbatched else input
        if x.shape[1] != self.num_features and self.affine:
            raise dispatch.user_error(
                ShapeError,
                f"InstanceNorm2d: expected input's size at dim=1 to match num_features "
                f"({self.num_features}), but got: {x.shape[1]}.",
            )
        out = F.instance_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training or not self.track_running_stats,
            self.momentum if self.momentum is not None else 0.0,
            self.eps,
        )
        return out.squeeze(0) if unbatched else out

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.use_bias}, "
            f"track_running_stats={self.track_running_stats}"
        )
