"""Backbones of SFNet / SFNet-Lite: ResNet-18 "deep" variant D and STDC1 / STDC2.

Structure and attribute names follow the official SFSegNets code (``network/resnet_d.py``,
``network/stdcnet.py``) so official checkpoints map one-to-one (see ``convert.py``):

* ResNet-18-deep (Bag-of-Tricks "ResNet-C" deep stem: three 3x3 convs 64-64-128), with the
  SFNet variant 'D': every ``conv2`` of ``layer3`` is dilated by 2 and of ``layer4`` by 4
  while the strides are kept (output strides 4/8/16/32). Returns 1/4, 1/8, 1/16, 1/32
  features (64, 128, 256, 512 channels). No ImageNet classifier (``fc``) is built.
* STDC (Fan et al., CVPR 2021) ``STDCNet813`` (STDC1, layers 2-2-2) and ``STDCNet1446``
  (STDC2, layers 4-5-3), base 64, four convs per ``CatBottleneck``. Returns 1/4, 1/8, 1/16,
  1/32 features (64, 256, 512, 1024 channels). The ImageNet tail (``conv_last``, ``fc``,
  ``bn``, ``linear``) never runs in segmentation and is not built; the official ``x2..x32``
  Sequential aliases of ``features`` are not built either (same tensors, duplicate keys).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seg_ros.models.blocks import ConvBnAct

__all__ = ['BasicBlock', 'ResNetDeep', 'CatBottleneck', 'STDCNet', 'resnet18_deep_d',
           'stdc1', 'stdc2']


class BasicBlock(nn.Module):
    """ResNet basic block; ``dilation`` applies to ``conv2`` only (SFNet variant D)."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1,
                 downsample: nn.Module | None = None, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, padding=dilation, dilation=dilation,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.downsample(x) if self.downsample is not None else x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class ResNetDeep(nn.Module):
    """ResNet with the deep 3-conv stem (official ``resnet_d.ResNet``), packed as layer0..4.

    Args:
        layers: blocks per stage (``[2, 2, 2, 2]`` for ResNet-18).
        dilations: ``conv2`` dilation of each stage (variant D: ``(1, 1, 2, 4)``).
    """

    def __init__(self, layers: Sequence[int] = (2, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 2, 4)) -> None:
        super().__init__()
        stem = nn.Sequential(
            nn.Conv2d(3, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.Conv2d(64, 128, 3, 1, 1, bias=False))
        # Official: layer0 = Sequential(conv1, bn1, relu, maxpool).
        self.layer0 = nn.Sequential(stem, nn.BatchNorm2d(128), nn.ReLU(inplace=True),
                                    nn.MaxPool2d(3, 2, 1))
        self._inplanes = 128
        self.layer1 = self._make_layer(64, layers[0], 1, dilations[0])
        self.layer2 = self._make_layer(128, layers[1], 2, dilations[1])
        self.layer3 = self._make_layer(256, layers[2], 2, dilations[2])
        self.layer4 = self._make_layer(512, layers[3], 2, dilations[3])
        self.channels = (64, 128, 256, 512)

    def _make_layer(self, channels: int, blocks: int, stride: int,
                    dilation: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._inplanes != channels:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, channels, 1, stride, bias=False),
                nn.BatchNorm2d(channels))
        layers = [BasicBlock(self._inplanes, channels, stride, downsample, dilation)]
        self._inplanes = channels
        layers += [BasicBlock(channels, channels, 1, None, dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x1 = self.layer1(self.layer0(x))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x4 = self.layer4(x3)
        return [x1, x2, x3, x4]


class CatBottleneck(nn.Module):
    """STDC module: a chain of convs of halving width, all outputs concatenated.

    With stride 2 the first 1x1 output is downsampled by a depthwise 3x3 s2 conv + BN
    (``avd_layer``) before the chain and by a 3x3 s2 average pool for the concatenation.
    """

    def __init__(self, in_channels: int, out_channels: int, block_num: int = 4,
                 stride: int = 1) -> None:
        super().__init__()
        if block_num < 2:
            raise ValueError('block_num must be >= 2')
        self.stride = stride
        half = out_channels // 2
        if stride == 2:
            self.avd_layer = nn.Sequential(
                nn.Conv2d(half, half, 3, 2, 1, groups=half, bias=False), nn.BatchNorm2d(half))
            self.skip = nn.AvgPool2d(3, 2, 1)
        convs = []
        for idx in range(block_num):
            if idx == 0:
                convs.append(ConvBnAct(in_channels, half, 1))
            elif idx == 1 and block_num == 2:
                convs.append(ConvBnAct(half, half, 3))
            elif idx == 1:
                convs.append(ConvBnAct(half, out_channels // 4, 3))
            elif idx < block_num - 1:
                convs.append(ConvBnAct(out_channels // 2 ** idx, out_channels // 2 ** (idx + 1),
                                       3))
            else:
                convs.append(ConvBnAct(out_channels // 2 ** idx, out_channels // 2 ** idx, 3))
        self.conv_list = nn.ModuleList(convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv_list[0](x)
        out = self.avd_layer(out1) if self.stride == 2 else out1
        outs = []
        for conv in self.conv_list[1:]:
            out = conv(out)
            outs.append(out)
        if self.stride == 2:
            out1 = self.skip(out1)
        return torch.cat([out1, *outs], dim=1)


class STDCNet(nn.Module):
    """STDC backbone (features only).

    Args:
        layers: CatBottlenecks per stage (STDC1 ``(2, 2, 2)``, STDC2 ``(4, 5, 3)``).
        base: width of the 1/4 feature.
        block_num: convs per CatBottleneck.
    """

    def __init__(self, layers: Sequence[int] = (2, 2, 2), base: int = 64,
                 block_num: int = 4) -> None:
        super().__init__()
        features: list[nn.Module] = [ConvBnAct(3, base // 2, 3, 2),
                                     ConvBnAct(base // 2, base, 3, 2)]
        for i, n in enumerate(layers):
            for j in range(n):
                if i == 0 and j == 0:
                    features.append(CatBottleneck(base, base * 4, block_num, 2))
                elif j == 0:
                    features.append(CatBottleneck(base * 2 ** (i + 1), base * 2 ** (i + 2),
                                                  block_num, 2))
                else:
                    features.append(CatBottleneck(base * 2 ** (i + 2), base * 2 ** (i + 2),
                                                  block_num, 1))
        self.features = nn.Sequential(*features)
        # Index ranges of the stages in `features` (official x8 / x16 / x32 slices).
        a, b = 2 + layers[0], 2 + layers[0] + layers[1]
        self._slices = ((0, 2), (2, a), (a, b), (b, len(features)))
        self.channels = (base, base * 4, base * 8, base * 16)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for lo, hi in self._slices:
            for i in range(lo, hi):
                x = self.features[i](x)
            outs.append(x)
        return outs


def resnet18_deep_d() -> ResNetDeep:
    """ResNet-18-deep with SFNet's variant D dilations (layer3 d=2, layer4 d=4)."""
    return ResNetDeep((2, 2, 2, 2), (1, 1, 2, 4))


def stdc1() -> STDCNet:
    """STDC1 (official ``STDCNet813``)."""
    return STDCNet((2, 2, 2))


def stdc2() -> STDCNet:
    """STDC2 (official ``STDCNet1446``)."""
    return STDCNet((4, 5, 3))
