"""RegSeg thin-rectangle toy task: the class cue is only at the bottom of each rectangle."""
from __future__ import annotations

import numpy as np
import pytest

from seg_ros.data.datasets import build_dataset
from seg_ros.data.toy import ThinRectangles, accuracy_per_width
from seg_ros.errors import SegRosError


def test_rectangles_span_the_full_height_and_cue_is_at_the_bottom():
    gen = ThinRectangles(128, seed=0, widths=(4, 8, 16), num_rect_classes=3)
    rgb, label, widths = gen.sample_with_widths(3)
    assert rgb.shape == (128, 128, 3) and label.dtype == np.uint8
    assert (label == label[0]).all()                      # columns: full-height rectangles
    assert set(np.unique(label).tolist()) - {0}
    assert set(np.unique(widths).tolist()) <= {0, 4, 8, 16}
    cue = gen.cue_height
    body = rgb[: 128 - cue].astype(int)
    fg = label[0] > 0
    # above the cue, all rectangle classes look the same (same mean colour up to noise)
    means = [body[:, label[0] == c].mean(axis=(0, 1)) for c in np.unique(label[0][fg])]
    assert max(np.abs(m - means[0]).max() for m in means) < 6
    # in the cue, different classes differ clearly
    cue_means = [rgb[128 - cue:, label[0] == c].astype(int).mean(axis=(0, 1))
                 for c in np.unique(label[0][fg])]
    if len(cue_means) > 1:
        assert max(np.abs(m - cue_means[0]).max() for m in cue_means) > 40


def test_deterministic_and_varied():
    a = ThinRectangles(64, seed=1, widths=(4, 8)).sample(5)
    b = ThinRectangles(64, seed=1, widths=(4, 8)).sample(5)
    c = ThinRectangles(64, seed=1, widths=(4, 8)).sample(6)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_accuracy_per_width():
    gen = ThinRectangles(64, seed=2, widths=(4, 8))
    _, label, widths = gen.sample_with_widths(0)
    acc = accuracy_per_width(label, label, widths)
    assert all(v == 1.0 for v in acc.values())
    bg_only = accuracy_per_width(np.zeros_like(label), label, widths)
    assert bg_only[0] == 1.0 and all(bg_only[k] == 0.0 for k in bg_only if k)


def test_dataset_kind_and_errors():
    ds = build_dataset('toy', None, 'train', size=64, length=3, widths=(4, 8))
    assert len(ds) == 3 and ds.num_classes == 4 and ds.class_names[0] == 'background'
    val = build_dataset('toy', None, 'val', size=64, length=3, widths=(4, 8))
    assert not np.array_equal(ds[0][1], val[0][1])
    with pytest.raises(SegRosError):
        ThinRectangles(64, widths=(40,))
    with pytest.raises(SegRosError):
        build_dataset('toy', None, 'train', colour='red')
