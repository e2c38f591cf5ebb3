"""RTSeg's latency-aware architecture search (rtseg.txt "Method": width search by parameterised
pruning, differentiable block search, latency-aware constraints, performance boosters).

* **Width search (DWBC, Eq. 3-6).** Every searchable conv layer gets a depth-wise binary conv:
  a trainable vector ``c`` (the depth-wise 1x1 weights), binarised as ``b = [c > 0.5]`` and
  multiplied onto the layer's output channels; the straight-through estimator passes
  ``dL/db`` to ``c`` unchanged (Eq. 6). The mask multiplies the conv-BN-act *output* (and, for
  an expansion conv, the depth-wise convs that follow it share the mask), so a zero channel
  contributes nothing downstream and removing it is exact. Searchable widths (a *mask group*):
  the detail-branch convs (all but the last, which feeds BGA), the 3x3 and expansion widths of
  every downsample and LIR block, the MHSA MLP hidden width and the decoder's hidden width.
  Widths tied by residual sums (stage widths, BGA) are not searched.
* **Block search (Eq. 7).** Each supernet mixed block ``lir+mhsa`` chooses one of
  ``{skip, LIR, MHSA}`` with hard Gumbel-softmax (straight-through) over trainable logits;
  ``g = h_s x + h_l LIR(x) + h_m MHSA(x)``.
* **Latency regulariser (Eq. 9).** ``scale * sum_b S(block) + overhead`` with ``S`` the
  5-layer MLP of :mod:`seg_ros.search.latency`, fed the *mask counts* as widths (STE
  gradients reach ``c``) and weighted by the Gumbel one-hots (gradients reach the block
  logits); the loss is
  ``beta * ((L - T) / T)^2`` (Eq. 9 divided by ``T^2`` so ``beta`` does not depend on the
  unit of time).
* **Performance boosters (Eq. 10-12).** Auxiliary heads after the stem and each segment stage
  (:class:`seg_ros.models.rtseg_train.RTSegTrain`) with weight ``gamma``, and KL
  self-distillation (``seg_ros.train.losses.kl_distillation``) of the main and auxiliary
  outputs towards the supernet's output (all paths, no masks, same weights, no gradient),
  weight ``lambda``.
* **Extraction.** :func:`extract_subnet` builds a plain :class:`seg_ros.models.rtseg.RTSeg`
  with the kept channels sliced out of the supernet weights and the chosen op per block:
  no masks, no gates, the same classes as ``rtseg_s/m/l``; it is saved as a seg_ros
  checkpoint of ``rtseg_supernet`` with the subnet's config in ``ModelMeta.arch``, so
  ``create_model`` / export / bench / node / train use it like any other model.
"""
from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from seg_ros.errors import SegRosError

__all__ = ['DWBC', 'GumbelMixedBlock', 'MaskGroup', 'mask_groups', 'subnet_config',
           'random_subnet_config', 'SearchSupernet', 'extract_subnet', 'search_config',
           'search_rtseg', 'SEARCH_OPS']

#: Block-search choices, in the order of the Gumbel logits.
SEARCH_OPS = ('skip', 'lir', 'mhsa')


class DWBC(nn.Module):
    """Depth-wise binary conv (RTSeg Eq. 3-6): a trainable per-channel gate ``c``, binarised
    at ``threshold``, straight-through gradient.

    Args:
        channels: channels of the gated layer.
        init: initial ``c`` (> threshold keeps every channel).
        threshold: ``T_h`` (0.5 in the paper).
    """

    def __init__(self, channels: int, init: float = 1.0, threshold: float = 0.5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(init)))
        self.threshold = float(threshold)
        self.enabled = True

    def hard(self) -> torch.Tensor:
        """``b`` in {0, 1}; at least one channel stays (a layer cannot vanish, paper: depth is
        the block search's business)."""
        c = self.weight.detach()
        b = (c > self.threshold).to(c.dtype)
        if not bool(b.any()):
            b[int(c.argmax())] = 1.0
        return b

    def binary(self) -> torch.Tensor:
        """``b`` with the straight-through estimator: value ``hard()``, ``db/dc = 1``."""
        return self.hard() + (self.weight - self.weight.detach())

    def count(self) -> torch.Tensor:
        """Kept channels, differentiable (STE) — the width the latency model sees."""
        return self.binary().sum()

    def kept(self) -> torch.Tensor:
        """Indices of the kept channels."""
        return torch.nonzero(self.hard(), as_tuple=False).flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        b = self.binary()
        # conv features (N, C, H, W) or MLP tokens (N, T, C)
        return x * (b.view(1, -1, 1, 1) if x.dim() == 4 else b.view(*([1] * (x.dim() - 1)), -1))


class GumbelMixedBlock(nn.Module):
    """A supernet mixed block with Gumbel-softmax path selection (RTSeg Eq. 7).

    Takes over ``block.paths`` (parameter names unchanged). Modes: ``sample`` (hard
    Gumbel-softmax, straight-through), ``argmax`` (the current choice, deterministic; only the
    chosen path runs), ``supernet`` (both paths summed: the supernet's own forward, the
    distillation teacher).
    """

    def __init__(self, block: nn.Module, tau: float = 1.0) -> None:
        super().__init__()
        if set(block.paths.keys()) != {'lir', 'mhsa'}:
            raise SegRosError('block search needs supernet blocks with both LIR and MHSA')
        self.paths = block.paths
        self.alpha = nn.Parameter(torch.zeros(len(SEARCH_OPS)))
        self.tau = float(tau)
        self.mode = 'sample'
        self.last_h: torch.Tensor | None = None

    def choice(self) -> str:
        """The op with the largest logit."""
        return SEARCH_OPS[int(self.alpha.detach().argmax())]

    def weights(self) -> torch.Tensor:
        """One-hot path weights of the current mode (with gradients in ``sample`` mode)."""
        if self.mode == 'sample':
            return F.gumbel_softmax(self.alpha, tau=self.tau, hard=True)
        return F.one_hot(self.alpha.detach().argmax(), len(SEARCH_OPS)).to(self.alpha.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == 'supernet':
            return self.paths['lir'](x) + self.paths['mhsa'](x)
        h = self.weights()
        self.last_h = h
        if self.mode == 'argmax':
            op = self.choice()
            return x if op == 'skip' else self.paths[op](x)
        return h[0] * x + h[1] * self.paths['lir'](x) + h[2] * self.paths['mhsa'](x)


@dataclass
class MaskGroup:
    """Channels of one searchable width, and every tensor that width touches.

    Attributes:
        name: ``<module path>:<role>``.
        size: supernet width.
        producers: modules (``ConvBnAct`` or ``Linear``) whose output channels it indexes.
        masked: modules whose outputs the DWBC multiplies.
        depthwise: depth-wise ``ConvBnAct`` whose channels it indexes.
        consumers: ``Conv2d`` / ``Linear`` whose input channels it indexes.
    """

    name: str
    size: int
    producers: list[str]
    masked: list[str]
    depthwise: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)


def _lir_groups(p: str, mid: int, expand: int, dws: list[str]) -> list[MaskGroup]:
    return [MaskGroup(f'{p}:mid', mid, [f'{p}.conv'], [f'{p}.conv'], [], [f'{p}.expand.conv']),
            MaskGroup(f'{p}:expand', expand, [f'{p}.expand'],
                      [f'{p}.expand'] + [f'{p}.{d}' for d in dws],
                      [f'{p}.{d}' for d in dws], [f'{p}.project.conv'])]


def mask_groups(cfg: Any) -> list[MaskGroup]:
    """The searchable widths of an RTSeg supernet config (see the module docstring)."""
    groups: list[MaskGroup] = []
    flat = [c for stage in cfg.detail for c in stage]
    for i, c in enumerate(flat[:-1]):
        groups.append(MaskGroup(f'detail.{i}:out', c, [f'detail.{i}'], [f'detail.{i}'], [],
                                [f'detail.{i + 1}.conv']))
    for s, st in enumerate(cfg.stages):
        groups += _lir_groups(f'segment.stages.{s}.0', st.down_mid, st.down_expand,
                              ['dw1', 'dw2'])
        for j, b in enumerate(st.blocks, start=1):
            p = f'segment.stages.{s}.{j}'
            if 'lir' in b.op:
                groups += _lir_groups(f'{p}.paths.lir', b.lir_mid, b.lir_expand, ['dw'])
            if 'mhsa' in b.op:
                m = f'{p}.paths.mhsa.mlp'
                groups.append(MaskGroup(f'{p}.paths.mhsa:mlp', b.mlp_hidden, [f'{m}.0'],
                                        [f'{m}.1'], [], [f'{m}.2']))
    groups.append(MaskGroup('decoder:hidden', cfg.decoder, ['decoder.conv'], ['decoder.conv'],
                            [], ['decoder.cls']))
    return groups


def subnet_config(cfg: Any, counts: dict[str, int], ops: list[list[str]]) -> Any:
    """A plain subnet config of supernet ``cfg``: widths from ``counts`` (mask group name ->
    kept channels; missing groups keep the supernet width), one op per mixed block."""
    from seg_ros.models.rtseg import BlockSpec, StageSpec

    def n(name: str, default: int) -> int:
        return int(counts.get(name, default))

    flat = [c for stage in cfg.detail for c in stage]
    flat = [n(f'detail.{i}:out', c) for i, c in enumerate(flat[:-1])] + [flat[-1]]
    detail, k = [], 0
    for stage in cfg.detail:
        detail.append(tuple(flat[k:k + len(stage)]))
        k += len(stage)
    if len(ops) != len(cfg.stages):
        raise SegRosError(f'ops need one list per stage ({len(cfg.stages)})')
    stages = []
    for s, (st, st_ops) in enumerate(zip(cfg.stages, ops)):
        if len(st_ops) != len(st.blocks):
            raise SegRosError(f'stage {s}: {len(st.blocks)} blocks, {len(st_ops)} ops')
        blocks = []
        for j, (b, op) in enumerate(zip(st.blocks, st_ops), start=1):
            if op not in SEARCH_OPS:
                raise SegRosError(f'a subnet block is one of {SEARCH_OPS}, not {op!r}')
            p = f'segment.stages.{s}.{j}'
            blocks.append(BlockSpec(
                op,
                lir_mid=n(f'{p}.paths.lir:mid', b.lir_mid) if op == 'lir' else 0,
                lir_expand=n(f'{p}.paths.lir:expand', b.lir_expand) if op == 'lir' else 0,
                heads=b.heads if op == 'mhsa' else 0,
                head_dim=b.head_dim if op == 'mhsa' else 0,
                mlp_hidden=n(f'{p}.paths.mhsa:mlp', b.mlp_hidden) if op == 'mhsa' else 0))
        p0 = f'segment.stages.{s}.0'
        stages.append(StageSpec(st.channels, n(f'{p0}:mid', st.down_mid),
                                n(f'{p0}:expand', st.down_expand), st.patch, tuple(blocks)))
    return replace(cfg, detail=tuple(detail), stages=tuple(stages),
                   decoder=n('decoder:hidden', cfg.decoder))


def random_subnet_config(cfg: Any, rng: np.random.Generator, min_frac: float = 0.1) -> Any:
    """A random subnet of supernet ``cfg`` (random widths and ops): latency calibration.

    Widths share one random level per subnet (each group jittered +-25% around it), so the
    calibration subnets span small to large ones: with independent widths every subnet is
    near the average and the least-squares line through them extrapolates badly (seen: a
    searched subnet 50% off).
    """
    level = rng.uniform(min_frac, 1.0)
    counts = {g.name: max(1, int(round(g.size * float(np.clip(
        level * rng.uniform(0.75, 1.25), min_frac, 1.0))))) for g in mask_groups(cfg)}
    ops = [[SEARCH_OPS[int(rng.integers(3))] for _ in st.blocks] for st in cfg.stages]
    return subnet_config(cfg, counts, ops)


def _key(name: str) -> str:
    return name.replace('.', '_').replace(':', '__')


class SearchSupernet(nn.Module):
    """The RTSeg supernet with DWBC masks and Gumbel blocks, plus the latency estimate.

    Args:
        cfg: supernet config (every mixed block ``lir+mhsa``).
        num_classes: output classes.
        mask_init: initial DWBC value ``c``.
        aux_hidden: width of the auxiliary heads (0: no auxiliary heads).

    Attributes:
        model: the :class:`~seg_ros.models.rtseg.RTSeg` (its mixed blocks replaced by
            :class:`GumbelMixedBlock`; parameter names unchanged apart from ``alpha``).
        train_model: ``RTSegTrain`` around ``model`` (auxiliary heads), or None.
        masks: DWBC per mask group.
    """

    def __init__(self, cfg: Any, num_classes: int = 19, mask_init: float = 1.0,
                 aux_hidden: int = 64) -> None:
        super().__init__()
        from seg_ros.models.rtseg import MixedBlock, RTSeg
        from seg_ros.models.rtseg_train import RTSegTrain

        self.cfg = replace(cfg, num_classes=num_classes)
        for st in self.cfg.stages:
            for b in st.blocks:
                if b.op != 'lir+mhsa':
                    raise SegRosError(f'the search supernet needs lir+mhsa blocks, got {b.op}')
        self.model = RTSeg(self.cfg)
        for stage in self.model.segment.stages:
            for j, blk in enumerate(stage):
                if isinstance(blk, MixedBlock):
                    stage[j] = GumbelMixedBlock(blk)
        self.train_model = RTSegTrain(self.model, aux_hidden) if aux_hidden > 0 else None
        self.groups = mask_groups(self.cfg)
        self.masks = nn.ModuleDict({_key(g.name): DWBC(g.size, mask_init) for g in self.groups})
        modules = dict(self.model.named_modules())
        for g in self.groups:
            dwbc = self.masks[_key(g.name)]
            for path in g.masked:
                modules[path].register_forward_hook(
                    lambda mod, inp, out, d=dwbc: d(out))
        self._units: list[Any] | None = None
        self._size: tuple[int, int] | None = None

    # ---------------------------------------------------------------- modes and parameters
    def gumbel_blocks(self) -> Iterator[tuple[str, GumbelMixedBlock]]:
        """(path, block) of every searched block."""
        for name, m in self.model.named_modules():
            if isinstance(m, GumbelMixedBlock):
                yield name, m

    def set_mode(self, mode: str, tau: float | None = None) -> None:
        """``sample`` (search), ``argmax`` (current subnet) or ``supernet`` (teacher: all
        paths, masks off)."""
        if mode not in ('sample', 'argmax', 'supernet'):
            raise ValueError(f'bad mode {mode!r}')
        for _, b in self.gumbel_blocks():
            b.mode = mode
            b.last_h = None  # a graph tensor: would also block deepcopy (counting)
            if tau is not None:
                b.tau = float(tau)
        for d in self.masks.values():
            assert isinstance(d, DWBC)
            d.enabled = mode != 'supernet'

    def arch_parameters(self) -> list[nn.Parameter]:
        """DWBC gates and block logits."""
        return [d.weight for d in self.masks.values()] + [b.alpha for _, b in
                                                           self.gumbel_blocks()]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Network weights (and auxiliary heads)."""
        ids = {id(p) for p in self.arch_parameters()}
        src = self.train_model if self.train_model is not None else self.model
        return [p for p in src.parameters() if id(p) not in ids]

    def forward(self, x: torch.Tensor) -> Any:
        """Main logits, or ``(logits, aux list)`` with auxiliary heads in training mode."""
        if self.train_model is not None and self.training:
            return self.train_model(x)
        return self.model(x)

    # ---------------------------------------------------------------- architecture state
    def counts(self) -> dict[str, int]:
        """Kept channels per mask group."""
        return {g.name: int(self.masks[_key(g.name)].hard().sum()) for g in self.groups}

    def ops(self) -> list[list[str]]:
        """Current op per block (argmax of the logits)."""
        out: list[list[str]] = [[] for _ in self.cfg.stages]
        for name, b in self.gumbel_blocks():
            out[int(name.split('.')[2])].append(b.choice())
        return out

    def subnet_cfg(self) -> Any:
        """Plain config of the current subnet."""
        return subnet_config(self.cfg, self.counts(), self.ops())

    # ---------------------------------------------------------------- latency (Eq. 9)
    def latency(self, lat: Any, size: tuple[int, int]) -> torch.Tensor:
        """Predicted latency (ms) of the current subnet: sum over units of the latency MLP at
        the mask counts, gated by the last Gumbel one-hots (differentiable in both)."""
        from seg_ros.search.latency import model_units

        if self._units is None or self._size != tuple(size):
            state = {n: (b.mode, b.last_h) for n, b in self.gumbel_blocks()}
            self.set_mode('supernet')
            try:
                self._units = model_units(self.model, size)
            finally:
                for n, b in self.gumbel_blocks():
                    b.mode, b.last_h = state[n]  # keep this step's Gumbel sample
                for d in self.masks.values():
                    assert isinstance(d, DWBC)
                    d.enabled = True
            self._size = tuple(size)
        produced: dict[str, DWBC] = {}
        consumed: dict[str, DWBC] = {}
        for g in self.groups:
            d = self.masks[_key(g.name)]
            assert isinstance(d, DWBC)
            for p in g.producers + g.depthwise:
                produced[p] = d
            for p in g.consumers + g.depthwise:
                consumed[p] = d
        blocks = dict(self.gumbel_blocks())
        total = torch.zeros(())
        for u in self._units:
            if u.kind == 'mhsa':
                mlp = produced.get(f'{u.path}.mlp.0')
                ms = lat.unit_ms(u, cout=mlp.count() if mlp else None)
            else:
                # ConvBnAct units are consumers through their inner `.conv`; plain convs
                # (classifier) and depth-wise layers under their own path
                cin = consumed.get(f'{u.path}.conv')
                if cin is None:
                    cin = consumed.get(u.path)
                cout = produced.get(u.path)
                ms = lat.unit_ms(u, cin=cin.count() if cin is not None else None,
                                 cout=cout.count() if cout is not None else None)
            for op in ('lir', 'mhsa'):
                tag = f'.paths.{op}'
                if tag in u.path:
                    blk = blocks[u.path.split(tag)[0]]
                    h = blk.last_h if blk.mode == 'sample' and blk.last_h is not None \
                        else blk.weights()
                    ms = ms * h[SEARCH_OPS.index(op)]
            total = total + ms
        return lat.total(total)


def extract_subnet(search: SearchSupernet) -> nn.Module:
    """The current subnet as a plain :class:`~seg_ros.models.rtseg.RTSeg`: kept channels
    sliced out of the supernet weights, one op per block, no masks, no gates."""
    from seg_ros.models.rtseg import RTSeg

    sub_cfg = search.subnet_cfg()
    dst = RTSeg(sub_cfg)
    src = search.model.state_dict()
    rows: dict[str, list[torch.Tensor | None]] = {}  # key -> [dim0 index, dim1 index]

    def put(key: str, dim: int, idx: torch.Tensor) -> None:
        rows.setdefault(key, [None, None])[dim] = idx

    modules = dict(search.model.named_modules())
    for g in search.groups:
        d = search.masks[_key(g.name)]
        assert isinstance(d, DWBC)
        idx = d.kept()
        for p in g.producers + g.depthwise:
            m = modules[p]
            if isinstance(m, nn.Linear):
                put(f'{p}.weight', 0, idx)
                put(f'{p}.bias', 0, idx)
            else:
                put(f'{p}.conv.weight', 0, idx)
                for t in ('weight', 'bias', 'running_mean', 'running_var'):
                    put(f'{p}.bn.{t}', 0, idx)
        for p in g.consumers:
            put(f'{p}.weight', 1, idx)
    out = {}
    for key, ref in dst.state_dict().items():
        t = src[key]
        r0, r1 = rows.get(key, [None, None])
        if r0 is not None:
            t = t.index_select(0, r0)
        if r1 is not None and t.dim() > 1 and t.shape[1] != 1:  # depth-wise: dim 1 is 1
            t = t.index_select(1, r1)
        if t.shape != ref.shape:
            raise SegRosError(f'subnet extraction: {key} {tuple(t.shape)} != '
                              f'{tuple(ref.shape)}')
        out[key] = t.clone()
    dst.load_state_dict(out)
    return dst.eval()


# --------------------------------------------------------------------------------------------
# Config and search loop
# --------------------------------------------------------------------------------------------
DEFAULT_RTSEG_SEARCH: dict[str, Any] = {
    # The supernet's layout (BiSeNetV2 / rtseg_supernet: 2/3/3 detail convs, stem, three
    # stages with 1/1/3 mixed blocks) at CPU-friendly widths; 'paper' selects the full
    # rtseg_supernet (24M params: needs a GPU).
    'supernet': {'detail': [[32, 32], [32, 32, 32], [64, 64, 64]], 'stem': 16,
                 'channels': [32, 64, 128], 'depths': [1, 1, 3], 'bga': 64, 'decoder': 256,
                 'patches': [2, 1, 1], 'expand_ratio': 6, 'head_dim': 16, 'mlp_ratio': 4},
    'input_size': [128, 256],
    'num_classes': 19,
    'target_ms': None,
    'latency_model': None,     # .pt from `seg-ros latency-profile --fit`
    'latency_table': None,     # or a table JSON (fitted at start)
    # profiled (then fitted) when neither a model nor a table is given; bench_repeats: runs
    # of the final benchmark of the extracted subnet
    'latency': {'backend': 'torch', 'samples': 2000, 'models': 12, 'repeats': 7, 'rounds': 5,
                'fit_steps': 3000, 'bench_repeats': 21},
    'data': {'kind': 'synthetic', 'seed': 0},
    'train': {'threads': 1, 'steps': 150, 'batch_size': 2, 'lr': 0.01, 'arch_lr': 0.02,
              'weight_decay': 1.0e-4, 'tau': [5.0, 0.5], 'mask_init': 0.7, 'beta': 5.0,
              'gamma': 0.4, 'lambda': 1.0, 'arch_warmup': 10, 'aux_hidden': 32, 'seed': 0,
              'log_every': 10},
}


def search_config(path: str | None) -> dict[str, Any]:
    """Load (or default) an rtseg search config; adds ``supernet_cfg`` (an RTSegConfig)."""
    from seg_ros.models.rtseg import SUPERNET, uniform_config
    from seg_ros.search.commands import load_config
    from seg_ros.search.dnas import merge_config

    user = load_config(path) if path else {}
    unknown = set(user) - set(DEFAULT_RTSEG_SEARCH) - {'search', 'out'}
    if unknown:
        raise SegRosError(f'unknown rtseg-search config keys {sorted(unknown)}; valid: '
                          f'{sorted(DEFAULT_RTSEG_SEARCH)}')
    if user.get('supernet') == 'paper':
        cfg = merge_config(DEFAULT_RTSEG_SEARCH, {k: v for k, v in user.items()
                                                  if k != 'supernet'})
        cfg['supernet_cfg'] = SUPERNET
        return cfg
    cfg = merge_config(DEFAULT_RTSEG_SEARCH, user)
    s = cfg['supernet']
    try:
        cfg['supernet_cfg'] = uniform_config(
            s['detail'], int(s['stem']), s['channels'], s['depths'], 'lir+mhsa', int(s['bga']),
            int(s['decoder']), s['patches'], int(s['expand_ratio']), int(s['head_dim']),
            int(s['mlp_ratio']))
    except (KeyError, TypeError, ValueError) as exc:
        raise SegRosError(f'bad supernet config: {exc}') from None
    return cfg


def _data(cfg: dict[str, Any], size: tuple[int, int]) -> Any:
    kind = cfg['data'].get('kind', 'synthetic')
    if kind != 'synthetic':
        raise SegRosError(f'rtseg search data kind {kind!r}: only `synthetic` is supported')
    from seg_ros.data.synthetic import SyntheticDrive

    return SyntheticDrive(size=size, seed=int(cfg['data'].get('seed', 0)))


def _batch(drive: Any, idx: range) -> tuple[torch.Tensor, torch.Tensor]:
    from seg_ros.metadata import IMAGENET_MEAN, IMAGENET_STD

    rgb, lab = zip(*(drive.frame(int(i)) for i in idx))
    x = torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET_STD).view(1, 3, 1, 1)
    return x, torch.from_numpy(np.stack(lab)).long()


def _teacher(search: SearchSupernet, x: torch.Tensor) -> torch.Tensor:
    """Supernet output (all paths, no masks, shared weights), no gradient, BN stats frozen."""
    bns = [m for m in search.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    moms = [m.momentum for m in bns]
    modes = {n: b.mode for n, b in search.gumbel_blocks()}
    search.set_mode('supernet')
    try:
        for m in bns:
            m.momentum = 0.0  # running = 1 * running + 0 * batch
        with torch.no_grad():
            return search.model(x)
    finally:
        for m, mom in zip(bns, moms):
            m.momentum = mom
        search.set_mode(next(iter(modes.values()), 'sample'))


def search_rtseg(cfg: dict[str, Any], lat: Any, progress: bool = True) -> tuple[
        SearchSupernet, list[dict[str, Any]]]:
    """The search of RTSeg Eq. 12: ``L + beta L_reg + gamma L_aux + lambda L_d``.

    Args:
        cfg: a config from :func:`search_config` with ``target_ms`` set.
        lat: the :class:`seg_ros.search.latency.LatencyModel` of the target device.
        progress: tqdm bar.

    Returns:
        The searched supernet and the log history.
    """
    from seg_ros.metadata import IGNORE_INDEX
    from seg_ros.progress import progress_bar
    from seg_ros.train.losses import kl_distillation

    tr = cfg['train']
    target = cfg.get('target_ms')
    if target is None or float(target) <= 0:
        raise SegRosError('rtseg search needs a positive target latency (--target-ms)')
    target = float(target)
    if int(tr.get('threads', 0)) > 0:
        torch.set_num_threads(int(tr['threads']))
    torch.manual_seed(int(tr['seed']))
    size = (int(cfg['input_size'][0]), int(cfg['input_size'][1]))
    search = SearchSupernet(cfg['supernet_cfg'], int(cfg['num_classes']),
                            float(tr['mask_init']), int(tr['aux_hidden']))
    drive = _data(cfg, size)
    opt_w = torch.optim.AdamW(search.weight_parameters(), lr=float(tr['lr']),
                              weight_decay=float(tr['weight_decay']))
    opt_a = torch.optim.Adam(search.arch_parameters(), lr=float(tr['arch_lr']))
    steps, bs = int(tr['steps']), int(tr['batch_size'])
    tau0, tau1 = (float(v) for v in tr['tau'])
    beta, gamma, lam = float(tr['beta']), float(tr['gamma']), float(tr['lambda'])
    history: list[dict[str, Any]] = []
    search.train()
    bar = progress_bar(range(steps), desc='rtseg search', enabled=progress)
    for step in bar:
        tau = tau0 * (tau1 / tau0) ** (step / max(steps - 1, 1))  # exponential annealing
        search.set_mode('sample', tau)
        x, y = _batch(drive, range(step * bs, (step + 1) * bs))
        teacher = _teacher(search, x) if lam > 0 else None
        logits, aux = search(x)
        task = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX)
        aux_loss = sum((F.cross_entropy(a, y, ignore_index=IGNORE_INDEX) for a in aux),
                       torch.zeros(()))
        dist = torch.zeros(())
        if teacher is not None:
            dist = kl_distillation(logits, teacher, target=y) + sum(
                (kl_distillation(a, teacher, target=y) for a in aux), torch.zeros(()))
        latency = search.latency(lat, size)
        reg = ((latency - target) / target) ** 2
        loss = task + gamma * aux_loss + lam * dist + beta * reg
        opt_w.zero_grad(set_to_none=True)
        opt_a.zero_grad(set_to_none=True)
        loss.backward()
        opt_w.step()
        if step >= int(tr['arch_warmup']):
            opt_a.step()
        if (step + 1) % int(tr['log_every']) == 0 or step + 1 == steps:
            search.set_mode('argmax')
            with torch.no_grad():
                cur = float(search.latency(lat, size))
            history.append({'step': step + 1, 'loss': loss.item(), 'task': task.item(),
                            'latency_ms': cur, 'ops': search.ops(),
                            'kept': sum(search.counts().values())})
            bar.set_postfix(loss=f'{loss.item():.2f}', lat=f'{cur:.1f}ms')
    search.set_mode('argmax')
    search.eval()
    return search, history


def _supernet_params(search: SearchSupernet, size: tuple[int, int]) -> int:
    from seg_ros.models.counting import count_params

    search.set_mode('supernet')
    try:
        return count_params(search.model, size)
    finally:
        search.set_mode('argmax')


def run_rtseg_search_command(cfg_user: dict[str, Any], args: argparse.Namespace,
                             out: Path) -> int:
    """``seg-ros search rtseg CONFIG --target-ms T``."""
    import tempfile

    import yaml

    from seg_ros.metadata import ModelMeta
    from seg_ros.models.checkpoint import save_checkpoint
    from seg_ros.models.counting import count_macs, count_params
    from seg_ros.search.latency import (
        LatencyModel,
        clock_name,
        fit_from_table,
        measure_checkpoint,
        profile_table,
    )

    with tempfile.NamedTemporaryFile('w', suffix='.yaml', delete=False) as f:
        yaml.safe_dump(cfg_user, f)
    cfg = search_config(f.name)
    Path(f.name).unlink()
    if args.target_ms is not None:
        cfg['target_ms'] = float(args.target_ms)
    if args.latency_table is not None:
        cfg['latency_table'], cfg['latency_model'] = args.latency_table, None
    size = (int(cfg['input_size'][0]), int(cfg['input_size'][1]))
    threads = int(cfg['train'].get('threads', 0))
    if threads > 0:
        torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}
    if cfg.get('latency_model'):
        lat = LatencyModel.load(cfg['latency_model'])
    else:
        if cfg.get('latency_table'):
            p = Path(cfg['latency_table'])
            if not p.is_file():
                raise SegRosError(f'latency table not found: {p}')
            table = json.loads(p.read_text())
        else:
            lc = cfg['latency']
            table = profile_table(cfg['supernet_cfg'], size, int(lc['samples']),
                                  int(lc['models']), str(lc.get('backend', 'torch')), threads,
                                  repeats=int(lc['repeats']), progress=not args.no_progress,
                                  rounds=int(lc.get('rounds', 5)))
            (out / 'latency_table.json').write_text(json.dumps(table))
        lat, report['latency_model'] = fit_from_table(
            table, steps=int(cfg['latency'].get('fit_steps', 3000)))
        lat.save(out / 'latency_model.pt')
    if list(lat.meta.get('input_size', size)) != list(size):
        raise SegRosError(f'latency model was measured at {lat.meta.get("input_size")}, the '
                          f'search runs at {list(size)}')
    search, history = search_rtseg(cfg, lat, progress=not args.no_progress)
    sub = extract_subnet(search)
    sub_cfg = sub.cfg
    arch = {k: v for k, v in sub_cfg.to_dict().items() if k != 'num_classes'}
    meta = ModelMeta.for_dataset('rtseg_supernet', 'cityscapes', arch=arch,
                                 input_size=list(size)) \
        if int(cfg['num_classes']) == 19 else ModelMeta(
            'rtseg_supernet', int(cfg['num_classes']),
            class_names=[f'class{i}' for i in range(int(cfg['num_classes']))],
            palette=[[i * 37 % 256, i * 91 % 256, i * 53 % 256]
                     for i in range(int(cfg['num_classes']))], input_size=list(size), arch=arch)
    save_checkpoint(out / 'subnet.pt', sub, meta, extra={'search': 'rtseg',
                                                         'target_ms': cfg['target_ms']})
    predicted = lat.model_ms(sub, size)
    backend = str(lat.meta.get('backend', 'torch'))   # where the table was measured
    # benchmarked in a fresh process, as deployed (see latency.measure_checkpoint)
    measured = measure_checkpoint(out / 'subnet.pt', size, max(threads, 1) if threads > 0
                                  else torch.get_num_threads(),
                                  int(cfg['latency'].get('bench_repeats', 21)), backend)
    clock = clock_name()
    if lat.meta.get('clock', clock) != clock:
        raise SegRosError(f'latency model measured with the {lat.meta.get("clock")} clock, '
                          f'this run uses {clock} (set train.threads as when profiling)')
    report.update({
        'target_ms': cfg['target_ms'], 'predicted_ms': predicted, 'measured_ms': measured,
        'measured_vs_target': measured / float(cfg['target_ms']) - 1.0,
        'ops': search.ops(), 'counts': search.counts(),
        'params': count_params(sub, size), 'macs': count_macs(sub, size),
        'supernet_params': _supernet_params(search, size), 'history': history,
        'input_size': list(size), 'threads': torch.get_num_threads(), 'clock': clock,
        'backend': backend})
    (out / 'subnet.json').write_text(json.dumps(arch, indent=1))
    (out / 'report.json').write_text(json.dumps(report, indent=1))
    print(f'subnet: ops {search.ops()}, {report["params"] / 1e6:.3f}M params, '
          f'{report["macs"] / 1e9:.3f} GMACs at {size[0]}x{size[1]}')
    print(f'latency: target {cfg["target_ms"]:.2f} ms, predicted {predicted:.2f} ms, measured '
          f'{measured:.2f} ms ({report["measured_vs_target"]:+.1%}) on {backend}, '
          f'{torch.get_num_threads()} thread(s), {clock} clock')
    print(f'wrote {out / "subnet.pt"} (seg_ros checkpoint: rtseg_supernet + arch), '
          f'{out / "subnet.json"}, {out / "report.json"}')
    return 0
