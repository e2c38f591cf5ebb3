"""Class-uniform sampling: centroids on the class, cache on disk, uniform class plan."""
from __future__ import annotations

import json

import numpy as np
import pytest

from seg_ros.data.sampling import ClassUniformDataset, label_centroids, load_or_compute_centroids
from seg_ros.data.transforms import Compose, RandomCrop, RandomHorizontalFlip, RandomScale
from seg_ros.errors import SegRosError


class _Tiny:
    """8 images; class 2 (a thin pole) appears only in image 5."""

    class_names = ['a', 'b', 'pole']
    palette = [[0, 0, 0], [1, 1, 1], [2, 2, 2]]
    ignore_index = 255

    def __init__(self) -> None:
        self.loads = 0

    def __len__(self) -> int:
        return 8

    def load_label(self, i: int) -> np.ndarray:
        lab = np.zeros((64, 96), np.uint8)
        lab[:, 48:] = 1
        lab[10:20, 5:15] = 255
        if i == 5:
            lab[5:60, 70:72] = 2
        return lab

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        self.loads += 1
        lab = self.load_label(i)
        return np.dstack([lab] * 3), lab

    def __repr__(self) -> str:
        return '_Tiny(v1)'


def test_label_centroids_lie_on_their_class():
    lab = np.zeros((100, 100), np.uint8)
    lab[:, 10:12] = 3          # two thin poles: the plain centroid would fall between them
    lab[:, 88:90] = 3
    lab[50:, :] = 1
    cents = label_centroids(lab, 4, tile_size=1024, stride=1)
    for c, y, x in cents:
        assert lab[y, x] == c
    assert {c for c, _, _ in cents} == {0, 1, 3}


def test_cache_written_atomically_and_reused(tmp_path):
    ds = _Tiny()
    path = tmp_path / 'cache' / 'centroids.json'
    a = load_or_compute_centroids(ds, 3, path, progress=False)
    assert path.is_file() and not list(path.parent.glob('*.tmp'))
    assert a[2] and all(i == 5 for i, _, _ in a[2])
    data = json.loads(path.read_text())
    data['centroids']['2'] = [[5, 1, 1]]            # a marker: is the file read back?
    path.write_text(json.dumps(data))
    assert load_or_compute_centroids(ds, 3, path, progress=False)[2] == [(5, 1, 1)]
    # another key (class count) -> recomputed and replaced
    b = load_or_compute_centroids(ds, 2, path, progress=False)
    assert set(b) == {0, 1}
    path.write_text('{not json')
    assert load_or_compute_centroids(ds, 3, path, progress=False)[2] == a[2]


def test_epoch_plan_is_class_uniform_and_deterministic(tmp_path):
    t = Compose([RandomScale(factor=(1.0, 1.0)), RandomCrop((16, 16)),
                 RandomHorizontalFlip(0.5)])
    ds = ClassUniformDataset(_Tiny(), t, percent=0.5, cache_path=tmp_path / 'c.json',
                             progress=False)
    assert len(ds) == 8
    classes = [ds.class_of(k) for k in range(8)]
    assert classes.count(-1) == 4
    assert sorted(c for c in classes if c >= 0) in ([0, 0, 1, 2], [0, 1, 1, 2], [0, 1, 2, 2])
    ds2 = ClassUniformDataset(_Tiny(), t, percent=0.5, cache_path=tmp_path / 'c.json',
                              progress=False)
    assert ds.plan == ds2.plan
    ds.set_epoch(3)
    ds2.set_epoch(3)
    assert ds.plan == ds2.plan
    # a crop centred on the rare class contains it
    for epoch in range(6):
        ds.set_epoch(epoch)
        for k in range(8):
            image, label = ds[k]
            assert label.shape == (16, 16)
            if ds.class_of(k) == 2:
                assert (label == 2).any()
            img2, lab2 = ds[k]
            assert np.array_equal(label, lab2)                  # deterministic per sample


def test_rare_class_is_oversampled():
    t = Compose([RandomCrop((16, 16))])
    ds = ClassUniformDataset(_Tiny(), t, percent=0.5, progress=False)
    hits = 0
    for epoch in range(10):
        ds.set_epoch(epoch)
        hits += sum((ds[k][1] == 2).any() for k in range(8))
    # without class-uniform sampling the pole is in ~1/8 images and a crop rarely hits it
    assert hits >= 10


def test_needs_a_crop():
    with pytest.raises(SegRosError, match='RandomCrop'):
        ClassUniformDataset(_Tiny(), Compose([RandomHorizontalFlip()]), progress=False)
    with pytest.raises(SegRosError):
        ClassUniformDataset(_Tiny(), Compose([RandomCrop(8)]), percent=1.5, progress=False)


def test_build_training_dataset_with_class_uniform(tmp_path):
    from seg_ros.data.datasets import build_training_dataset

    ds = build_training_dataset('synthetic', None, 'train',
                                augment={'crop': [32, 48], 'hflip': 0.5}, class_uniform=0.5,
                                cache_dir=tmp_path, size=(48, 96), length=6, stride=40)
    assert isinstance(ds, ClassUniformDataset) and len(ds) == 6
    assert (tmp_path / 'synthetic_train_centroids.json').is_file()
    image, label = ds[0]
    assert image.shape == (32, 48, 3) and label.shape == (32, 48)
    plain = build_training_dataset('synthetic', None, 'train', augment='eseg_cityscapes',
                                   size=(48, 96), length=2)
    assert plain[0][1].shape == (512, 1024)        # ESeg crop pads the small frames with 255
    assert (plain[0][1] == 255).mean() > 0.9
