"""ESeg and ESeg-Lite: EfficientNet encoder, P2/P3-P9 feature space, BiFPN decoder.

Paper: T. Meng, G. Ghiasi, R. Mahjourian, Q. V. Le, M. Tan, "Revisiting Multi-Scale Feature
Fusion for Semantic Segmentation" (2021), ``shared/papers/eseg.txt``: Sec. 2 (Tab. 1: feature
levels, Tab. 2: FPN vs BiFPN), Sec. 3.1 (network design, Fig. 3, the softmax-weighted sum),
Sec. 3.2 (Tab. 3: scaling), Sec. 3.3 (ESeg-Lite), Sec. 4.1 (training setup), Tab. 4 (params and
FLOPs). The BiFPN is EfficientDet's (Tan, Pang, Le, CVPR 2020, Sec. 3, Fig. 2d, Eq. 3), the
encoder EfficientNet (``seg_ros.models.efficientnet``). No code was released; everything here is
derived from these texts and checked against the paper's parameter and FLOP counts.

Structure (stated by the paper)
===============================
* Encoder: EfficientNet, levels P1-P5 (we build P2-P5, the ones the decoder reads). P6-P9 are
  made from P5 by 3x3 stride-2 pooling (Sec. 3.1; Fig. 3 says average pooling) and keep P5's
  width ("the same hidden size of P5 for all other P6-P9 features").
* Decoder: BiFPN over P2-P9 (ESeg) or P3-P9 (ESeg-Lite), repeated top-down + bottom-up fusion,
  outputs of the same shapes.
* Prediction: every decoder level is bilinearly upsampled to the base level and combined with a
  softmax-weighted sum ``O = sum_i softmax(w)_i Up(P_i)``, ``w`` initialised to 1; the
  prediction head runs on ``O`` at the base level, and the logits are upsampled bilinearly to
  the input size.
* Scaling (Tab. 3): encoder (width, depth) and BiFPN (channels, repeats):
  ESeg-S (1.0, 1.1) 96 x 4 = EfficientNet-B1; ESeg-M (1.4, 1.8) 192 x 5 = B4;
  ESeg-L (2.0, 3.1) 288 x 6 = B7; ESeg-Lite-S (0.4, 0.6) 64 x 1; ESeg-Lite-M (0.6, 1.0) 80 x 2;
  ESeg-Lite-L (1.0, 1.0) 96 x 3 (= B0).
* ESeg-Lite (Sec. 3.3): every MBConv becomes a Fused-MBConv, no squeeze-excitation, ReLU instead
  of SiLU, base level (BiFPN finest level, fusion target, head) P3 instead of P2.

Configuration choices we had to derive (and why)
================================================
The paper gives only Tab. 3 and the totals 6.9M / 20.0M / 70.5M params and 34.5 / 112 / 343 B
FLOPs @1024x2048 (Tab. 4; Google's EfficientNet/EfficientDet "FLOPs" are multiply-adds), plus
Tab. 1 for ESeg-S with P2-P5 / P2-P7 / P2-P9: 6.4 / 6.6 / 6.9M and 34.3 / 34.5 / 34.5B. The
remaining choices were fixed by these numbers, which they reproduce to the paper's rounding:

* BiFPN details are EfficientDet's: fast normalised fusion ``sum(relu(w_i) x_i) / (sum + 1e-4)``
  with weights initialised to 1, then activation -> depth-wise separable 3x3 conv (point-wise
  with bias) -> BN; top-down inputs upsampled by nearest x2, bottom-up inputs downsampled by 3x3
  stride-2 max pooling; a layer over n levels has 2 (n - 1) nodes (3 inputs on intermediate
  levels of the bottom-up path). Separable convs are kept in ESeg-Lite's BiFPN too: Sec. 3.3
  only replaces the MBConv *blocks*, and regular 3x3 convs in its BiFPN would put ESeg-Lite-S
  at 18.9 instead of the stated 17B (+1.76 GMACs).
* Lateral projections: one 1x1 conv (bias) + BN per level from the encoder width to the BiFPN
  width, shared by the level's top-down and bottom-up nodes. EfficientDet's per-node variant
  (a second projection for each bottom-up node in the first layer) gives ESeg-S 7.03M (paper
  6.9M), ESeg-M 20.45M (20.0M), ESeg-L 71.45M (70.5M); one per level gives 6.87M / 20.01M /
  70.52M.
* Prediction head: EfficientDet's class-net pattern with one repeat: separable 3x3 conv (bias)
  -> BN -> act, then a separable 3x3 classifier (depth-wise 3x3 + point-wise to the classes,
  bias). With the one-lateral layout it is the only repeat count whose params all round to
  the paper (0 repeats: ESeg-L 70.43M; 2 repeats: 70.61M), and it puts the MACs 0.8-1.6 %
  under the paper (0 repeats: 3-6 % under; 2 repeats: 2-3 % over).
* Encoder: the reference EfficientNet rounding (``round_filters`` multiples of 8, ``ceil`` of
  depth x repeats), SE ratio 0.25 of the block input, BN eps 1e-3 / momentum 0.01, stochastic
  depth off by default (EfficientDet's ``survival_prob=None``; ``drop_path_rate`` enables it).
  The 1280-channel classification conv is not built (unused by a segmenter). With that tail
  added back the encoder has exactly the published B0/B1/B4/B7 parameter counts.
* Fused-MBConv keeps each stage's kernel size (3 or 5) and expansion ratio (1 or 6); a ratio-1
  block is a single kxk conv (EfficientNetV2). This lands ESeg-Lite-S on 17.2 GMACs, the
  paper's "17B FLOPs" (Sec. 3.2); EfficientNetV2-style all-3x3 fused blocks would give 10.0.
* P6-P9: ``avg_pool2d(3, stride 2, padding 1, count_include_pad=False)``. The BiFPN lateral
  convs of P6-P9 then read P5-wide (320/448/640 channels) maps, as the paper states.
* Any input size: every stride-2 layer (convs with padding k // 2, both poolings) maps n pixels
  to ceil(n / 2), so the levels form an exact ceil chain; top-down upsampling is nearest x2
  cropped to the finer level's size (the exact inverse of the stride), and the weighted sum and
  the final logits use bilinear resizing to the target tensor's size. No image padding, no
  data-dependent Python control flow: the same graph exports to ONNX for every input size.

Deviations / not reproduced
===========================
* Softmax of the level weights stays in the graph (the paper drops it after training; it is a
  constant 8-element op). Fusion weights are plain ``nn.Parameter`` s.
* No ImageNet (or Mapillary) weights: none can be downloaded here.
* MACs land 1-2 % under the paper (conv + linear MACs only); the paper's counter likely
  includes a few element-wise ops. Params match to the paper's rounding.
* Training recipe (Sec. 4.1: SGD 0.08 cosine, wd 5e-5, OHEM, EMA) lives in the training code,
  not here. ESeg has no auxiliary heads, so the eval forward is the whole model.

Measured (``seg_ros.models.counting.count``, batch 1, 1024x2048; all params run in eval):

============  ==========  ======  ======  =====
model         params      paper   GMACs   paper
============  ==========  ======  ======  =====
eseg_s        6,867,651   6.9M    33.95   34.5
eseg_m        20,011,021  20.0M   110.56  112
eseg_l        70,525,623  70.5M   340.10  343
eseg_lite_s   3,592,471   --      17.16   17
eseg_lite_m   9,740,860   --      42.74   --
eseg_lite_l   28,399,441  --      114.88  --
============  ==========  ======  ======  =====

Tab. 1 (ESeg-S with P2-P5 / P2-P7 / P2-P9): 6.41M / 6.64M / 6.87M vs 6.4 / 6.6 / 6.9M and
33.79 / 33.94 / 33.95 vs 34.3 / 34.5 / 34.5 GMACs.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import nn
import torch.nn.functional as F

from seg_ros.models.efficientnet import BN_EPS, BN_MOMENTUM, EfficientNetEncoder, make_act
from seg_ros.models.registry import register_model

__all__ = ['ESeg', 'ESegConfig', 'build_eseg']


@dataclass(frozen=True)
class ESegConfig:
    """Everything that defines an ESeg network (see the module docstring for the derivations).

    Attributes:
        num_classes: output classes.
        width: EfficientNet width multiplier (Tab. 3 "Encoder Width").
        depth: EfficientNet depth multiplier (Tab. 3 "Encoder Depth").
        fpn_channels: BiFPN width (Tab. 3 "Decoder # channels").
        fpn_repeats: number of BiFPN layers (Tab. 3 "Decoder # repeats").
        min_level: base level: finest BiFPN level, fusion target and head level (2 for ESeg,
            3 for ESeg-Lite, Sec. 3.3).
        max_level: coarsest level (9; levels above 5 are made by pooling P5).
        fused: Fused-MBConv instead of MBConv in the encoder (ESeg-Lite).
        se_ratio: squeeze-excitation ratio in the encoder, 0 = no SE (ESeg-Lite).
        act: 'silu' (ESeg) or 'relu' (ESeg-Lite), used in the encoder, BiFPN and head.
        head_convs: separable conv -> BN -> act layers of the head before the classifier.
        drop_path_rate: encoder stochastic depth (training only; identity in eval).
    """

    num_classes: int = 19
    width: float = 1.0
    depth: float = 1.1
    fpn_channels: int = 96
    fpn_repeats: int = 4
    min_level: int = 2
    max_level: int = 9
    fused: bool = False
    se_ratio: float = 0.25
    act: str = 'silu'
    head_convs: int = 1
    drop_path_rate: float = 0.0


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class SeparableConv(nn.Sequential):
    """Depth-wise 3x3 (no bias) -> point-wise 1x1 (bias), EfficientDet's SeparableConv2D."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False),
                         nn.Conv2d(cin, cout, 1, bias=True))


class Lateral(nn.Sequential):
    """1x1 conv (bias) + BN: projects an encoder level to the BiFPN width."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 1, bias=True), _bn(cout))


def upsample_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Nearest x2 upsampling of ``x`` cropped to ``ref``'s spatial size.

    Each level is ``ceil(finer / 2)`` of the next finer one, so x2 then crop is the exact
    inverse of the stride for any input size (coarse pixel i covers fine pixels 2i, 2i + 1).
    """
    y = F.interpolate(x, scale_factor=2.0, mode='nearest')
    return y[:, :, :ref.shape[2], :ref.shape[3]]


def downsample(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-2 max pooling (EfficientDet's BiFPN resampling): n -> ceil(n / 2)."""
    return F.max_pool2d(x, 3, 2, 1)


class FusionNode(nn.Module):
    """BiFPN node: fast normalised fusion (EfficientDet Eq. 3) -> act -> sep. conv -> BN."""

    def __init__(self, num_inputs: int, channels: int, act: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_inputs))
        self.act = make_act(act)
        self.conv = SeparableConv(channels, channels)
        self.bn = _bn(channels)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        w = F.relu(self.weight)
        w = w / (w.sum() + 1e-4)
        x = inputs[0] * w[0]
        for i in range(1, len(inputs)):
            x = x + inputs[i] * w[i]
        return self.bn(self.conv(self.act(x)))


class BiFPNLayer(nn.Module):
    """One BiFPN layer over ``levels`` maps (index 0 finest): top-down, then bottom-up.

    ``td[i]`` fuses level i with the upsampled coarser top-down node (the coarsest level starts
    the chain); ``out[i]`` fuses level i, ``td[i]`` (intermediate levels only) and the
    downsampled finer output; the finest output is ``td[0]``. ``2 (levels - 1)`` nodes.
    """

    def __init__(self, levels: int, channels: int, act: str) -> None:
        super().__init__()
        self.levels = levels
        self.td = nn.ModuleList(FusionNode(2, channels, act) for _ in range(levels - 1))
        # bu[i - 1] produces output level i = 1 .. levels - 1.
        self.bu = nn.ModuleList(FusionNode(3 if i < levels - 1 else 2, channels, act)
                                for i in range(1, levels))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        n = self.levels
        td = list(feats)
        for i in range(n - 2, -1, -1):
            td[i] = self.td[i]([feats[i], upsample_to(td[i + 1], feats[i])])
        outs = [td[0]]
        for i in range(1, n):
            below = downsample(outs[-1])
            ins = [feats[i], td[i], below] if i < n - 1 else [feats[i], below]
            outs.append(self.bu[i - 1](ins))
        return outs


class SegHead(nn.Sequential):
    """EfficientDet class-net pattern: ``convs`` x (sep. conv -> BN -> act), sep. classifier."""

    def __init__(self, channels: int, num_classes: int, convs: int, act: str) -> None:
        layers: list[nn.Module] = []
        for _ in range(convs):
            layers += [SeparableConv(channels, channels), _bn(channels), make_act(act)]
        layers.append(SeparableConv(channels, num_classes))
        super().__init__(*layers)


class ESeg(nn.Module):
    """ESeg: EfficientNet -> P(min)..P(max) (P6+ pooled) -> BiFPN -> weighted sum -> head.

    Args:
        cfg: the architecture; see :class:`ESegConfig`.
    """

    # Top-level modules whose layers make the "backbone" field of view (``seg_ros.models.fov``).
    fov_backbone_prefixes = ('encoder',)

    def __init__(self, cfg: ESegConfig) -> None:
        super().__init__()
        if not 1 <= cfg.min_level <= 5 or cfg.max_level < 5:
            raise ValueError('ESeg needs 1 <= min_level <= 5 <= max_level, got '
                             f'{cfg.min_level}..{cfg.max_level}')
        if cfg.fpn_repeats < 1 or cfg.head_convs < 0:
            raise ValueError('ESeg needs fpn_repeats >= 1 and head_convs >= 0')
        self.cfg = cfg
        self.encoder = EfficientNetEncoder(cfg.width, cfg.depth, cfg.fused, cfg.se_ratio,
                                           cfg.act, cfg.drop_path_rate)
        c5 = self.encoder.out_channels[4]
        in_ch = [self.encoder.out_channels[lv - 1] if lv <= 5 else c5
                 for lv in range(cfg.min_level, cfg.max_level + 1)]
        ch = cfg.fpn_channels
        self.lateral = nn.ModuleList(Lateral(c, ch) for c in in_ch)
        self.bifpn = nn.Sequential(*(BiFPNLayer(len(in_ch), ch, cfg.act)
                                     for _ in range(cfg.fpn_repeats)))
        # w_i of Sec. 3.1, one per level, softmax-normalised, initialised to 1.
        self.level_weight = nn.Parameter(torch.ones(len(in_ch)))
        self.head = SegHead(ch, cfg.num_classes, cfg.head_convs, cfg.act)

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder levels P(min)..P(max): EfficientNet up to P5, then 3x3/s2 average pooling."""
        feats = self.encoder(x)[self.cfg.min_level - 1:]
        for _ in range(6, self.cfg.max_level + 1):
            feats.append(F.avg_pool2d(feats[-1], 3, 2, 1, count_include_pad=False))
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` normalised images -> ``(N, num_classes, H, W)`` logits."""
        feats = [lat(f) for lat, f in zip(self.lateral, self.pyramid(x))]
        feats = self.bifpn(feats)
        base = feats[0]
        w = torch.softmax(self.level_weight, 0)
        fused = base * w[0]
        for i in range(1, len(feats)):
            up = F.interpolate(feats[i], size=base.shape[-2:], mode='bilinear',
                               align_corners=False)
            fused = fused + up * w[i]
        logits = self.head(fused)
        return F.interpolate(logits, size=x.shape[-2:], mode='bilinear', align_corners=False)


def build_eseg(cfg: ESegConfig, **overrides: Any) -> ESeg:
    """Builds :class:`ESeg` from ``cfg`` with ``overrides`` (config fields) applied.

    Raises:
        ValueError: for a name that is not a field of :class:`ESegConfig`.
    """
    names = [f.name for f in fields(ESegConfig)]
    unknown = set(overrides) - set(names)
    if unknown:
        raise ValueError(f'unknown ESeg config fields {sorted(unknown)}; valid: {names}')
    return ESeg(replace(cfg, **overrides))


# Tab. 3 of the paper; everything else is ESegConfig's defaults (module docstring).
ESEG_S = ESegConfig(width=1.0, depth=1.1, fpn_channels=96, fpn_repeats=4)
ESEG_M = ESegConfig(width=1.4, depth=1.8, fpn_channels=192, fpn_repeats=5)
ESEG_L = ESegConfig(width=2.0, depth=3.1, fpn_channels=288, fpn_repeats=6)
_LITE: dict[str, Any] = dict(min_level=3, fused=True, se_ratio=0.0, act='relu')
ESEG_LITE_S = ESegConfig(width=0.4, depth=0.6, fpn_channels=64, fpn_repeats=1, **_LITE)
ESEG_LITE_M = ESegConfig(width=0.6, depth=1.0, fpn_channels=80, fpn_repeats=2, **_LITE)
ESEG_LITE_L = ESegConfig(width=1.0, depth=1.0, fpn_channels=96, fpn_repeats=3, **_LITE)


@register_model
def eseg_s(num_classes: int = 19, **overrides: Any) -> ESeg:
    """ESeg-S: EfficientNet-B1, BiFPN 96 x 4 over P2-P9 (paper: 6.9M, 34.5B)."""
    return build_eseg(ESEG_S, num_classes=num_classes, **overrides)


@register_model
def eseg_m(num_classes: int = 19, **overrides: Any) -> ESeg:
    """ESeg-M: EfficientNet-B4, BiFPN 192 x 5 over P2-P9 (paper: 20.0M, 112B)."""
    return build_eseg(ESEG_M, num_classes=num_classes, **overrides)


@register_model
def eseg_l(num_classes: int = 19, **overrides: Any) -> ESeg:
    """ESeg-L: EfficientNet-B7, BiFPN 288 x 6 over P2-P9 (paper: 70.5M, 343B)."""
    return build_eseg(ESEG_L, num_classes=num_classes, **overrides)


@register_model
def eseg_lite_s(num_classes: int = 19, **overrides: Any) -> ESeg:
    """ESeg-Lite-S: Fused-MBConv EfficientNet (0.4, 0.6), BiFPN 64 x 1 over P3-P9 (17B)."""
    return build_eseg(ESEG_LITE_S, num_classes=num_classes, **overrides)


@register_model
def eseg_lite_m(num_classes: int = 19, **overrides: Any) -> ESeg:
    """ESeg-Lite-M: Fused-MBConv EfficientNet (0.6, 1.0), BiFPN 80 x 2 over P3-P9."""
    return build_eseg(ESEG_LITE_M, num_classes=num_classes, **overrides)


@register_model
def eseg_lite_l(num_classes: int = 19, **overrides: Any) -> ESeg:
    """ESeg-Lite-L: Fused-MBConv EfficientNet-B0, BiFPN 96 x 3 over P3-P9."""
    return build_eseg(ESEG_LITE_L, num_classes=num_classes, **overrides)
