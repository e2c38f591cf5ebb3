"""RTSeg: dual-branch real-time segmentation with mixed LIR / MHSA blocks.

Paper: Y. Li, C. Yang, P. Zhao et al., "Towards Real-Time Segmentation on the Edge" (AAAI 2023),
``shared/papers/rtseg.txt``: section "Method / Supernet Design" (detail branch, segment branch,
mixed block, BGA, light decoder), Fig. 1-2, Tab. 1 (params / GMACs), Tab. 4 (ablation).
No code was released; everything below is derived from the text, and where the text is silent
from BiSeNetV2 (Yu et al. 2021), which the paper names as the human-designed starting point
("Following the dual branch design", "we follow BiSeNet", "Different from the inverted residual
block in BiSeNet", BGA "as proposed in (Yu et al. 2021)"; Tab. 4's baseline is BiSeNetV2 with
24.6 GMACs / 3.34M params at 512x1024, which our BiSeNetV2-width config reproduces).

Public pieces for the search (issue 8): :class:`RTSegConfig` (JSON round trip), per-block
:class:`BlockSpec` widths and op, :class:`MixedBlock` with its paths in ``paths['lir']`` /
``paths['mhsa']``, :data:`SUPERNET`, :func:`derive_subnet`, :func:`build_rtseg`.

Structure (what the paper states, and the BiSeNetV2 detail it builds on)
=======================================================================
* Detail branch: plain 3x3 conv-BN-ReLU layers, three stages, each opened by a stride-2 conv
  (H/2, H/4, H/8). Layer count 2/3/3 is BiSeNetV2's.
* Segment branch: BiSeNetV2's stem block (conv s2, then a conv-branch and a max-pool branch,
  concatenated and fused) down to H/4; then three stages at H/8, H/16, H/32, each a downsample
  block (Fig. 2a) followed by mixed blocks (Fig. 2b); BiSeNetV2's context-embedding block
  (global average pool) closes the branch.
* LIR ("lightweight inverted residual"): BiSeNetV2's gather-and-expansion layer with the
  group-wise expansion conv replaced, as the paper says, by "consecutive 1x1 and depth-wise
  convolution": conv3x3 -> conv1x1 (expand) -> dw3x3 -> conv1x1 (project) + identity, ReLU.
  The 3x3 conv followed by the dw 3x3 keeps the 5x5 receptive field the paper mentions.
* Downsample block (Fig. 2a): the same LIR layer with a stride-2 depth-wise conv, a second
  depth-wise conv (as BiSeNetV2's stride-2 GE layer) and a dw-s2 + 1x1 shortcut.
* MHSA: the feature map is cut into P x P patches, tokens (B, N, P^2 C) (paper: "(B, N, P^2C)"),
  pre-LayerNorm global multi-head attention (Eq. 1-2, one linear layer for Q, K, V) and a
  post-attention MLP, both with residuals ("the standard configuration from ViT"), tokens folded
  back to (B, C, H, W).
* Mixed block: paths {LIR, MHSA} plus a skip path for the block search (Eq. 7). In the supernet
  both paths run and their outputs are *added* ("add them with the output of LIR"); a searched
  subnet keeps exactly one of {skip, LIR, MHSA} per block ("only one operator in the mixed
  block is preserved during inference"), so subnets are plain configurations of the same
  classes, with no masks or gates in the forward.
* Aggregation: Bilateral Guided Aggregation exactly as in BiSeNetV2 (two sigmoid-gated paths,
  detail at H/8 and at H/32), then the light decoder: conv3x3-BN-ReLU, conv1x1 to classes,
  bilinear upsampling to the input size.

Configuration choices we had to derive (and why)
================================================
Counts below: params of the eval forward, GMACs = Conv2d + Linear + attention matmuls at
512x1024, batch 1 (``seg_ros.models.counting``).

* Anchor: the paper builds on BiSeNetV2, so we first rebuilt BiSeNetV2's widths in this code
  (detail 64/64/128, stem 16, segment 32/64/128 with 1/1/3 blocks after each downsample,
  expansion 6, BGA 128, decoder 1024). With BiSeNetV2's own GE layers it counts 3.36M params /
  24.60 GMACs (Tab. 1: 3.34M / 24.6), with our LIR blocks 25.0 GMACs (Tab. 4 "LIR": 25.1)
  - so the layout, the LIR reading and the counting agree with the paper (``BISENET_LIR``).
* MHSA patch size P: 2 at H/8, 1 at H/16 and H/32. Global attention over every H/8 pixel costs
  2 N^2 C MACs and N^2 floats per head: at 1024x2048 input N = 32768, a 4 GB attention matrix
  per head. P = 2 gives the H/8 stage the same 2048 tokens (at 512x1024) as H/16, and the
  paper explicitly patchifies ("(B, N, P^2C)"). Head dim 32 (heads = token dim / 32), MLP ratio
  4 (ViT), one LayerNorm before attention and one before the MLP. Tab. 4's "LIR + MHSA" design
  (29.5 GMACs) counts 27.6 GMACs with these choices (30.5 with P = 1 everywhere).
* Supernet (Tab. 1: 24.43M, 136.0 GMACs; nothing else published): the BiSeNetV2 layout with
  every mixed block ``lir+mhsa``, the high-resolution widths (detail branch, BGA, decoder)
  x2.25 and the segment-branch widths (stem, stages) x2.5: detail 144/144/288, stem 40,
  segment 80/160/320 (token dims 320/160/320), BGA 288, decoder 2304. The two factors are the
  ones that land on both totals (25.69M, +5%; 136.7 GMACs, +0.5%); uniform x2 gives only
  17.3M / 105.8 GMACs. Depths stay BiSeNetV2's 1/1/3: the block search can remove blocks, and
  nothing in the paper says the supernet is deeper.
* Searched subnets (S/M/L): the searched per-layer widths and block choices are not published.
  We model them as what a latency-regularised search yields on this space: every layer keeps a
  fraction of its supernet width - one fraction ``keep_high`` for the high-resolution layers
  (where mobile latency is) and one ``keep_low`` for the segment branch (where the parameters
  are), widths rounded to multiples of 4 - and each mixed block keeps one op, fixed by hand:
  S: H/8 skip, H/16 LIR, H/32 LIR, MHSA, skip; M: LIR, MHSA, (LIR, MHSA, skip);
  L: MHSA, MHSA, (LIR, MHSA, MHSA). The two fractions per variant were solved (bisection on
  ``seg_ros.models.counting``) so that params and GMACs land on Tab. 1; ``derive_subnet`` turns
  them into an explicit plain config, printed in ``docs/models_rtseg.md``:
  S keeps (0.146, 0.62): 2.69M / 5.71 GMACs; M (0.177, 0.718): 3.51M / 9.21;
  L (0.32, 0.718): 5.50M / 21.05.
* Mixed-block output in the supernet: the sum of the LIR and MHSA outputs (paper: "add them
  with the output of LIR"); Eq. 7's path weights are the search's business (issue 8).
* Arbitrary input sizes: every stride-2 layer pads so sizes are ceil(H/2); BGA and the decoder
  resize to the detail feature / the input size (not fixed x4 / x8 factors), and MHSA zero-pads
  the feature map to a multiple of P and crops back.

Deviations
==========
* No positional embedding in MHSA (the paper mentions none; the convolutions before every MHSA
  path leak position, and it keeps any input size valid).
* Dropout 0.1 before the classifier (BiSeNetV2's head); identity in eval and in the export.
* Auxiliary heads (paper: "after each downsampling stage of the semantic branch") live in
  ``seg_ros.models.rtseg_train``, never in this eval model.
* The search itself (DWBC width masks, Gumbel-softmax block sampling, latency MLP) is issue 8.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import nn
import torch.nn.functional as F

from seg_ros.models.blocks import ConvBnAct, resize_to
from seg_ros.models.registry import register_model

__all__ = [
    'BlockSpec', 'StageSpec', 'RTSegConfig', 'RTSeg', 'Attention', 'MHSABlock', 'LIRBlock',
    'DownsampleBlock', 'MixedBlock', 'StemBlock', 'ContextEmbedding', 'BGA', 'DetailBranch',
    'SegmentBranch', 'LightDecoder', 'BLOCK_OPS', 'SUPERNET', 'BISENET_LIR', 'SUBNETS',
    'build_rtseg', 'derive_subnet', 'uniform_config',
]

#: Ops a mixed block may hold: ``skip`` (identity), one path, or both (the supernet).
BLOCK_OPS = ('skip', 'lir', 'mhsa', 'lir+mhsa')


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockSpec:
    """One mixed block of the segment branch (Fig. 2b).

    Attributes:
        op: one of :data:`BLOCK_OPS`.
        lir_mid: LIR output width of the 3x3 conv (searched by width search).
        lir_expand: LIR width of the 1x1 expansion / depth-wise conv.
        heads: MHSA heads.
        head_dim: MHSA width per head (Q, K and V).
        mlp_hidden: hidden width of the MHSA block's MLP.
    """

    op: str
    lir_mid: int = 0
    lir_expand: int = 0
    heads: int = 0
    head_dim: int = 0
    mlp_hidden: int = 0

    def __post_init__(self) -> None:
        if self.op not in BLOCK_OPS:
            raise ValueError(f'block op {self.op!r} not in {BLOCK_OPS}')
        if 'lir' in self.op and min(self.lir_mid, self.lir_expand) < 1:
            raise ValueError(f'LIR block needs lir_mid, lir_expand >= 1: {self}')
        if 'mhsa' in self.op and min(self.heads, self.head_dim, self.mlp_hidden) < 1:
            raise ValueError(f'MHSA block needs heads, head_dim, mlp_hidden >= 1: {self}')


@dataclass(frozen=True)
class StageSpec:
    """One segment-branch stage: a downsample block (Fig. 2a), then mixed blocks.

    Attributes:
        channels: output width of the stage (all its blocks: they are residual).
        down_mid: downsample block, 3x3 conv width.
        down_expand: downsample block, expansion / depth-wise width.
        patch: MHSA patch size P of this stage (tokens of P*P*channels features).
        blocks: the mixed blocks.
    """

    channels: int
    down_mid: int
    down_expand: int
    patch: int = 1
    blocks: tuple[BlockSpec, ...] = ()

    def __post_init__(self) -> None:
        # Accept dicts / lists (from JSON metadata or `create_model(..., stages=...)`).
        blocks = tuple(b if isinstance(b, BlockSpec) else BlockSpec(**b) for b in self.blocks)
        object.__setattr__(self, 'blocks', blocks)
        if min(self.channels, self.down_mid, self.down_expand, self.patch) < 1:
            raise ValueError(f'stage widths and patch must be >= 1: {self}')


@dataclass(frozen=True)
class RTSegConfig:
    """Everything that defines an RTSeg network (supernet or searched subnet).

    Attributes:
        num_classes: output classes.
        detail: output widths of the detail-branch convs, per stage; the first conv of each
            stage has stride 2.
        stem: segment-branch stem width (H/4).
        stem_mid: width of the stem's 1x1 conv.
        stages: the three segment stages (H/8, H/16, H/32).
        ce: use BiSeNetV2's context-embedding block at the end of the segment branch.
        bga: width of the bilateral guided aggregation.
        decoder: hidden width of the light decoder.
        dropout: dropout before the classifier (training only).
    """

    num_classes: int = 19
    detail: tuple[tuple[int, ...], ...] = ((64, 64), (64, 64, 64), (128, 128, 128))
    stem: int = 16
    stem_mid: int = 8
    stages: tuple[StageSpec, ...] = field(default_factory=tuple)
    ce: bool = True
    bga: int = 128
    decoder: int = 1024
    dropout: float = 0.1

    def __post_init__(self) -> None:
        detail = tuple(tuple(int(c) for c in s) for s in self.detail)
        stages = tuple(s if isinstance(s, StageSpec) else StageSpec(**s) for s in self.stages)
        object.__setattr__(self, 'detail', detail)
        object.__setattr__(self, 'stages', stages)
        if len(stages) != 3:
            raise ValueError(f'RTSeg needs 3 segment stages (H/8, H/16, H/32), got {len(stages)}')
        if len(detail) != 3 or any(len(s) < 1 for s in detail):
            raise ValueError('RTSeg needs 3 non-empty detail stages (H/2, H/4, H/8)')

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict that :meth:`from_dict` (and ``create_model``) accepts."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out['detail'] = [list(s) for s in self.detail]
        out['stages'] = [
            {**{f.name: getattr(s, f.name) for f in fields(s) if f.name != 'blocks'},
             'blocks': [{f.name: getattr(b, f.name) for f in fields(b)} for b in s.blocks]}
            for s in self.stages]
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RTSegConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------
class LIRBlock(nn.Module):
    """Lightweight inverted residual (Fig. 2b, LIR path), stride 1, ``c -> c``.

    conv3x3 -> conv1x1 expand -> dw3x3 -> conv1x1 project (BN, no ReLU) + x -> ReLU.
    """

    def __init__(self, channels: int, mid: int, expand: int) -> None:
        super().__init__()
        self.conv = ConvBnAct(channels, mid, 3)
        self.expand = ConvBnAct(mid, expand, 1)
        self.dw = ConvBnAct(expand, expand, 3, groups=expand)
        self.project = ConvBnAct(expand, channels, 1, act=None)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.project(self.dw(self.expand(self.conv(x)))))


class DownsampleBlock(nn.Module):
    """Segment-branch downsample block (Fig. 2a), stride 2, ``cin -> cout``.

    BiSeNetV2's stride-2 GE layer with the group-wise expansion replaced by 1x1 + depth-wise:
    conv3x3 -> conv1x1 expand -> dw3x3 s2 -> dw3x3 -> conv1x1 project, plus a dw3x3 s2 + 1x1
    shortcut; sum, ReLU.
    """

    def __init__(self, cin: int, cout: int, mid: int, expand: int) -> None:
        super().__init__()
        self.conv = ConvBnAct(cin, mid, 3)
        self.expand = ConvBnAct(mid, expand, 1)
        self.dw1 = ConvBnAct(expand, expand, 3, stride=2, groups=expand, act=None)
        self.dw2 = ConvBnAct(expand, expand, 3, groups=expand)
        self.project = ConvBnAct(expand, cout, 1, act=None)
        self.shortcut = nn.Sequential(
            ConvBnAct(cin, cin, 3, stride=2, groups=cin, act=None),
            ConvBnAct(cin, cout, 1, act=None),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw2(self.dw1(self.expand(self.conv(x)))))
        return self.act(y + self.shortcut(x))


class Attention(nn.Module):
    """Global multi-head self-attention over tokens (Eq. 1-2): ``(B, N, D) -> (B, N, D)``.

    Written with explicit matmuls and softmax (not ``scaled_dot_product_attention``) so that the
    ONNX graph is plain MatMul/Softmax on every exporter and runtime; :meth:`extra_macs` reports
    the two matmuls to ``seg_ros.models.counting``.
    """

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * heads * head_dim)
        self.proj = nn.Linear(heads * head_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, self.heads * self.head_dim)
        return self.proj(out)

    def extra_macs(self, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
        """MACs of Q K^T and attn V (the linear layers are counted by their own hooks)."""
        b, n = int(inputs[0].shape[0]), int(inputs[0].shape[1])
        return 2 * b * self.heads * n * n * self.head_dim


class MHSABlock(nn.Module):
    """MHSA path (Fig. 2b): patchify, pre-LN attention + MLP with residuals, fold back.

    ``(B, C, H, W) -> (B, C, H, W)``; tokens are P x P patches with P*P*C features. Sizes not
    divisible by P are zero-padded and cropped back.
    """

    def __init__(self, channels: int, patch: int, heads: int, head_dim: int,
                 mlp_hidden: int) -> None:
        super().__init__()
        self.patch = patch
        dim = channels * patch * patch
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_hidden), nn.GELU(), nn.Linear(mlp_hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.patch
        if p > 1:  # static (config), not data-dependent
            x = F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))
        hp, wp = x.shape[2] // p, x.shape[3] // p
        t = x.reshape(b, c, hp, p, wp, p).permute(0, 2, 4, 3, 5, 1).reshape(b, hp * wp, p * p * c)
        t = t + self.attn(self.norm1(t))
        t = t + self.mlp(self.norm2(t))
        y = t.reshape(b, hp, wp, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, hp * p, wp * p)
        if p > 1:
            y = y[:, :, :h, :w]
        return y


class MixedBlock(nn.Module):
    """Mixed block (Fig. 2b): the paths of :class:`BlockSpec` ``op``, summed.

    ``skip`` is the identity (the block-search skip path); ``lir`` / ``mhsa`` a single path
    (searched subnet); ``lir+mhsa`` both, added (supernet). Paths live in ``self.paths`` keyed
    ``'lir'`` / ``'mhsa'`` so that a search wrapper can weight them (Eq. 7) without changing
    parameter names.
    """

    def __init__(self, channels: int, patch: int, spec: BlockSpec) -> None:
        super().__init__()
        self.op = spec.op
        self.paths = nn.ModuleDict()
        if 'lir' in spec.op:
            self.paths['lir'] = LIRBlock(channels, spec.lir_mid, spec.lir_expand)
        if 'mhsa' in spec.op:
            self.paths['mhsa'] = MHSABlock(channels, patch, spec.heads, spec.head_dim,
                                           spec.mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.paths) == 0:
            return x
        outs = [path(x) for path in self.paths.values()]
        y = outs[0]
        for o in outs[1:]:
            y = y + o
        return y


class StemBlock(nn.Module):
    """BiSeNetV2's stem: ``3 -> c`` at H/4 (conv s2; conv branch || max-pool branch; fuse)."""

    def __init__(self, c: int, mid: int) -> None:
        super().__init__()
        self.conv = ConvBnAct(3, c, 3, stride=2)
        self.left = nn.Sequential(ConvBnAct(c, mid, 1), ConvBnAct(mid, c, 3, stride=2))
        self.right = nn.MaxPool2d(3, 2, 1)
        self.fuse = ConvBnAct(2 * c, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.left(x), self.right(x)], dim=1))


class ContextEmbedding(nn.Module):
    """BiSeNetV2's context-embedding block: global average pool, BN, 1x1, add, 3x3."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(c)
        self.gap_conv = ConvBnAct(c, c, 1)
        self.out = ConvBnAct(c, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gap_conv(self.bn(x.mean(dim=(2, 3), keepdim=True)))
        return self.out(x + g)


class DetailBranch(nn.Sequential):
    """Shallow 3x3 conv branch, three stride-2 stages: ``3 -> detail[-1][-1]`` at H/8."""

    def __init__(self, widths: Sequence[Sequence[int]]) -> None:
        layers: list[nn.Module] = []
        cin = 3
        for stage in widths:
            for i, c in enumerate(stage):
                layers.append(ConvBnAct(cin, c, 3, stride=2 if i == 0 else 1))
                cin = c
        super().__init__(*layers)


class SegmentBranch(nn.Module):
    """Stem, three stages (downsample + mixed blocks), context embedding.

    :meth:`forward` returns the branch output and the features after the stem and after every
    stage (before the context embedding): where the training module's auxiliary heads sit
    ("after each downsampling stage of the semantic branch").
    """

    def __init__(self, cfg: RTSegConfig) -> None:
        super().__init__()
        self.stem = StemBlock(cfg.stem, cfg.stem_mid)
        self.stages = nn.ModuleList()
        cin = cfg.stem
        for st in cfg.stages:
            blocks: list[nn.Module] = [DownsampleBlock(cin, st.channels, st.down_mid,
                                                       st.down_expand)]
            blocks += [MixedBlock(st.channels, st.patch, b) for b in st.blocks]
            self.stages.append(nn.Sequential(*blocks))
            cin = st.channels
        self.ce = ContextEmbedding(cin) if cfg.ce else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = [self.stem(x)]
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        return self.ce(feats[-1]), feats


class BGA(nn.Module):
    """Bilateral guided aggregation (BiSeNetV2): detail (H/8) x segment (H/32) -> ``c`` at H/8."""

    def __init__(self, c_detail: int, c_segment: int, c: int) -> None:
        super().__init__()
        self.detail_keep = nn.Sequential(
            ConvBnAct(c_detail, c_detail, 3, groups=c_detail, act=None),
            nn.Conv2d(c_detail, c, 1, bias=False))
        self.detail_down = nn.Sequential(
            ConvBnAct(c_detail, c, 3, stride=2, act=None), nn.AvgPool2d(3, 2, 1))
        self.segment_up = ConvBnAct(c_segment, c, 3, act=None)
        self.segment_keep = nn.Sequential(
            ConvBnAct(c_segment, c_segment, 3, groups=c_segment, act=None),
            nn.Conv2d(c_segment, c, 1, bias=False))
        self.fuse = ConvBnAct(c, c, 3)

    def forward(self, detail: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
        size = detail.shape[-2:]
        up = resize_to(self.segment_up(segment), size)
        left = self.detail_keep(detail) * torch.sigmoid(up)
        right = self.detail_down(detail) * torch.sigmoid(self.segment_keep(segment))
        right = resize_to(right, size)
        return self.fuse(left + right)


class LightDecoder(nn.Module):
    """Light decoder: conv3x3-BN-ReLU, (dropout), conv1x1 to classes; upsampling is in RTSeg."""

    def __init__(self, cin: int, hidden: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.conv = ConvBnAct(cin, hidden, 3)
        self.drop = nn.Dropout(dropout)
        self.cls = nn.Conv2d(hidden, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls(self.drop(self.conv(x)))


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
class RTSeg(nn.Module):
    """RTSeg dual-branch network: ``(N, 3, H, W) -> (N, num_classes, H, W)`` logits."""

    def __init__(self, cfg: RTSegConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.detail = DetailBranch(cfg.detail)
        self.segment = SegmentBranch(cfg)
        self.bga = BGA(cfg.detail[-1][-1], cfg.stages[-1].channels, cfg.bga)
        self.decoder = LightDecoder(cfg.bga, cfg.decoder, cfg.num_classes, cfg.dropout)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        # Residual branches start as identity (zero-init last BN), as in BiSeNetV2's GE layers.
        for m in self.modules():
            if isinstance(m, LIRBlock):
                nn.init.zeros_(m.project.bn.weight)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Returns the aggregated H/8 feature and the segment features (stem, 3 stages)."""
        seg, feats = self.segment(x)
        return self.bga(self.detail(x), seg), feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat, _ = self.forward_features(x)
        logits = self.decoder(feat)
        return resize_to(logits, x.shape[-2:])


# --------------------------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------------------------
def _mixed(op: str, *, mid: int = 0, expand: int = 0, heads: int = 0,
           head_dim: int = 32, mlp: int = 0) -> BlockSpec:
    """A BlockSpec with each unused path's widths zeroed (so configs compare equal)."""
    lir = 'lir' in op
    mhsa = 'mhsa' in op
    return BlockSpec(op, lir_mid=mid if lir else 0, lir_expand=expand if lir else 0,
                     heads=heads if mhsa else 0, head_dim=head_dim if mhsa else 0,
                     mlp_hidden=mlp if mhsa else 0)


def _round_to(x: float, q: int) -> int:
    return max(q, int(round(x / q)) * q)


def uniform_config(detail: Sequence[Sequence[int]], stem: int, channels: Sequence[int],
                   depths: Sequence[int], ops: str, bga: int, decoder: int,
                   patches: Sequence[int] = (2, 1, 1), expand_ratio: int = 6,
                   head_dim: int = 32, mlp_ratio: int = 4) -> RTSegConfig:
    """A config with every block of a stage alike (base design, supernet; the search builds
    its CPU-sized supernets with it)."""
    stages = []
    cin = stem
    for c, d, p in zip(channels, depths, patches):
        dim = c * p * p
        blocks = tuple(_mixed(ops, mid=c, expand=expand_ratio * c,
                              heads=max(1, dim // head_dim), head_dim=head_dim,
                              mlp=mlp_ratio * dim) for _ in range(d))
        stages.append(StageSpec(c, cin, expand_ratio * cin, p, blocks))
        cin = c
    return RTSegConfig(detail=tuple(tuple(s) for s in detail), stem=stem, stem_mid=stem // 2,
                       stages=tuple(stages), bga=bga, decoder=decoder)


def build_rtseg(cfg: RTSegConfig, **overrides: Any) -> RTSeg:
    """Builds :class:`RTSeg` from ``cfg`` with ``overrides`` (config fields) applied."""
    unknown = set(overrides) - {f.name for f in fields(RTSegConfig)}
    if unknown:
        raise ValueError(f'unknown RTSeg config fields {sorted(unknown)}; '
                         f'valid: {[f.name for f in fields(RTSegConfig)]}')
    return RTSeg(replace(cfg, **overrides))



def derive_subnet(supernet: RTSegConfig, keep_high: float, keep_low: float,
                  ops: Sequence[Sequence[str]], quantum: int = 4) -> RTSegConfig:
    """A subnet of ``supernet``: every width scaled, one op per mixed block.

    Args:
        supernet: the supernet configuration (every block ``lir+mhsa``).
        keep_high: kept fraction of the high-resolution widths (detail branch, BGA, decoder).
        keep_low: kept fraction of the segment-branch widths (stem, stages, LIR / MLP widths,
            attention heads).
        ops: per stage, per supernet block, one of ``skip``, ``lir``, ``mhsa``.
        quantum: widths are rounded to multiples of this (hardware-friendly, and what a
            channel search with grouped masks would produce).

    Returns:
        A plain configuration: the same classes, narrower, no ``lir+mhsa`` blocks.
    """
    def hi(c: int) -> int:
        return _round_to(c * keep_high, quantum)

    def lo(c: int) -> int:
        return _round_to(c * keep_low, quantum)

    if len(ops) != len(supernet.stages):
        raise ValueError(f'ops needs one entry per stage ({len(supernet.stages)})')
    stages = []
    for st, st_ops in zip(supernet.stages, ops):
        if len(st_ops) != len(st.blocks):
            raise ValueError(f'stage has {len(st.blocks)} blocks, ops give {len(st_ops)}')
        c = lo(st.channels)
        blocks = []
        for b, op in zip(st.blocks, st_ops):
            if op not in ('skip', 'lir', 'mhsa'):
                raise ValueError(f'a subnet block is skip, lir or mhsa, not {op!r}')
            blocks.append(_mixed(op, mid=lo(b.lir_mid), expand=lo(b.lir_expand),
                                 heads=max(1, round(b.heads * keep_low)), head_dim=b.head_dim,
                                 mlp=lo(b.mlp_hidden)))
        stages.append(StageSpec(c, lo(st.down_mid), lo(st.down_expand), st.patch,
                                tuple(blocks)))
    stem = lo(supernet.stem)
    return replace(supernet, detail=tuple(tuple(hi(c) for c in s) for s in supernet.detail),
                   stem=stem, stem_mid=max(1, stem // 2), stages=tuple(stages),
                   bga=hi(supernet.bga), decoder=hi(supernet.decoder))


#: BiSeNetV2's widths and depths with LIR blocks (Tab. 4, "LIR" column: 25.1 GMACs; ours 25.0).
BISENET_LIR = uniform_config(((64, 64), (64, 64, 64), (128, 128, 128)), 16, (32, 64, 128),
                             (1, 1, 3), 'lir', 128, 1024)

#: The supernet: BiSeNetV2 layout, every mixed block LIR + MHSA, high-resolution widths x2.25,
#: segment-branch widths x2.5 (the two factors that land on Tab. 1's 24.43M / 136.0 GMACs).
SUPERNET = uniform_config(((144, 144), (144, 144, 144), (288, 288, 288)), 40, (80, 160, 320),
                          (1, 1, 3), 'lir+mhsa', 288, 2304)

#: Searched-subnet models: (keep_high, keep_low, ops per stage); see the module docstring.
SUBNETS: dict[str, tuple[float, float, tuple[tuple[str, ...], ...]]] = {
    'rtseg_s': (0.146, 0.62, (('skip',), ('lir',), ('lir', 'mhsa', 'skip'))),
    'rtseg_m': (0.177, 0.718, (('lir',), ('mhsa',), ('lir', 'mhsa', 'skip'))),
    'rtseg_l': (0.32, 0.718, (('mhsa',), ('mhsa',), ('lir', 'mhsa', 'mhsa'))),
}


def _subnet(name: str) -> RTSegConfig:
    keep_high, keep_low, ops = SUBNETS[name]
    return derive_subnet(SUPERNET, keep_high, keep_low, ops)


@register_model
def rtseg_supernet(num_classes: int = 19, **overrides: Any) -> RTSeg:
    """RTSeg supernet (Tab. 1: 24.43M params, 136.0 GMACs @512x1024)."""
    return build_rtseg(SUPERNET, num_classes=num_classes, **overrides)


@register_model
def rtseg_s(num_classes: int = 19, **overrides: Any) -> RTSeg:
    """RTSeg-S (Tab. 1: 2.69M params, 5.7 GMACs @512x1024, 73.1 val mIoU)."""
    return build_rtseg(_subnet('rtseg_s'), num_classes=num_classes, **overrides)


@register_model
def rtseg_m(num_classes: int = 19, **overrides: Any) -> RTSeg:
    """RTSeg-M (Tab. 1: 3.56M params, 9.2 GMACs @512x1024, 74.4 val mIoU)."""
    return build_rtseg(_subnet('rtseg_m'), num_classes=num_classes, **overrides)


@register_model
def rtseg_l(num_classes: int = 19, **overrides: Any) -> RTSeg:
    """RTSeg-L (Tab. 1: 5.55M params, 20.8 GMACs @512x1024, 75.3 val mIoU)."""
    return build_rtseg(_subnet('rtseg_l'), num_classes=num_classes, **overrides)
