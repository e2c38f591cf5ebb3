"""Losses, LR schedule, EMA, config: OHEM selects exactly what the papers and code say."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seg_ros.errors import SegRosError
from seg_ros.train.config import load_config
from seg_ros.train.losses import (
    BootstrappedCE,
    CrossEntropy,
    DeepSupervisionLoss,
    OhemCrossEntropy,
    TopKCrossEntropy,
    build_loss,
    kl_distillation,
)
from seg_ros.train.optim import ModelEMA, WarmupScheduler, build_optimizer


def _logits_with_losses(losses: np.ndarray, num_classes: int = 3) -> tuple[torch.Tensor,
                                                                            torch.Tensor]:
    """Logits (1, C, 1, n) and targets (1, 1, n) whose per-pixel CE equals ``losses``.

    With logits [a, 0, 0, ...] and target 0: CE = -a + log(e^a + C - 1) = L
    <=> a = log((C - 1) / (e^L - 1)).
    """
    losses = np.asarray(losses, np.float64)
    a = np.log((num_classes - 1) / np.expm1(losses))
    logits = torch.zeros(1, num_classes, 1, len(losses), dtype=torch.float64)
    logits[0, 0, 0] = torch.from_numpy(a)
    target = torch.zeros(1, 1, len(losses), dtype=torch.long)
    return logits, target


def test_logit_construction_gives_the_wanted_losses():
    want = np.array([0.05, 0.3, 1.0, 2.5])
    logits, target = _logits_with_losses(want)
    got = F.cross_entropy(logits, target, reduction='none').reshape(-1).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_bootstrap_uses_losses_over_threshold_when_more_than_k():
    # 32 pixels -> K = 32 / 16 = 2; three pixels exceed 0.3 (> K): mean of exactly those
    losses = np.full(32, 0.1)
    losses[[3, 10, 20]] = [0.31, 0.9, 2.0]
    losses[5] = 0.3  # not strictly greater than the threshold: excluded
    logits, target = _logits_with_losses(losses)
    loss = BootstrappedCE(threshold=0.3, min_fraction=1 / 16)(logits, target)
    assert loss.item() == pytest.approx((0.31 + 0.9 + 2.0) / 3, rel=1e-6)


def test_bootstrap_falls_back_to_hardest_sixteenth():
    # 64 pixels -> K = 4; only two losses exceed 0.3: mean of the 4 largest instead
    losses = np.linspace(0.01, 0.2, 64)
    losses[[7, 40]] = [0.5, 1.5]
    logits, target = _logits_with_losses(losses)
    crit = BootstrappedCE()
    assert crit.min_kept(64) == 4
    top4 = np.sort(losses)[-4:]
    assert crit(logits, target).item() == pytest.approx(top4.mean(), rel=1e-6)
    # exactly K hard pixels is not "more than K": still the top-K rule (official `>`)
    losses2 = np.full(64, 0.1)
    losses2[:4] = [0.4, 0.5, 0.6, 0.7]
    losses2[4] = 0.2
    logits2, target2 = _logits_with_losses(losses2)
    assert crit(logits2, target2).item() == pytest.approx(np.mean([0.4, 0.5, 0.6, 0.7]),
                                                          rel=1e-6)


def test_bootstrap_k_counts_ignored_pixels_like_the_official_code():
    losses = np.full(32, 0.01)
    losses[0] = 1.0
    logits, target = _logits_with_losses(losses)
    target[0, 0, 1:] = 255  # 31 ignored pixels have loss 0, still counted in N*H*W/16 = 2
    # top-2 = {1.0, 0.0} -> mean 0.5
    assert BootstrappedCE()(logits, target).item() == pytest.approx(0.5, rel=1e-6)


def _official_sfnet_ohem(pred: torch.Tensor, target: torch.Tensor, thresh: float,
                         min_kept: int, ignore: int = 255) -> torch.Tensor:
    """Transcription of SFNet's OhemCrossEntropy2dTensor.forward (reference semantics)."""
    b, c, h, w = pred.size()
    target = target.view(-1).clone()
    valid_mask = target.ne(ignore)
    target = target * valid_mask.long()
    num_valid = valid_mask.sum()
    prob = F.softmax(pred, dim=1)
    prob = (prob.transpose(0, 1)).reshape(c, -1)
    if min_kept > num_valid:
        pass
    elif num_valid > 0:
        prob = prob.masked_fill_(~valid_mask, 1)
        mask_prob = prob[target, torch.arange(len(target), dtype=torch.long)]
        threshold = thresh
        if min_kept > 0:
            _, index = mask_prob.sort()
            threshold_index = index[min(len(index), min_kept) - 1]
            if mask_prob[threshold_index] > thresh:
                threshold = mask_prob[threshold_index]
            kept_mask = mask_prob.le(threshold)
            target = target * kept_mask.long()
            valid_mask = valid_mask * kept_mask
    target = target.masked_fill_(~valid_mask, ignore)
    return F.cross_entropy(pred, target.view(b, h, w), ignore_index=ignore)


@pytest.mark.parametrize('min_kept', [0, 10, 150, 1000])
def test_sfnet_ohem_matches_the_official_rule(min_kept):
    g = torch.Generator().manual_seed(min_kept)
    pred = torch.randn(2, 5, 8, 12, generator=g, dtype=torch.float64) * 2
    target = torch.randint(0, 5, (2, 8, 12), generator=g)
    target[0, :2] = 255
    ours = OhemCrossEntropy(thresh=0.7, min_kept=min_kept)
    ref = _official_sfnet_ohem(pred, target, 0.7, min_kept)
    assert ours(pred, target).item() == pytest.approx(ref.item(), rel=1e-6)


def test_sfnet_ohem_keeps_probability_below_threshold_or_min_kept_hardest():
    pred = torch.zeros(1, 2, 1, 10, dtype=torch.float64)
    # p(class 0) = sigmoid(z): choose z so p_true goes 0.05 .. 0.95
    p = torch.linspace(0.05, 0.95, 10, dtype=torch.float64)
    pred[0, 0, 0] = torch.log(p / (1 - p))
    target = torch.zeros(1, 1, 10, dtype=torch.long)
    kept = OhemCrossEntropy(thresh=0.7, min_kept=2).kept_mask(pred, target)
    assert kept.tolist() == (p <= 0.7).tolist()  # threshold wins: 7 pixels
    kept = OhemCrossEntropy(thresh=0.3, min_kept=6).kept_mask(pred, target)
    assert int(kept.sum()) == 6 and kept[:6].all()  # min_kept raises the threshold


def test_topk_is_exactly_the_hardest_ten_percent():
    losses = np.random.default_rng(0).uniform(0.01, 3.0, 200)
    logits, target = _logits_with_losses(losses)
    target[0, 0, :100] = 255  # only 100 valid -> 10 hardest of the valid pixels
    want = np.sort(losses[100:])[-10:].mean()
    assert TopKCrossEntropy(0.1)(logits, target).item() == pytest.approx(want, rel=1e-6)


def test_ce_ignores_and_deep_supervision_weights():
    logits = torch.randn(2, 4, 6, 6)
    target = torch.randint(0, 4, (2, 6, 6))
    target[:, 0] = 255
    ce = CrossEntropy()
    assert ce(logits, target).item() == pytest.approx(
        F.cross_entropy(logits, target, ignore_index=255).item())
    aux = [torch.randn(2, 4, 3, 3), torch.randn(2, 4, 6, 6)]
    ds = DeepSupervisionLoss(ce, None, [0.4, 1.0])
    up = F.interpolate(aux[0], size=(6, 6), mode='bilinear', align_corners=False)
    want = ce(logits, target) + 0.4 * ce(up, target) + 1.0 * ce(aux[1], target)
    assert ds((logits, aux), target).item() == pytest.approx(want.item(), rel=1e-6)
    with pytest.raises(SegRosError):
        DeepSupervisionLoss(ce, None, [1.0])((logits, aux), target)


def test_kl_distillation():
    s = torch.randn(1, 3, 4, 4, requires_grad=True)
    assert kl_distillation(s, s.detach()).item() == pytest.approx(0.0, abs=1e-7)
    t = torch.randn(1, 3, 4, 4)
    kl = kl_distillation(s, t)
    pt, ps = F.softmax(t, 1), F.softmax(s, 1)
    want = (pt * (pt.log() - ps.log())).sum(1).mean()
    assert kl.item() == pytest.approx(want.item(), rel=1e-5) and kl.item() > 0
    kl.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_build_loss_configs():
    assert isinstance(build_loss('bootstrap').main, BootstrappedCE)
    ohem = build_loss({'type': 'ohem', 'thresh': 0.7, 'min_kept': 100000}).main
    assert isinstance(ohem, OhemCrossEntropy) and ohem.min_kept == 100000
    with pytest.raises(SegRosError):
        build_loss('focal')
    with pytest.raises(SegRosError):
        build_loss({'type': 'ce', 'nope': 1})


def test_warmup_poly_and_cosine():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.05)
    s = WarmupScheduler(opt, 100, 'poly', 0.9, warmup_iters=10, warmup_factor=0.1)
    assert opt.param_groups[0]['lr'] == pytest.approx(0.005)
    for _ in range(5):
        s.step()
    assert opt.param_groups[0]['lr'] == pytest.approx(0.05 * (0.1 * 0.5 + 0.5))
    for _ in range(45):
        s.step()
    assert opt.param_groups[0]['lr'] == pytest.approx(0.05 * 0.5 ** 0.9)
    opt2 = torch.optim.SGD([p], lr=1.0)
    c = WarmupScheduler(opt2, 100, 'cosine')
    for _ in range(25):
        c.step()
    assert opt2.param_groups[0]['lr'] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_no_weight_decay_on_bn_and_bias():
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = build_optimizer(m, 'sgd', 0.1, 0.9, 1e-4)
    decayed = {id(p) for p in opt.param_groups[0]['params']}
    assert decayed == {id(m[0].weight)}
    assert opt.param_groups[1]['weight_decay'] == 0.0 and len(opt.param_groups[1]['params']) == 3
    assert opt.param_groups[0]['momentum'] == 0.9


def test_ema_alpha_every():
    m = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.constant_(m.weight, 0.0)
    ema = ModelEMA(m, alpha=0.5, every=2)
    torch.nn.init.constant_(m.weight, 1.0)
    assert not ema.update(m) and ema.state['weight'].item() == 0.0
    assert ema.update(m) and ema.state['weight'].item() == pytest.approx(0.5)


def test_config_overrides_and_errors(tmp_path):
    f = tmp_path / 'c.yaml'
    f.write_text('optim: {iterations: 10, lr: 0.1}\ndata: {options: {size: [8, 16]}}\n')
    cfg = load_config(f, ['optim.lr=1e-3', 'data.options.length=5', 'model.arch.foo=[1, 2]'])
    assert cfg.optim.lr == 1e-3 and cfg.data.options == {'size': [8, 16], 'length': 5}
    assert cfg.model.arch == {'foo': [1, 2]}
    with pytest.raises(SegRosError, match='unknown config keys'):
        load_config(f, ['optim.lrr=1'])
    with pytest.raises(SegRosError, match='key=value'):
        load_config(f, ['optim.lr'])
    with pytest.raises(SegRosError, match='iterations'):
        load_config(f, ['optim.iterations=0'])
    with pytest.raises(SegRosError, match='not found'):
        load_config(tmp_path / 'missing.yaml')
