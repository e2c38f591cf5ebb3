"""SFNet and SFNet-Lite: semantic flow for fast and accurate scene parsing (Li et al.,
ECCV 2020 / IJCV 2023; text in ``shared/papers/sfnet.txt``).

Paper sections implemented here:

* Flow Alignment Module (FAM, SFNet Sec. 3.2): project both levels to 64 ch, upsample the
  coarse one, predict a 2-ch semantic flow with a 3x3 conv and warp the *coarse* feature with
  ``grid_sample`` to the fine resolution; original SFNet applies it on every FPN level
  (``sfnet_r18``, head ``UperNetAlignHead``).
* Gated Dual Flow Alignment Module (GD-FAM, SFNet-Lite Sec. 3.3): a 4-ch flow warps both the
  PPM output and the 1/4 feature; a spatial gate from channel mean/max of both decides the
  mix. SFNet-Lite aligns only the 1/4 and the 1/32 (PPM) features, concatenates the upsampled
  1/16 feature and classifies at 1/4 (official ``UperNetAlignHeadV2``).
* PPM context head with bins 1, 2, 3, 6 on the last feature.
* Backbones (``backbones.py``): ResNet-18-deep variant D and STDC1/STDC2.

Exactness: the computation follows the official ``lxtGH/SFSegNets`` factories
``DeepR18_SFV2_deeply_dsn_FA_Atten``, ``AlignedSTDC{1,2}_SFV2_spatial_atten`` and
``DeepR18_SF_deeply`` (align_corners=True everywhere, as the official code); parameters and
conv MACs equal the official runnable parameters (see ``shared/reference/README.md``):
R18 12,079,863 / 177.95 G, STDC1 6,433,623 / 74.15 G, STDC2 10,464,087 / 100.52 G at
1024x2048.

Deviations from the official code:

* Only what runs in the eval forward is built: no ImageNet classifier tail in STDC, no third
  ``fpn_in`` in the R18 Lite head, no ``dsn`` head (the official Lite ``dsn`` is constructed but
  never applied, so it was never trained). The paper parameter counts (12.3M/9.7M/13.7M) include
  those dead tensors; ``convert.py`` drops them.
* The backbone lives under ``backbone.`` for every variant (the official ResNet model keeps
  ``layer0..layer4`` at the top level; ``convert.py`` maps them).
* The flow-warp sampling grid is built with ``arange`` in the input dtype instead of
  ``linspace`` (same values; no float64 in the exported graph).
* A training-only deep-supervision head is available separately (:class:`SFNetAuxHead`); the
  eval forward and the export never touch it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
import torch.nn.functional as F

from seg_ros.models.backbones import resnet18_deep_d, stdc1, stdc2
from seg_ros.models.registry import register_model

__all__ = ['SFNetConfig', 'SFNet', 'PSPModule', 'AlignedModule', 'GatedDualFlowAlign',
           'flow_warp', 'SFNetAuxHead', 'sfnet_lite_r18', 'sfnet_lite_stdc1',
           'sfnet_lite_stdc2', 'sfnet_r18']

_BACKBONES = {'resnet18_deep_d': resnet18_deep_d, 'stdc1': stdc1, 'stdc2': stdc2}


def _up(x: torch.Tensor, size: Sequence[int] | torch.Size) -> torch.Tensor:
    # SFSegNets upsamples with align_corners=True everywhere.
    return F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=True)


def flow_warp(x: torch.Tensor, flow: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Warp ``x`` to ``size`` (H, W) along ``flow`` (N, 2, H, W; x, y in output pixels).

    Same maths as the official ``flow_warp``: base grid ``linspace(-1, 1)`` in x and y plus
    ``flow / (W, H)``, ``grid_sample(bilinear, zeros, align_corners=True)``. The grid is built
    with ``arange`` in ``x``'s dtype so the exported graph has no float64 constants.
    """
    out_h, out_w = int(size[0]), int(size[1])
    dt, dev = x.dtype, x.device
    # linspace(-1, 1, n) == arange(n) * 2 / (n - 1) - 1 (n == 1 -> [-1], as linspace).
    gx = torch.arange(out_w, dtype=dt, device=dev) * (2.0 / max(out_w - 1, 1)) - 1.0
    gy = torch.arange(out_h, dtype=dt, device=dev) * (2.0 / max(out_h - 1, 1)) - 1.0
    base = torch.stack((gx.view(1, out_w).expand(out_h, out_w),
                        gy.view(out_h, 1).expand(out_h, out_w)), dim=-1)  # (H, W, 2) as (x, y)
    norm = torch.tensor([out_w, out_h], dtype=dt, device=dev)
    grid = base.unsqueeze(0) + flow.permute(0, 2, 3, 1) / norm
    return F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=True)


class PSPModule(nn.Module):
    """Pyramid pooling (official ``PSPModule``): pooled 1x1+BN branches, concat, 1x1 bottleneck."""

    def __init__(self, in_channels: int, out_channels: int = 128,
                 bins: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(in_channels, out_channels, 1,
                                                             bias=False),
                          nn.BatchNorm2d(out_channels)) for b in bins)
        self.bottleneck = nn.Sequential(
            nn.Conv2d(in_channels + len(bins) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True), nn.Dropout2d(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        priors = [_up(stage(x), size) for stage in self.stages] + [x]
        return self.bottleneck(torch.cat(priors, dim=1))


def _conv_bn_relu(cin: int, cout: int, k: int = 3, bias: bool = False) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, 1, k // 2, bias=bias), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class AlignedModule(nn.Module):
    """FAM of SFNet (official ``AlignedModule``): warp the coarse feature onto the fine grid."""

    def __init__(self, channels: int, mid: int) -> None:
        super().__init__()
        self.down_h = nn.Conv2d(channels, mid, 1, bias=False)
        self.down_l = nn.Conv2d(channels, mid, 1, bias=False)
        self.flow_make = nn.Conv2d(2 * mid, 2, 3, 1, 1, bias=False)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        size = low.shape[-2:]
        h = _up(self.down_h(high), size)
        flow = self.flow_make(torch.cat([h, self.down_l(low)], dim=1))
        return flow_warp(high, flow, size)


class GatedDualFlowAlign(nn.Module):
    """GD-FAM of SFNet-Lite (official ``AlignedModulev2PoolingAtten``, fa_type spatial_atten)."""

    def __init__(self, channels: int, mid: int) -> None:
        super().__init__()
        self.down_h = nn.Conv2d(channels, mid, 1, bias=False)
        self.down_l = nn.Conv2d(channels, mid, 1, bias=False)
        self.flow_make = nn.Conv2d(2 * mid, 4, 3, 1, 1, bias=False)
        self.flow_gate = nn.Sequential(nn.Conv2d(4, 1, 3, 1, 1, bias=False), nn.Sigmoid())

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        size = low.shape[-2:]
        h = _up(self.down_h(high), size)
        flow = self.flow_make(torch.cat([h, self.down_l(low)], dim=1))
        h_warp = flow_warp(high, flow[:, :2], size)
        l_warp = flow_warp(low, flow[:, 2:], size)
        # As official: statistics of the projected high feature and of the raw low feature.
        stats = torch.cat([h.mean(dim=1, keepdim=True), low.mean(dim=1, keepdim=True),
                           h.amax(dim=1, keepdim=True), low.amax(dim=1, keepdim=True)], dim=1)
        gate = self.flow_gate(stats)
        return h_warp * gate + l_warp * (1 - gate)


class LiteHead(nn.Module):
    """SFNet-Lite head (official ``UperNetAlignHeadV2``): PPM, GD-FAM on 1/4 + 1/32, concat
    with the 1/16 lateral, 3x3 conv, classifier. The 1/8 feature is not used (as official)."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, dim: int = 128,
                 bins: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.ppm = PSPModule(in_channels[3], dim, bins)
        self.fpn_in = nn.ModuleList(
            [_conv_bn_relu(in_channels[0], dim, 1, bias=True),
             _conv_bn_relu(in_channels[2], dim, 1, bias=True)])
        self.flow_align_module = GatedDualFlowAlign(dim, dim // 2)
        self.conv_last = nn.Sequential(_conv_bn_relu(2 * dim, dim, 3),
                                       nn.Conv2d(dim, num_classes, 1))

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        psp = self.ppm(feats[3])
        p2 = self.fpn_in[0](feats[0])
        p4 = self.fpn_in[1](feats[2])
        fusion = self.flow_align_module(p2, psp)
        p4 = _up(p4, fusion.shape[-2:])
        return self.conv_last(torch.cat([fusion, p4], dim=1))


class AlignHead(nn.Module):
    """Original SFNet head (official ``UperNetAlignHead``): top-down FPN with a FAM per level,
    3x3 output convs, all levels upsampled to 1/4 and concatenated, 3x3 conv, classifier."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, dim: int = 128,
                 bins: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.ppm = PSPModule(in_channels[-1], dim, bins)
        n = len(in_channels) - 1
        self.fpn_in = nn.ModuleList(_conv_bn_relu(c, dim, 1, bias=True)
                                    for c in in_channels[:-1])
        self.fpn_out = nn.ModuleList(nn.Sequential(_conv_bn_relu(dim, dim, 3)) for _ in range(n))
        self.fpn_out_align = nn.ModuleList(AlignedModule(dim, dim // 2) for _ in range(n))
        self.conv_last = nn.Sequential(_conv_bn_relu(len(in_channels) * dim, dim, 3),
                                       nn.Conv2d(dim, num_classes, 1))

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        f = self.ppm(feats[-1])
        outs = [f]
        for i in reversed(range(len(feats) - 1)):
            lat = self.fpn_in[i](feats[i])
            f = lat + self.fpn_out_align[i](lat, f)
            outs.append(self.fpn_out[i](f))
        outs.reverse()
        size = outs[0].shape[-2:]
        fused = torch.cat([outs[0]] + [_up(o, size) for o in outs[1:]], dim=1)
        return self.conv_last(fused)


class SFNetAuxHead(nn.Module):
    """Training-only deep-supervision head (the official, never-applied ``dsn`` structure):
    3x3 conv(bias) + BN + ReLU + Dropout2d(0.1) + 1x1 classifier on a 128-ch head feature.

    Not part of :class:`SFNet`; a trainer builds it next to the model if it wants aux loss.
    """

    def __init__(self, num_classes: int, dim: int = 128) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1), nn.BatchNorm2d(dim),
                                  nn.ReLU(inplace=True), nn.Dropout2d(0.1),
                                  nn.Conv2d(dim, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


@dataclass(frozen=True)
class SFNetConfig:
    """Architecture of an SFNet model.

    Attributes:
        num_classes: output classes.
        backbone: 'resnet18_deep_d', 'stdc1' or 'stdc2'.
        head: 'lite' (SFNet-Lite GD-FAM head) or 'fam' (original SFNet FAM-per-level head).
        dim: FPN width.
        ppm_bins: PPM pooling bins.
    """

    num_classes: int = 19
    backbone: str = 'resnet18_deep_d'
    head: str = 'lite'
    dim: int = 128
    ppm_bins: tuple[int, ...] = (1, 2, 3, 6)

    def __post_init__(self) -> None:
        if self.backbone not in _BACKBONES:
            raise ValueError(f'unknown backbone {self.backbone!r}; valid: {sorted(_BACKBONES)}')
        if self.head not in ('lite', 'fam'):
            raise ValueError(f"head must be 'lite' or 'fam', got {self.head!r}")
        object.__setattr__(self, 'ppm_bins', tuple(int(b) for b in self.ppm_bins))


class SFNet(nn.Module):
    """Backbone -> (Lite or FAM) head -> bilinear (align_corners=True) upsampling to input size.

    Args:
        cfg: the architecture.
    """

    def __init__(self, cfg: SFNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = _BACKBONES[cfg.backbone]()
        chans = self.backbone.channels
        head_cls = LiteHead if cfg.head == 'lite' else AlignHead
        self.head = head_cls(chans, cfg.num_classes, cfg.dim, cfg.ppm_bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised image -> (N, num_classes, H, W) logits."""
        size = x.shape[-2:]
        return _up(self.head(self.backbone(x)), size)


def _build(cfg: SFNetConfig, num_classes: int, **overrides: Any) -> SFNet:
    return SFNet(replace(cfg, num_classes=num_classes, **overrides))


@register_model
def sfnet_lite_r18(num_classes: int = 19, **overrides: Any) -> SFNet:
    """SFNet-Lite with ResNet-18-deep-D (official DeepR18_SFV2_deeply_dsn_FA_Atten)."""
    return _build(SFNetConfig(backbone='resnet18_deep_d', head='lite'), num_classes, **overrides)


@register_model
def sfnet_lite_stdc1(num_classes: int = 19, **overrides: Any) -> SFNet:
    """SFNet-Lite with STDC1 (official AlignedSTDC1_SFV2_spatial_atten)."""
    return _build(SFNetConfig(backbone='stdc1', head='lite'), num_classes, **overrides)


@register_model
def sfnet_lite_stdc2(num_classes: int = 19, **overrides: Any) -> SFNet:
    """SFNet-Lite with STDC2 (official AlignedSTDC2_SFV2_spatial_atten)."""
    return _build(SFNetConfig(backbone='stdc2', head='lite'), num_classes, **overrides)


@register_model
def sfnet_r18(num_classes: int = 19, **overrides: Any) -> SFNet:
    """Original SFNet (ECCV'20) with ResNet-18-deep-D and FAM on every level (reference)."""
    return _build(SFNetConfig(backbone='resnet18_deep_d', head='fam'), num_classes, **overrides)
