"""EfficientNet feature encoder (MBConv or Fused-MBConv), as used by ESeg / ESeg-Lite.

Paper: M. Tan and Q. V. Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks" (ICML 2019), Tab. 1 (the B0 base network) and Sec. 3.3 / 4 (compound scaling);
Fused-MBConv from S. Gupta and M. Tan, "EfficientNet-EdgeTPU" (2019) and EfficientNetV2
(Tan and Le, ICML 2021, Fig. 2).

The encoder returns the feature pyramid ``[P1, P2, P3, P4, P5]`` (strides 2 ... 32): the outputs
of B0 stages 1, 2, 3, 5 and 7 (the last block of each stride). The classification tail (the
1x1 conv to 1280 channels, pooling, dropout and the fully connected layer) is not built, because
a segmentation decoder never uses it (EfficientDet does the same).

Conventions taken from the reference TensorFlow implementation (so that an ImageNet checkpoint
could be mapped onto it and the counts match the published ones):

* ``round_filters``: channels scaled by the width factor, rounded to a multiple of 8, never
  below 90 % of the scaled value; ``round_repeats``: ``ceil(depth * repeats)``.
* MBConv: 1x1 expand (skipped when the expansion ratio is 1) -> BN -> act -> depth-wise kxk ->
  BN -> act -> squeeze-excitation (hidden width ``max(1, int(block_in * 0.25))``, computed from
  the block *input* channels, 1x1 convs with bias, act, sigmoid) -> 1x1 project -> BN (linear
  bottleneck, no act), identity residual when stride 1 and in == out, stochastic depth
  (training only).
* Fused-MBConv: the expand 1x1 and the depth-wise kxk fuse into one regular kxk conv; with an
  expansion ratio of 1 the block is that single kxk conv -> BN -> act (EfficientNetV2).
* "Same" padding ``k // 2`` everywhere, so a stride-2 layer maps a side of n pixels to
  ceil(n / 2) for any n: the pyramid is defined for every input size, no padding of the image.
* BatchNorm eps 1e-3 and momentum 0.01 (TensorFlow's 0.99 decay).
* Depth-wise / fused kernel sizes and strides per stage exactly as B0's Tab. 1.

Check: with the classification tail added back, the parameter counts are exactly the published
EfficientNet-B0 / B1 / B4 / B7 totals (5,288,548 / 7,794,184 / 19,341,616 / 66,347,960;
``test/test_models_eseg.py::test_encoder_is_efficientnet``).
"""
from __future__ import annotations

from dataclasses import dataclass
import math

import torch
from torch import nn

__all__ = [
    'B0_STAGES', 'BN_EPS', 'BN_MOMENTUM', 'EfficientNetEncoder', 'FusedMBConv', 'MBConv',
    'StageSpec', 'make_act', 'round_filters', 'round_repeats',
]

BN_EPS = 1e-3
BN_MOMENTUM = 0.01


@dataclass(frozen=True)
class StageSpec:
    """One EfficientNet stage of the B0 base network (EfficientNet paper, Tab. 1)."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    out_channels: int


# EfficientNet-B0 (Tab. 1 of the EfficientNet paper): stem 3x3 s2 to 32 channels, then these.
B0_STEM = 32
B0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 1, 16),   # stage 1 -> P1 (stride 2)
    StageSpec(2, 3, 2, 6, 24),   # stage 2 -> P2
    StageSpec(2, 5, 2, 6, 40),   # stage 3 -> P3
    StageSpec(3, 3, 2, 6, 80),
    StageSpec(3, 5, 1, 6, 112),  # stage 5 -> P4
    StageSpec(4, 5, 2, 6, 192),
    StageSpec(1, 3, 1, 6, 320),  # stage 7 -> P5
)
# Stages whose output is a pyramid level: the last stage of each output stride.
_LEVEL_STAGES = (0, 1, 2, 4, 6)


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Scales ``channels`` by ``width`` the way the reference EfficientNet code rounds them."""
    scaled = channels * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:  # never round down by more than 10 %
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float) -> int:
    """Scales a stage's block count by ``depth`` (rounded up, as the reference code does)."""
    return int(math.ceil(depth * repeats))


def make_act(name: str) -> nn.Module:
    """``'silu'`` (Swish-1, EfficientNet) or ``'relu'`` (ESeg-Lite) as a module."""
    if name == 'silu':
        return nn.SiLU(inplace=True)
    if name == 'relu':
        return nn.ReLU(inplace=True)
    raise ValueError(f'unknown activation {name!r}; use "silu" or "relu"')


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class ConvBnAct(nn.Sequential):
    """kxk conv (no bias, 'same' padding) -> BN -> optional activation."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: str | None = 'silu') -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            _bn(cout),
        ]
        if act is not None:
            layers.append(make_act(act))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation gate with 1x1 convs (bias) and the block's activation."""

    def __init__(self, channels: int, hidden: int, act: str) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.act = make_act(act)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))


class DropPath(nn.Module):
    """Stochastic depth on the residual branch; the identity in eval mode (and in exports)."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0], 1, 1, 1)).bernoulli_(keep)
        return x * mask / keep


class MBConv(nn.Module):
    """Mobile inverted bottleneck (MobileNetV2 / EfficientNet) with optional SE."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int,
                 se_ratio: float, act: str, drop_path: float = 0.0) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = ConvBnAct(cin, mid, 1, act=act) if expand != 1 else nn.Identity()
        self.dw = ConvBnAct(mid, mid, kernel, stride, groups=mid, act=act)
        hidden = max(1, int(cin * se_ratio))
        self.se = SqueezeExcite(mid, hidden, act) if se_ratio > 0 else nn.Identity()
        self.project = ConvBnAct(mid, cout, 1, act=None)
        self.residual = stride == 1 and cin == cout
        self.drop_path = DropPath(drop_path) if self.residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + self.drop_path(y) if self.residual else y


class FusedMBConv(nn.Module):
    """Fused-MBConv: one regular kxk conv replaces 1x1 expand + depth-wise kxk (EdgeTPU/V2)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int,
                 se_ratio: float, act: str, drop_path: float = 0.0) -> None:
        super().__init__()
        if expand == 1:
            # EfficientNetV2: a ratio-1 fused block is just the kxk conv to the output width.
            self.fused = ConvBnAct(cin, cout, kernel, stride, act=act)
            self.se: nn.Module = nn.Identity()
            self.project: nn.Module = nn.Identity()
        else:
            mid = cin * expand
            self.fused = ConvBnAct(cin, mid, kernel, stride, act=act)
            hidden = max(1, int(cin * se_ratio))
            self.se = SqueezeExcite(mid, hidden, act) if se_ratio > 0 else nn.Identity()
            self.project = ConvBnAct(mid, cout, 1, act=None)
        self.residual = stride == 1 and cin == cout
        self.drop_path = DropPath(drop_path) if self.residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.fused(x)))
        return x + self.drop_path(y) if self.residual else y


class EfficientNetEncoder(nn.Module):
    """EfficientNet trunk returning ``[P1, ..., P5]`` (strides 2, 4, 8, 16, 32).

    Args:
        width: channel multiplier (B0 1.0, B1 1.0, B4 1.4, B7 2.0).
        depth: block-count multiplier (B0 1.0, B1 1.1, B4 1.8, B7 3.1).
        fused: use Fused-MBConv instead of MBConv in every stage (ESeg-Lite, Sec. 3.3).
        se_ratio: squeeze-excitation hidden ratio of the block input width; 0 disables SE.
        act: ``'silu'`` (EfficientNet's Swish-1) or ``'relu'``.
        drop_path_rate: stochastic-depth rate of the last block (linear ramp over blocks).
    """

    def __init__(self, width: float = 1.0, depth: float = 1.0, fused: bool = False,
                 se_ratio: float = 0.25, act: str = 'silu', drop_path_rate: float = 0.0,
                 stages: tuple[StageSpec, ...] = B0_STAGES, stem: int = B0_STEM) -> None:
        super().__init__()
        stem_ch = round_filters(stem, width)
        self.stem = ConvBnAct(3, stem_ch, 3, 2, act=act)
        block = FusedMBConv if fused else MBConv
        total = sum(round_repeats(s.repeats, depth) for s in stages)
        cin, index = stem_ch, 0
        self.stages = nn.ModuleList()
        channels: list[int] = []
        for spec in stages:
            cout = round_filters(spec.out_channels, width)
            blocks = []
            for i in range(round_repeats(spec.repeats, depth)):
                blocks.append(block(cin, cout, spec.kernel, spec.stride if i == 0 else 1,
                                    spec.expand, se_ratio, act,
                                    drop_path_rate * index / max(1, total)))
                cin, index = cout, index + 1
            self.stages.append(nn.Sequential(*blocks))
            channels.append(cout)
        self.level_stages = _LEVEL_STAGES
        self.out_channels = [channels[i] for i in _LEVEL_STAGES]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Returns ``[P1, P2, P3, P4, P5]``."""
        x = self.stem(x)
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.level_stages:
                feats.append(x)
        return feats
