"""Segmentation losses of the four papers' recipes.

* :class:`CrossEntropy` -- plain pixel-wise cross entropy with an ignore label.
* :class:`BootstrappedCE` -- RegSeg's OHEM (regseg.txt Sec. 4.2): "averages pixel losses that
  are over 0.3 or averages the top 1/16 pixel losses if the original proportion is less than
  1/16". As in the official ``train.py`` the 1/16 is of *all* pixels of the batch
  (``min_K = batch * crop_h * crop_w / 16``; ignored pixels count, with loss 0).
* :class:`OhemCrossEntropy` -- SFNet's OHEM as the official scripts run it
  (``OhemCrossEntropy2dTensor``, ``thresh 0.7, min_kept 100000``): keep the valid pixels whose
  softmax probability of the true class is <= ``thresh``, but at least the ``min_kept``
  hardest ones (the threshold is raised to the ``min_kept``-th smallest probability when that
  is above ``thresh``); then mean CE over the kept pixels. Like the official code, ``min_kept
  = 0`` or fewer valid pixels than ``min_kept`` means plain CE.
* :class:`TopKCrossEntropy` -- the SFNet *paper's* sentence (sfnet.txt Sec. 3, "Improvement
  Details"): "only training on the 10% hardest pixels sorted by cross-entropy loss": exactly
  the top ``fraction`` of the valid pixels, no threshold.
* :class:`DeepSupervisionLoss` -- main loss + weighted auxiliary-head losses (RTSeg's
  gamma * L_aux, SFNet's / PSPNet's deep supervision).
* :func:`kl_distillation` -- RTSeg Eq. 10-11 pixel-wise KL(student || teacher) self-distillation
  (used by the architecture search).

Every loss takes ``(logits (N, C, H, W), target (N, H, W) int64)``. Logits of another size than
the target are bilinearly resized first (auxiliary heads at lower resolution).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
import torch.nn.functional as F

from seg_ros.errors import SegRosError
from seg_ros.metadata import IGNORE_INDEX

__all__ = ['BootstrappedCE', 'CrossEntropy', 'DeepSupervisionLoss', 'OhemCrossEntropy',
           'TopKCrossEntropy', 'build_loss', 'kl_distillation']


def _match_size(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode='bilinear',
                               align_corners=False)
    return logits


def _pixel_ce(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Per-pixel CE (N*H*W,), computed in float32 (AMP logits may be fp16 / bf16)."""
    logits = _match_size(logits, target).float()
    return F.cross_entropy(logits, target, ignore_index=ignore_index, reduction='none').reshape(-1)


class CrossEntropy(nn.Module):
    """Mean cross entropy over the non-ignored pixels."""

    def __init__(self, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = _match_size(logits, target).float()
        return F.cross_entropy(logits, target, ignore_index=self.ignore_index)

    def extra_repr(self) -> str:
        return f'ignore_index={self.ignore_index}'


class BootstrappedCE(nn.Module):
    """RegSeg OHEM: mean of the pixel losses > ``threshold``; if at most ``min_fraction`` of the
    batch's pixels are that hard, mean of the hardest ``min_fraction`` instead.

    Args:
        threshold: loss threshold (0.3 in RegSeg).
        min_fraction: K as a fraction of all pixels in the batch (1/16 in RegSeg).
        ignore_index: ignored label (loss 0 for those pixels, as in the official code).
    """

    def __init__(self, threshold: float = 0.3, min_fraction: float = 1 / 16,
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if not 0 < min_fraction <= 1:
            raise SegRosError(f'BootstrappedCE min_fraction must be in (0, 1], got {min_fraction}')
        self.threshold = float(threshold)
        self.min_fraction = float(min_fraction)
        self.ignore_index = ignore_index

    def min_kept(self, num_pixels: int) -> int:
        """K for a batch of ``num_pixels`` pixels (official: ``int(bs * h * w / 16)``)."""
        return max(1, int(num_pixels * self.min_fraction))

    def select(self, pixel_losses: torch.Tensor) -> torch.Tensor:
        """The pixel losses that are averaged (exposed for tests)."""
        k = self.min_kept(pixel_losses.numel())
        hard = pixel_losses > self.threshold
        # Official rule: use the thresholded set only if it is strictly larger than K.
        if int(hard.sum()) > k:
            return pixel_losses[hard]
        return torch.topk(pixel_losses, k, sorted=False).values

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.select(_pixel_ce(logits, target, self.ignore_index)).mean()

    def extra_repr(self) -> str:
        return f'threshold={self.threshold}, min_fraction={self.min_fraction}'


class OhemCrossEntropy(nn.Module):
    """SFNet OHEM (official ``OhemCrossEntropy2dTensor``).

    Args:
        thresh: probability threshold (0.7 in the SFNet scripts): pixels whose true-class
            probability is <= thresh are hard.
        min_kept: keep at least this many of the lowest-probability valid pixels (100000 in
            the SFNet scripts, per GPU).
        ignore_index: ignored label.
    """

    def __init__(self, thresh: float = 0.7, min_kept: int = 100000,
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.thresh = float(thresh)
        self.min_kept = int(min_kept)
        self.ignore_index = ignore_index

    @torch.no_grad()
    def kept_mask(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Boolean (N*H*W,) mask of the pixels that enter the loss (exposed for tests)."""
        logits = _match_size(logits, target).float()
        valid = target.reshape(-1) != self.ignore_index
        num_valid = int(valid.sum())
        if num_valid == 0 or self.min_kept > num_valid or self.min_kept <= 0:
            # official: too few valid pixels -> plain CE over all valid pixels; and the
            # threshold is only applied inside its `if self.min_kept > 0` branch
            return valid
        prob = F.softmax(logits, dim=1).permute(1, 0, 2, 3).reshape(logits.shape[1], -1)
        tgt = torch.where(valid, target.reshape(-1), torch.zeros_like(target.reshape(-1)))
        p_true = prob.gather(0, tgt.unsqueeze(0)).squeeze(0).masked_fill(~valid, 1.0)
        kth = torch.kthvalue(p_true, min(p_true.numel(), self.min_kept)).values
        threshold = torch.maximum(torch.tensor(self.thresh, dtype=p_true.dtype), kth)
        return valid & (p_true <= threshold)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        kept = self.kept_mask(logits, target)
        losses = _pixel_ce(logits, target, self.ignore_index)
        return losses[kept].sum() / kept.sum().clamp(min=1)

    def extra_repr(self) -> str:
        return f'thresh={self.thresh}, min_kept={self.min_kept}'


class TopKCrossEntropy(nn.Module):
    """Mean CE of exactly the hardest ``fraction`` of the valid pixels (SFNet paper: 10%).

    Args:
        fraction: share of valid pixels kept (0.1).
        ignore_index: ignored label.
    """

    def __init__(self, fraction: float = 0.1, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if not 0 < fraction <= 1:
            raise SegRosError(f'TopKCrossEntropy fraction must be in (0, 1], got {fraction}')
        self.fraction = float(fraction)
        self.ignore_index = ignore_index

    def select(self, pixel_losses: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The pixel losses that are averaged (exposed for tests)."""
        vals = pixel_losses[valid]
        if vals.numel() == 0:
            return vals
        k = max(1, int(round(vals.numel() * self.fraction)))
        return torch.topk(vals, k, sorted=False).values

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        losses = _pixel_ce(logits, target, self.ignore_index)
        sel = self.select(losses, target.reshape(-1) != self.ignore_index)
        # all-ignore batch: a zero that still depends on the logits (DDP needs a graph)
        return sel.mean() if sel.numel() else logits.sum() * 0.0

    def extra_repr(self) -> str:
        return f'fraction={self.fraction}'


class DeepSupervisionLoss(nn.Module):
    """``main(out) + sum_i w_i * aux(aux_out_i)`` for models that return ``(out, [aux...])``.

    Args:
        main: loss of the main output.
        aux: loss of each auxiliary output (often plain CE or the same OHEM).
        weights: one weight per auxiliary output, or a single float for all.
    """

    def __init__(self, main: nn.Module, aux: nn.Module | None = None,
                 weights: float | Sequence[float] = 0.4) -> None:
        super().__init__()
        self.main = main
        self.aux = aux if aux is not None else main
        self.weights = weights

    def weight(self, i: int, n: int) -> float:
        """Weight of auxiliary output ``i`` of ``n``."""
        if isinstance(self.weights, (int, float)):
            return float(self.weights)
        if len(self.weights) != n:
            raise SegRosError(f'{len(self.weights)} auxiliary loss weights for {n} auxiliary '
                              f'outputs')
        return float(self.weights[i])

    def forward(self, outputs: Any, target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.main(outputs, target)
        main_out, aux_outs = outputs
        loss = self.main(main_out, target)
        for i, a in enumerate(aux_outs):
            w = self.weight(i, len(aux_outs))
            if w:
                loss = loss + w * self.aux(a, target)
        return loss


def kl_distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0,
                    target: torch.Tensor | None = None,
                    ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Pixel-wise KL self-distillation (RTSeg Eq. 10-11), averaged over pixels.

    RTSeg writes ``KL(q_s || q_t)`` with ``KL(P || Q) = sum P log(P / Q)``. We implement the
    usual distillation direction ``KL(q_t || q_s)`` (teacher as the target distribution,
    gradients only to the student), which is what "transferring label-wise knowledge from the
    supernet" needs; the teacher is detached.

    Args:
        student: (N, C, H, W) logits.
        teacher: (N, C, H', W') logits (resized to the student's size when different).
        temperature: softmax temperature T; the loss is scaled by T^2 (Hinton et al.).
        target: optional labels; pixels with ``ignore_index`` are left out when given.
        ignore_index: ignored label.

    Returns:
        Scalar mean over the (kept) pixels of sum_c q_t log(q_t / q_s).
    """
    teacher = teacher.detach()
    if teacher.shape[-2:] != student.shape[-2:]:
        teacher = F.interpolate(teacher, size=student.shape[-2:], mode='bilinear',
                                align_corners=False)
    t = float(temperature)
    log_s = F.log_softmax(student.float() / t, dim=1)
    log_t = F.log_softmax(teacher.float() / t, dim=1)
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=1)  # (N, H, W)
    if target is not None:
        if target.shape[-2:] != kl.shape[-2:]:
            target = F.interpolate(target[:, None].float(), size=kl.shape[-2:],
                                   mode='nearest')[:, 0].long()
        keep = target != ignore_index
        return (kl * keep).sum() / keep.sum().clamp(min=1) * t * t
    return kl.mean() * t * t


_LOSSES = {'ce': CrossEntropy, 'bootstrap': BootstrappedCE, 'ohem': OhemCrossEntropy,
           'topk': TopKCrossEntropy}


def build_loss(cfg: dict[str, Any] | str, ignore_index: int = IGNORE_INDEX) -> nn.Module:
    """Loss from a config.

    Args:
        cfg: ``'ce'`` / ``'bootstrap'`` / ``'ohem'`` / ``'topk'`` or a dict
            ``{type: ..., <constructor args>, aux_weights: w or [w...], aux_type: ...}``.
            ``bootstrap`` = RegSeg (threshold 0.3, min_fraction 1/16); ``ohem`` = SFNet code
            (thresh 0.7, min_kept 100000); ``topk`` = SFNet paper (fraction 0.1).
        ignore_index: ignored label.

    Returns:
        A :class:`DeepSupervisionLoss` (it accepts plain tensors as well as ``(out, aux)``).
    """
    cfg = {'type': cfg} if isinstance(cfg, str) else dict(cfg)
    kind = cfg.pop('type', 'ce')
    aux_weights = cfg.pop('aux_weights', 0.4)
    aux_kind = cfg.pop('aux_type', None)
    if kind not in _LOSSES:
        raise SegRosError(f'unknown loss {kind!r}; valid: {sorted(_LOSSES)}')
    try:
        main = _LOSSES[kind](ignore_index=ignore_index, **cfg)
        aux = None if aux_kind is None else _LOSSES[aux_kind](ignore_index=ignore_index)
    except (TypeError, KeyError) as exc:
        raise SegRosError(f'bad loss config {cfg!r} for {kind!r}: {exc}') from exc
    return DeepSupervisionLoss(main, aux, aux_weights)
