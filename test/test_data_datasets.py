"""Dataset loaders on tiny fixture folders in the Cityscapes, CamVid and folder layouts."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from seg_ros.data.datasets import CITYSCAPES_LABEL_TO_TRAIN, build_dataset, cityscapes_lut
from seg_ros.errors import SegRosError


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _write_label(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), label)


def _rgb(seed: int, h: int = 8, w: int = 12) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _cityscapes(root: Path, train_ids: bool = False) -> dict[str, np.ndarray]:
    """Two cities in train, one in val; labelIds cover every id 0..33 and -1 (255)."""
    ids = np.array(list(range(34)) + [255] * 2, np.uint8)  # 36 values
    written = {}
    for split, city, n in (('train', 'bremen', 2), ('train', 'aachen', 1), ('val', 'lindau', 1)):
        for k in range(n):
            stem = f'{city}_{k:06d}_000019'
            rgb = _rgb(len(written))
            lab = np.roll(ids, len(written)).reshape(3, 12)
            lab = np.repeat(lab, 3, axis=0)[:8]
            _write_rgb(root / 'leftImg8bit' / split / city / f'{stem}_leftImg8bit.png', rgb)
            gt = root / 'gtFine' / split / city
            _write_label(gt / f'{stem}_gtFine_labelIds.png', lab)
            if train_ids:
                _write_label(gt / f'{stem}_gtFine_labelTrainIds.png', cityscapes_lut()[lab])
            written[stem] = (rgb, lab)
    return written


def test_cityscapes_lut_is_the_official_mapping():
    lut = cityscapes_lut()
    assert lut[7] == 0 and lut[8] == 1 and lut[26] == 13 and lut[33] == 18
    for ignored in (0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30, 255):
        assert lut[ignored] == 255
    assert sorted(CITYSCAPES_LABEL_TO_TRAIN.values()) == list(range(19))


@pytest.mark.parametrize('train_ids', [False, True])
def test_cityscapes_layout(tmp_path, train_ids):
    written = _cityscapes(tmp_path, train_ids)
    ds = build_dataset('cityscapes', tmp_path, 'train')
    assert len(ds) == 3 and ds.num_classes == 19
    # sorted: aachen before bremen
    assert [p.parent.name for p, _ in ds.items] == ['aachen', 'bremen', 'bremen']
    for i, (img_path, lab_path) in enumerate(ds.items):
        assert lab_path.name.endswith('labelTrainIds.png' if train_ids else 'labelIds.png')
        stem = img_path.name[:-len('_leftImg8bit.png')]
        rgb, lab = written[stem]
        image, label = ds[i]
        assert image.dtype == np.uint8 and image.shape == (8, 12, 3)
        assert np.array_equal(image, rgb)
        assert np.array_equal(label, cityscapes_lut()[lab])
        assert set(np.unique(label).tolist()) <= set(range(19)) | {255}
    assert len(build_dataset('cityscapes', tmp_path, 'train+val')) == 4
    assert len(build_dataset('cityscapes', tmp_path, 'trainval')) == 4


def test_cityscapes_errors(tmp_path):
    with pytest.raises(SegRosError, match='not a folder'):
        build_dataset('cityscapes', tmp_path / 'nope', 'train')
    _cityscapes(tmp_path)
    with pytest.raises(SegRosError, match='test'):
        build_dataset('cityscapes', tmp_path, 'test')
    victim = next((tmp_path / 'gtFine' / 'train' / 'bremen').glob('*_labelIds.png'))
    victim.unlink()
    with pytest.raises(SegRosError, match='no label for'):
        build_dataset('cityscapes', tmp_path, 'train')


def test_cityscapes_size_mismatch(tmp_path):
    _cityscapes(tmp_path)
    lab = next((tmp_path / 'gtFine' / 'val' / 'lindau').glob('*_labelIds.png'))
    _write_label(lab, np.zeros((4, 4), np.uint8))
    ds = build_dataset('cityscapes', tmp_path, 'val')
    with pytest.raises(SegRosError, match='label'):
        ds[0]


def _camvid(root: Path) -> dict[str, np.ndarray]:
    out = {}
    for split, n in (('train', 3), ('val', 1), ('test', 2)):
        for k in range(n):
            name = f'0001TP_{split}_{k:04d}'
            rgb = _rgb(len(out))
            lab = (np.arange(96).reshape(8, 12) + len(out)) % 13  # 0..12: 11, 12 -> ignore
            _write_rgb(root / split / f'{name}.png', rgb)
            _write_label(root / f'{split}annot' / f'{name}.png', lab.astype(np.uint8))
            out[name] = (rgb, lab)
    return out


def test_camvid_layout(tmp_path):
    written = _camvid(tmp_path)
    ds = build_dataset('camvid', tmp_path, 'train')
    assert len(ds) == 3 and ds.num_classes == 11 and ds.class_names[0] == 'sky'
    for i, (img_path, _) in enumerate(ds.items):
        rgb, lab = written[img_path.stem]
        image, label = ds[i]
        assert np.array_equal(image, rgb)
        expected = np.where(lab <= 10, lab, 255)
        assert np.array_equal(label, expected)
    assert len(build_dataset('camvid', tmp_path, 'train+val')) == 4
    assert len(build_dataset('camvid', tmp_path, 'test')) == 2


def test_camvid_mismatched_pairs(tmp_path):
    _camvid(tmp_path)
    next((tmp_path / 'testannot').glob('*.png')).unlink()
    with pytest.raises(SegRosError, match='without a label'):
        build_dataset('camvid', tmp_path, 'test')
    _write_label(tmp_path / 'valannot' / 'stray.png', np.zeros((8, 12), np.uint8))
    with pytest.raises(SegRosError, match='without an image'):
        build_dataset('camvid', tmp_path, 'val')
    (tmp_path / 'trainannot').rename(tmp_path / 'annot_moved')
    with pytest.raises(SegRosError, match='trainannot'):
        build_dataset('camvid', tmp_path, 'train')


def _folder(root: Path, n: int = 3, classes: int = 4) -> None:
    for k in range(n):
        _write_rgb(root / 'images' / f'{k:06d}.jpg', _rgb(k))
        lab = np.full((8, 12), k % classes, np.uint8)
        lab[0] = 255
        _write_label(root / 'masks' / f'{k:06d}.png', lab)
    (root / 'classes.yaml').write_text(yaml.safe_dump(
        {'classes': [{'name': f'c{i}', 'color': [i, i, i]} for i in range(classes)]}))


def test_folder_layout(tmp_path):
    _folder(tmp_path)
    ds = build_dataset('folder', tmp_path, 'train')
    assert len(ds) == 3 and ds.class_names == ['c0', 'c1', 'c2', 'c3']
    image, label = ds[2]
    assert image.shape == (8, 12, 3) and label[1, 0] == 2 and label[0, 0] == 255
    # split subfolders win over the flat layout
    _folder(tmp_path / 'val', n=1)
    assert len(build_dataset('folder', tmp_path, 'val')) == 1


def test_folder_errors(tmp_path):
    _folder(tmp_path, classes=2)
    _write_label(tmp_path / 'masks' / '000001.png', np.full((8, 12), 7, np.uint8))
    ds = build_dataset('folder', tmp_path, 'train')
    with pytest.raises(SegRosError, match='outside'):
        ds[1]
    (tmp_path / 'classes.yaml').unlink()
    with pytest.raises(SegRosError, match='classes.yaml'):
        build_dataset('folder', tmp_path, 'train')
    with pytest.raises(SegRosError, match='unknown dataset kind'):
        build_dataset('kitti', tmp_path, 'train')


def test_folder_reads_what_synth_writes(tmp_path):
    from seg_ros.data.synthetic import SyntheticDrive, write_dataset

    write_dataset(tmp_path, 2, size=(32, 64), seed=1)
    ds = build_dataset('folder', tmp_path, 'train')
    assert ds.num_classes == 19 and len(ds) == 2
    assert np.array_equal(ds[1][1], SyntheticDrive((32, 64), seed=1).frame(1)[1])


def test_synthetic_splits_and_transform_rng(tmp_path):
    seen = []

    def transform(image, label, rng):
        seen.append(int(rng.integers(1 << 30)))
        return image[:, ::-1], label[:, ::-1]

    tr = build_dataset('synthetic', None, 'train', transform=transform, size=(32, 64), length=4)
    va = build_dataset('synthetic', None, 'val', size=(32, 64), length=2)
    assert len(tr) == 4 and len(va) == 2 and tr.num_classes == 19
    assert not np.array_equal(tr.load(0)[1], va.load(0)[1])
    a = tr[1]
    b = tr[1]
    assert np.array_equal(a[1], b[1]) and seen[0] == seen[1]   # same epoch, same draw
    tr.set_epoch(1)
    tr[1]
    assert seen[2] != seen[0]
    assert np.array_equal(a[1], tr.load(1)[1][:, ::-1])
    with pytest.raises(SegRosError):
        build_dataset('synthetic', None, 'holdout')
