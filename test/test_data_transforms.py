"""Transform invariants: label values kept, ignore padding, flip consistency, determinism."""
from __future__ import annotations

import numpy as np
import pytest

from seg_ros.data import transforms as T
from seg_ros.errors import SegRosError


def _pair(h: int = 60, w: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    # label blocks with distinct ids; image encodes the label in channel 0 for consistency checks
    label = (np.arange(w)[None, :] // 20 + 4 * (np.arange(h)[:, None] // 20)).astype(np.uint8)
    label[0, 0] = 255
    image[..., 0] = label * 10
    return image, label


def _consistent(image: np.ndarray, label: np.ndarray) -> float:
    """Fraction of non-ignored pixels whose channel 0 still encodes their label."""
    m = label != 255
    return float((np.abs(image[..., 0][m].astype(int) - label[m] * 10) <= 1).mean())


def test_scale_short_side_and_factor():
    image, label = _pair()
    out_i, out_l = T.RandomScale(short_side=(120, 120))(image, label, np.random.default_rng(0))
    assert out_l.shape == (120, 160) and out_i.shape == (120, 160, 3)
    assert set(np.unique(out_l)) <= set(np.unique(label))    # nearest: no new label values
    out_i, out_l = T.RandomScale(factor=(0.5, 0.5))(image, label, np.random.default_rng(0))
    assert out_l.shape == (30, 40)
    with pytest.raises(SegRosError):
        T.RandomScale(short_side=(1, 2), factor=(1, 2))


def test_crop_pads_with_ignore_and_mean():
    image, label = _pair(20, 30)
    out_i, out_l = T.RandomCrop((40, 50))(image, label, np.random.default_rng(1))
    assert out_l.shape == (40, 50) and out_i.shape == (40, 50, 3)
    assert (out_l[20:] == 255).all() and (out_l[:, 30:] == 255).all()
    assert (out_i[25, 45] == T.MEAN_FILL).all()
    assert np.array_equal(out_l[:20, :30], label)
    # a crop smaller than the image is a window of it
    out_i, out_l = T.RandomCrop(10)(image, label, np.random.default_rng(2))
    found = any(np.array_equal(out_l, label[y:y + 10, x:x + 10])
                for y in range(11) for x in range(21))
    assert found


def test_crop_contains_the_center():
    image, label = _pair(100, 200)
    crop = T.RandomCrop((20, 30))
    for seed in range(20):
        cy, cx = (int(v) for v in np.random.default_rng(seed).integers(0, (100, 200)))
        marked = label.copy()
        marked[cy, cx] = 254
        _, out_l, center = crop.with_center(image, marked, np.random.default_rng(seed),
                                            (cy, cx))
        assert (out_l == 254).sum() == 1


def test_flip_moves_image_and_label_together():
    image, label = _pair()
    out_i, out_l = T.RandomHorizontalFlip(1.0)(image, label, np.random.default_rng(0))
    assert np.array_equal(out_l, label[:, ::-1]) and np.array_equal(out_i, image[:, ::-1])
    out_i, out_l = T.RandomHorizontalFlip(0.0)(image, label, np.random.default_rng(0))
    assert np.array_equal(out_l, label)


@pytest.mark.parametrize('op', list(T.REGSEG_OPS))
def test_randaugment_ops_keep_labels(op):
    image, label = _pair(64, 64)
    ra = T.RandAugment(num_ops=1, magnitude=1.0, ops=[op])
    out_i, out_l = ra(image, label, np.random.default_rng(3))
    assert out_i.dtype == np.uint8 and out_i.shape == image.shape
    if op == 'rotate':
        assert set(np.unique(out_l)) <= set(np.unique(label)) | {255}
        assert (out_l == 255).sum() > (label == 255).sum()       # uncovered corners ignored
        assert not np.array_equal(out_l, label)
    else:
        assert np.array_equal(out_l, label)                      # photometric: label untouched
        if op not in ('equalize', 'auto_contrast'):
            assert not np.array_equal(out_i, image)


def test_enhance_ops_match_pil_semantics():
    img = np.full((8, 8, 3), 100, np.uint8)
    img[0, 0] = (200, 50, 0)
    assert (T.adjust_brightness(img, 1.2)[4, 4] == 120).all()
    assert (T.adjust_brightness(img, 1.0) == img).all()
    grey = T.adjust_color(img, 0.0)
    assert np.ptp(grey[0, 0].astype(int)) <= 1                    # fully desaturated
    flat = T.adjust_contrast(img, 0.0)
    assert np.ptp(flat.astype(int)) <= 1                          # all at the mean grey
    ac = T.auto_contrast(np.dstack([np.linspace(50, 150, 64).reshape(8, 8).astype(np.uint8)] * 3))
    assert ac.min() == 0 and ac.max() == 255


def test_compose_is_deterministic_per_generator_and_keeps_consistency():
    image, label = _pair(120, 160)
    t = T.build_transform({'scale': {'factor': [0.5, 2.0]}, 'crop': [64, 64], 'hflip': 0.5,
                           'randaugment': {'num_ops': 2, 'magnitude': 0.2,
                                           'ops': ['rotate', 'brightness']}})
    a = t(image, label, np.random.default_rng(7))
    b = t(image, label, np.random.default_rng(7))
    c = t(image, label, np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not (np.array_equal(a[0], c[0]) and np.array_equal(a[1], c[1]))
    # geometry only (no photometric ops): every labelled pixel still carries its own label
    geo = T.build_transform({'scale': {'factor': [0.5, 2.0]}, 'crop': [64, 64], 'hflip': 0.5})
    for seed in range(5):
        out_i, out_l = geo(image, label, np.random.default_rng(seed))
        assert out_l.shape == (64, 64)
        # only pixels on block borders (blended by the bilinear resize) may disagree
        assert _consistent(out_i, out_l) > 0.85
        # the check can fail: a label flipped without its image disagrees almost everywhere
        if len(np.unique(out_l[:, :32])) > 1 or len(np.unique(out_l[:, 32:])) > 1:
            assert _consistent(out_i, out_l[:, ::-1].copy()) < 0.8


def test_presets_and_bad_configs():
    for name in T.PRESETS:
        assert T.build_transform(name) is not None
    t = T.build_transform({'preset': 'regseg_cityscapes', 'crop': [32, 32]})
    image, label = _pair(300, 600)
    out_i, out_l = t(image, label, np.random.default_rng(0))
    assert out_l.shape == (32, 32)
    assert T.build_transform(None) is None
    with pytest.raises(SegRosError):
        T.build_transform('nope')
    with pytest.raises(SegRosError):
        T.build_transform({'zoom': 2})
    with pytest.raises(SegRosError):
        T.RandAugment(ops=['solarize'])
    with pytest.raises(SegRosError):
        t(image.astype(np.float32), label, np.random.default_rng(0))
