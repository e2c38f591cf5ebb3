"""Small building blocks shared by the seg_ros architectures.

The attribute names (``conv``, ``bn``, ``conv1``/``conv2`` in SE) follow the official RegSeg
code so that official checkpoints load without renaming. The API of this module is stable:
other architecture files import it.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

__all__ = ['ConvBnAct', 'SEModule', 'resize_to', 'make_act']


def make_act(act: str | None) -> nn.Module:
    """Return an activation module by name ('relu', 'relu6', 'hardswish', 'silu', 'gelu', None)."""
    if act is None or act == 'none':
        return nn.Identity()
    table: dict[str, type[nn.Module]] = {
        'relu': nn.ReLU, 'relu6': nn.ReLU6, 'hardswish': nn.Hardswish, 'silu': nn.SiLU,
        'gelu': nn.GELU, 'sigmoid': nn.Sigmoid,
    }
    if act not in table:
        raise ValueError(f'unknown activation {act!r}; valid: {sorted(table)}')
    # In-place ReLU saves memory in training; GELU/Sigmoid have no inplace flag.
    return table[act](inplace=True) if act in ('relu', 'relu6', 'hardswish', 'silu') \
        else table[act]()


class ConvBnAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size.
        stride: conv stride.
        padding: explicit padding; ``None`` means ``dilation * (kernel_size - 1) // 2`` (same).
        dilation: conv dilation.
        groups: conv groups.
        act: activation name for :func:`make_act`, or ``None`` for none.
        bias: whether the conv has a bias (rarely useful before BN).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1, padding: int | None = None, dilation: int = 1,
                 groups: int = 1, act: str | None = 'relu', bias: bool = False) -> None:
        super().__init__()
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                              dilation=dilation, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SEModule(nn.Module):
    """Squeeze-and-excitation (Hu et al.): global pool -> 1x1 -> ReLU -> 1x1 -> sigmoid -> scale.

    Args:
        channels: channels of the input (and output).
        hidden: width of the bottleneck.
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(hidden, channels, 1, bias=True)
        self.act2 = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # mean over H, W (== AdaptiveAvgPool2d(1)), exports as ReduceMean.
        s = x.mean(dim=(2, 3), keepdim=True)
        s = self.act2(self.conv2(self.act1(self.conv1(s))))
        return x * s


def resize_to(x: torch.Tensor, size: tuple[int, int] | torch.Size,
              align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of an NCHW tensor to ``size`` (H, W)."""
    return F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=align_corners)
