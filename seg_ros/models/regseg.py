"""RegSeg: dilated RegNet-style backbone + light decoder (Gao, "Rethinking Dilated Convolution
for Real-time Semantic Segmentation", 2021; text in ``shared/papers/regseg.txt``).

Paper sections implemented here:

* Sec. 3.2 / Fig. 4 — the D block: 1x1 conv -> 3x3 *grouped* conv whose groups are split into
  branches with different dilation rates (group width 16) -> SE (ratio 1/4) -> 1x1 conv; BN+ReLU
  after every conv except the last, whose ReLU moves after the residual sum; stride-2 shortcut
  is 2x2 average pooling + 1x1 conv + BN (ResNet-D style).
* Sec. 3.3 / Tab. 1 — the backbone: 3x3 stem (32, s2), one 48-ch D block at 1/4, three 128-ch at
  1/8, thirteen 256-ch at 1/16 and one 320-ch at 1/16. No 1/32 stage.
* Sec. 3.5 / Fig. 6 — the decoder (``decoder26`` in the official code): 1x1 heads on the 1/4,
  1/8 and 1/16 features, 1/16 upsampled and added to 1/8, 3x3 conv, upsampled and concatenated
  with 1/4, 3x3 conv, 1x1 classifier; logits bilinearly upsampled to the input size
  (``align_corners=False`` as the official code).
* Tab. 2 — the DNAS dilation rates (``regseg_dnas``; field of view 2399, see ``fov.py``).

Exactness: module and attribute names follow the official ``RolandGao/RegSeg`` code
(``model.RegSeg('exp48_decoder26')``) so an official state_dict loads as is; ``regseg48`` has
3,334,951 parameters and 38.35 G conv MACs at 1024x2048, equal to the official model.

Deviations from the official code (none change the maths):

* SE uses ``x.mean((2, 3))`` instead of ``AdaptiveAvgPool2d(1)`` (same value, simpler ONNX).
* The dilation list is a config field (``dilations``) so searched configurations can be built
  with ``create_model('regseg48', dilations=[...])``; an entry with one rate builds one grouped
  conv (official ``[1]`` layout), an entry with several rates splits the channels into equal
  branches in list order (official ``DilatedConv``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
import torch.nn.functional as F

from seg_ros.models.blocks import ConvBnAct, SEModule
from seg_ros.models.registry import register_model

__all__ = ['RegSegConfig', 'RegSeg', 'DBlock', 'DilatedConv', 'EXP48_DILATIONS',
           'DNAS_DILATIONS', 'regseg48', 'regseg_dnas']

# Official exp48: [[1],[1,2]] + 4*[[1,4]] + 7*[[1,14]] (13 stride-1 blocks at 1/16).
EXP48_DILATIONS: tuple[tuple[int, ...], ...] = (
    (1,), (1, 2)) + 4 * ((1, 4),) + 7 * ((1, 14),)
# Paper Tab. 2: rates found by differentiable NAS (rounded), field of view 2399.
DNAS_DILATIONS: tuple[tuple[int, ...], ...] = (
    (1, 1), (1, 2), (1, 2), (1, 3), (2, 3), (2, 7), (2, 3), (2, 6), (2, 5), (2, 9), (2, 11),
    (4, 7), (5, 14))


def _norm_dilations(dilations: Sequence[Any]) -> tuple[tuple[int, ...], ...]:
    out = []
    for i, d in enumerate(dilations):
        rates = (d,) if isinstance(d, int) else tuple(d)
        if not rates or any(not isinstance(r, int) or r < 1 for r in rates):
            raise ValueError(f'dilations[{i}] = {d!r}: expected positive int rates')
        out.append(tuple(int(r) for r in rates))
    return tuple(out)


@dataclass(frozen=True)
class RegSegConfig:
    """Architecture of a RegSeg model (defaults: official ``exp48_decoder26``).

    Attributes:
        num_classes: output classes.
        stem_channels: width of the 3x3 stride-2 stem.
        widths: output widths of the 1/4, 1/8 and 1/16 stages and of the last block.
        depth8: number of D blocks at 1/8.
        dilations: rates of the stride-1 blocks at 1/16 (one entry per block, each a tuple of
            branch rates); its length sets the number of those blocks (13 in the paper).
        group_width: channels per group of the 3x3 convs.
        se_ratio: SE hidden width as a fraction of the block's *input* channels.
        decoder_channels: (head16/head8 width, head4 width, conv8/conv4 width).
    """

    num_classes: int = 19
    stem_channels: int = 32
    widths: tuple[int, int, int, int] = (48, 128, 256, 320)
    depth8: int = 3
    dilations: tuple[tuple[int, ...], ...] = field(default=EXP48_DILATIONS)
    group_width: int = 16
    se_ratio: float = 0.25
    decoder_channels: tuple[int, int, int] = (128, 8, 64)

    def __post_init__(self) -> None:
        object.__setattr__(self, 'dilations', _norm_dilations(self.dilations))
        if len(self.dilations) < 1:
            raise ValueError('dilations must have at least one entry')
        for i, d in enumerate(self.dilations):
            w = self.widths[3] if i == len(self.dilations) - 1 else self.widths[2]
            if w % len(d) or (w // len(d)) % self.group_width:
                raise ValueError(f'dilations[{i}] = {d}: {len(d)} branches do not split '
                                 f'{w} channels into groups of {self.group_width}')


class DilatedConv(nn.Module):
    """3x3 grouped conv whose channel chunks use different dilation rates (paper Fig. 4b).

    Channels are split into ``len(dilations)`` equal chunks in list order; each chunk gets its
    own grouped conv with ``padding = dilation`` and the results are concatenated.
    """

    def __init__(self, channels: int, dilations: Sequence[int], group_width: int,
                 stride: int = 1) -> None:
        super().__init__()
        n = len(dilations)
        self.splits = [channels // n] * n
        c = channels // n
        self.convs = nn.ModuleList(
            nn.Conv2d(c, c, 3, stride, padding=d, dilation=d, groups=c // group_width,
                      bias=False) for d in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunks = torch.split(x, self.splits, dim=1)
        return torch.cat([conv(xi) for conv, xi in zip(self.convs, chunks)], dim=1)


class Shortcut(nn.Module):
    """Projection shortcut: optional 2x2 avg-pool (stride 2, ceil mode) -> 1x1 conv -> BN."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        # ceil_mode keeps the shortcut's size equal to the 3x3 s2 conv's on odd inputs.
        self.avg = nn.AvgPool2d(2, 2, ceil_mode=True) if stride == 2 else nn.Identity()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.avg(x)))


class DBlock(nn.Module):
    """RegSeg D block (paper Fig. 4b/c).

    Args:
        in_channels: input channels.
        out_channels: output channels (also the width of the 3x3 conv).
        dilations: branch dilation rates; a single rate builds one grouped conv.
        group_width: channels per group.
        stride: 1 or 2 (stride-2 blocks must use a single rate).
        se_ratio: SE hidden width = ``int(in_channels * se_ratio)``.
    """

    def __init__(self, in_channels: int, out_channels: int, dilations: Sequence[int],
                 group_width: int = 16, stride: int = 1, se_ratio: float = 0.25) -> None:
        super().__init__()
        groups = out_channels // group_width
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act1 = nn.ReLU(inplace=True)
        if len(dilations) == 1:
            d = dilations[0]
            self.conv2: nn.Module = nn.Conv2d(out_channels, out_channels, 3, stride, padding=d,
                                              dilation=d, groups=groups, bias=False)
        else:
            if stride != 1:
                raise ValueError('a stride-2 D block must have a single dilation rate')
            self.conv2 = DilatedConv(out_channels, dilations, group_width, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act2 = nn.ReLU(inplace=True)
        self.se = SEModule(out_channels, int(in_channels * se_ratio))
        self.conv3 = nn.Conv2d(out_channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.act3 = nn.ReLU(inplace=True)
        self.shortcut: nn.Module | None = (
            Shortcut(in_channels, out_channels, stride)
            if stride != 1 or in_channels != out_channels else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.se(x)
        x = self.bn3(self.conv3(x))
        return self.act3(x + shortcut)


class RegSegBody(nn.Module):
    """Backbone of Tab. 1; returns the 1/4, 1/8 and 1/16 features."""

    def __init__(self, cfg: RegSegConfig) -> None:
        super().__init__()
        w4, w8, w16, w_last = cfg.widths
        g, r = cfg.group_width, cfg.se_ratio
        self.stage4 = DBlock(cfg.stem_channels, w4, (1,), g, 2, r)
        self.stage8 = nn.Sequential(
            DBlock(w4, w8, (1,), g, 2, r),
            *[DBlock(w8, w8, (1,), g, 1, r) for _ in range(cfg.depth8 - 1)])
        ds = cfg.dilations
        self.stage16 = nn.Sequential(
            DBlock(w8, w16, (1,), g, 2, r),
            *[DBlock(w16, w16, d, g, 1, r) for d in ds[:-1]],
            DBlock(w16, w_last, ds[-1], g, 1, r))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x4 = self.stage4(x)
        x8 = self.stage8(x4)
        x16 = self.stage16(x8)
        return x4, x8, x16


class Decoder26(nn.Module):
    """The RegSeg decoder (paper Fig. 6; official ``Exp2_Decoder26``)."""

    def __init__(self, num_classes: int, channels: tuple[int, int, int],
                 widths: tuple[int, int, int, int]) -> None:
        super().__init__()
        c16, c4, cmid = channels
        w4, w8, _, w_last = widths
        self.head16 = ConvBnAct(w_last, c16, 1)
        self.head8 = ConvBnAct(w8, c16, 1)
        self.head4 = ConvBnAct(w4, c4, 1)
        self.conv8 = ConvBnAct(c16, cmid, 3)
        self.conv4 = ConvBnAct(cmid + c4, cmid, 3)
        self.classifier = nn.Conv2d(cmid, num_classes, 1)

    def forward(self, x4: torch.Tensor, x8: torch.Tensor, x16: torch.Tensor) -> torch.Tensor:
        x16 = self.head16(x16)
        x8 = self.head8(x8)
        x4 = self.head4(x4)
        x16 = F.interpolate(x16, size=x8.shape[-2:], mode='bilinear', align_corners=False)
        x8 = self.conv8(x8 + x16)
        x8 = F.interpolate(x8, size=x4.shape[-2:], mode='bilinear', align_corners=False)
        x4 = self.conv4(torch.cat((x8, x4), dim=1))
        return self.classifier(x4)


class RegSeg(nn.Module):
    """RegSeg: stem -> body -> decoder -> bilinear upsampling to the input size.

    Args:
        cfg: the architecture.
    """

    def __init__(self, cfg: RegSegConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem = ConvBnAct(3, cfg.stem_channels, 3, stride=2, padding=1)
        self.body = RegSegBody(cfg)
        self.decoder = Decoder26(cfg.num_classes, cfg.decoder_channels, cfg.widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised image -> (N, num_classes, H, W) logits."""
        size = x.shape[-2:]
        x4, x8, x16 = self.body(self.stem(x))
        x = self.decoder(x4, x8, x16)
        return F.interpolate(x, size=size, mode='bilinear', align_corners=False)


def _build(cfg: RegSegConfig, num_classes: int, **overrides: Any) -> RegSeg:
    return RegSeg(replace(cfg, num_classes=num_classes, **overrides))


@register_model
def regseg48(num_classes: int = 19, **overrides: Any) -> RegSeg:
    """RegSeg exp48 backbone + decoder26 (paper Tab. 1, Sec. 3.5; 3.34M params)."""
    return _build(RegSegConfig(), num_classes, **overrides)


@register_model
def regseg_dnas(num_classes: int = 19, **overrides: Any) -> RegSeg:
    """RegSeg with the DNAS dilation rates of paper Tab. 2 (field of view 2399)."""
    return _build(RegSegConfig(dilations=DNAS_DILATIONS), num_classes, **overrides)
