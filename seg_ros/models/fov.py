"""Field of view (receptive field gained through convolutions) per layer, RegSeg Sec. 3.1.

For a composition of convs equal to one ``k x k`` conv with stride ``s``, composing a
``k' x k'`` conv with stride ``s'`` gives (RegSeg Eq. 1-2)::

    k <- k + (k' - 1) * s        s <- s * s'

where a 3x3 conv with dilation ``r`` counts as ``k' = 2r + 1``. That field of view is only
real (no holes between the sampled positions) if ``r <= k / s`` (Eq. 3) holds for the ``k, s``
*before* the dilated conv; :func:`compute_fov` checks every dilated conv and flags gaps.

How it works: one forward on the ``meta`` device (shapes only) under a ``TorchFunctionMode``
that tags every tensor with its ``(k, s)``. Convs and windowed poolings apply Eq. 1-2;
element-wise ops, concatenation, reshapes take the input with the largest ``k``; resampling
(``interpolate``, ``grid_sample``) rescales ``s`` by the size ratio; global context (adaptive
pooling, spatial means as in SE / PPM, attention matmuls) is not a convolutional field of
view and is ignored, as in the paper, so SE-gated features keep their convolutional FOV.

``backbone_fov`` is the largest FOV reached inside the backbone (modules whose name starts
with a prefix of the model's ``fov_backbone_prefixes`` attribute, default ``('backbone',
'body', 'stem')``); for RegSeg with the Tab. 2 rates it is 2399 (paper Sec. 4, Fig. 2).
``fov`` is the FOV of the logits (decoder convs included).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from seg_ros.models.counting import _meta_copy

__all__ = ['FovLayer', 'FovReport', 'compute_fov', 'regseg_backbone_fov']

_DEFAULT_PREFIXES = ('backbone', 'body', 'stem')
_REDUCTIONS = {'mean', 'amax', 'amin', 'sum', 'max', 'min', 'adaptive_avg_pool2d',
               'adaptive_max_pool2d', 'adaptive_avg_pool1d', 'adaptive_max_pool1d', 'std',
               'var', 'logsumexp'}
# Ops that mix all tokens / positions: global, not a convolutional field of view.
_GLOBAL = {'matmul', 'bmm', 'baddbmm', 'scaled_dot_product_attention', 'einsum', '__matmul__'}
_RESAMPLE = {'interpolate', 'upsample', 'grid_sample', 'pixel_shuffle', 'pixel_unshuffle'}


@dataclass
class FovLayer:
    """One conv or pooling window on the way through the network.

    Attributes:
        name: qualified name of the innermost module that called it.
        op: 'conv' or 'pool'.
        kernel: kernel size (height).
        stride: stride (height).
        dilation: dilation rate r.
        k_in: FOV of its input (pixels of the input image).
        s_in: stride of its input w.r.t. the image.
        k_out: FOV of its output.
        s_out: stride of its output.
        gap: True if ``r > k_in / s_in`` (Eq. 3 violated: holes between the taps).
    """

    name: str
    op: str
    kernel: int
    stride: int
    dilation: int
    k_in: float
    s_in: float
    k_out: float
    s_out: float
    gap: bool


@dataclass
class FovReport:
    """Result of :func:`compute_fov`."""

    fov: float
    backbone_fov: float
    layers: list[FovLayer] = field(default_factory=list)

    @property
    def gaps(self) -> list[FovLayer]:
        """Dilated convs that violate ``r <= k/s``."""
        return [layer for layer in self.layers if layer.gap]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {'fov': self.fov, 'backbone_fov': self.backbone_fov,
                'gaps': [asdict(g) for g in self.gaps],
                'layers': [asdict(layer) for layer in self.layers]}


def _pair0(v: Any) -> int:
    return int(v[0]) if isinstance(v, (tuple, list)) else int(v)


class _FovMode(TorchFunctionMode):
    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.tags: dict[int, tuple[float, float]] = {}
        self.keep: list[torch.Tensor] = []  # keep tagged tensors alive: ids stay unique
        self.names = names
        self.layers: list[FovLayer] = []

    def tag(self, t: torch.Tensor, ks: tuple[float, float]) -> None:
        self.tags[id(t)] = ks
        self.keep.append(t)

    def get(self, t: Any) -> tuple[float, float] | None:
        return self.tags.get(id(t)) if isinstance(t, torch.Tensor) else None

    def _window(self, op: str, x: torch.Tensor, kernel: int, stride: int, dilation: int,
                out: torch.Tensor) -> None:
        ks = self.get(x)
        if ks is None:
            return
        k, s = ks
        k_eff = dilation * (kernel - 1) + 1
        k_out, s_out = k + (k_eff - 1) * s, s * stride
        gap = kernel > 1 and dilation > 1 and dilation > k / s + 1e-9
        self.layers.append(FovLayer(self.names[-1] if self.names else '', op, kernel, stride,
                                    dilation, k, s, k_out, s_out, gap))
        self.tag(out, (k_out, s_out))

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, '__name__', '')
        outs, _ = tree_flatten(out)
        out_tensors = [o for o in outs if isinstance(o, torch.Tensor)]
        if not out_tensors:
            return out
        flat_in, _ = tree_flatten((args, kwargs))
        if name == 'conv2d':
            x, w = args[0], args[1] if len(args) > 1 else kwargs['weight']
            stride = args[3] if len(args) > 3 else kwargs.get('stride', 1)
            dil = args[5] if len(args) > 5 else kwargs.get('dilation', 1)
            self._window('conv', x, int(w.shape[-2]), _pair0(stride), _pair0(dil), out)
            return out
        if name in ('avg_pool2d', 'max_pool2d', '_max_pool2d', 'max_pool2d_with_indices'):
            x = args[0]
            kernel = _pair0(args[1] if len(args) > 1 else kwargs['kernel_size'])
            stride = args[2] if len(args) > 2 else kwargs.get('stride')
            stride = kernel if stride is None or stride == [] or stride == () else stride
            self._window('pool', x, kernel, _pair0(stride), 1, out_tensors[0])
            return out
        if name in _GLOBAL:
            return out
        tagged = [(self.tags[id(t)], t) for t in flat_in
                  if isinstance(t, torch.Tensor) and id(t) in self.tags]
        if not tagged:
            return out
        (k, s), src = max(tagged, key=lambda kv: kv[0][0])
        for o in out_tensors:
            if name in _REDUCTIONS:
                # Spatial reduction = global context: not a conv FOV (paper ignores SE/PPM).
                if not (o.dim() == 4 and src.dim() == 4 and o.shape[-2:] == src.shape[-2:]):
                    continue
            s_o = s
            if name in _RESAMPLE and o.dim() == 4 and src.dim() == 4 and o.shape[-2] > 0:
                s_o = s * src.shape[-2] / o.shape[-2]
            self.tag(o, (k, s_o))
        return out


def compute_fov(model: nn.Module, size: tuple[int, int] = (1024, 2048)) -> FovReport:
    """Field of view per conv/pool layer of ``model``'s eval forward at input ``size`` (H, W).

    Args:
        model: the model (not modified; a data-less copy runs on the meta device).
        size: input (H, W); only matters for ceil-mode poolings and resampling ratios.

    Returns:
        A :class:`FovReport` (output FOV, backbone FOV, per-layer records with gap flags).
    """
    runner = _meta_copy(model).eval()
    names: list[str] = []
    handles = []
    for qual, m in runner.named_modules():
        handles.append(m.register_forward_pre_hook(
            lambda mod, inp, q=qual: names.append(q)))
        # A forward hook's non-None return value would replace the output: return None.
        handles.append(m.register_forward_hook(lambda mod, inp, out: names.pop() and None))
    mode = _FovMode(names)
    x = torch.zeros(1, 3, *size, device='meta')
    try:
        with torch.no_grad():
            mode.tag(x, (1.0, 1.0))
            with mode:
                y = runner(x)
    finally:
        for h in handles:
            h.remove()
    out_ks = mode.get(y)
    prefixes = tuple(getattr(model, 'fov_backbone_prefixes', _DEFAULT_PREFIXES))
    bb = [layer.k_out for layer in mode.layers
          if layer.name.split('.')[0] in prefixes]
    fov = out_ks[0] if out_ks else max((layer.k_out for layer in mode.layers), default=1.0)
    return FovReport(fov=fov, backbone_fov=max(bb) if bb else fov, layers=mode.layers)


def regseg_backbone_fov(dilations: Sequence[Sequence[int]]) -> int:
    """Closed form for the RegSeg backbone: stem + 1/4 + three 1/8 + stride-2 1/16 blocks
    give k = 63, s = 16; each later block adds ``(2 max(r) + 1 - 1) * 16``."""
    return 63 + sum(32 * max(d) for d in dilations)
