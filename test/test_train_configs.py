"""Every shipped training config parses, names a registered model and a known loss."""
from __future__ import annotations

from pathlib import Path

import pytest

from seg_ros.data.transforms import build_transform
from seg_ros.models import list_models
from seg_ros.train.config import load_config
from seg_ros.train.losses import build_loss

CONFIGS = sorted((Path(__file__).resolve().parents[1] / 'config' / 'train').glob('*.yaml'))


def test_the_paper_configs_exist():
    names = {p.stem for p in CONFIGS}
    assert {'regseg_cityscapes', 'regseg_camvid', 'sfnet_lite_cityscapes', 'eseg_cityscapes',
            'rtseg_cityscapes', 'synthetic'} <= names


@pytest.mark.parametrize('path', CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_is_valid(path):
    cfg = load_config(path)
    assert cfg.model.name in list_models()
    build_loss(cfg.loss)
    augment = cfg.data.augment
    if isinstance(augment, dict):
        augment = {k: v for k, v in augment.items() if k != 'class_uniform'}
        if augment.get('crop') == 'frame':  # folder.yaml: resolved from the first frame
            augment['crop'] = [64, 64]
    build_transform(augment)


def test_regseg_cityscapes_is_the_paper_recipe():
    cfg = load_config(CONFIGS[0].parent / 'regseg_cityscapes.yaml')
    o = cfg.optim
    assert (o.lr, o.batch_size, o.epochs, o.weight_decay, o.momentum) == (0.05, 8, 1000, 1e-4,
                                                                           0.9)
    assert (o.policy, o.power, o.warmup_iters, o.warmup_factor) == ('poly', 0.9, 3000, 0.1)
    assert cfg.loss == {'type': 'bootstrap', 'threshold': 0.3, 'min_fraction': 0.0625}
    assert cfg.data.augment['crop'] == [1024, 1024]
    assert cfg.data.augment['class_uniform'] == 0.5
    assert (o.ema_alpha, o.ema_every) == (0.0031, 32)
