"""data.preload: frames made once, the same samples and augmentation draws as on the fly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from seg_ros.data import preload
from seg_ros.data.datasets import build_dataset
from seg_ros.data.preload import PreloadedDataset
from seg_ros.data.transforms import build_transform
from seg_ros.errors import SegRosError
from seg_ros.models.checkpoint import load_checkpoint
from seg_ros.train.config import load_config
from seg_ros.train.loop import train

AUG = {'scale': {'factor': [0.75, 1.25]}, 'crop': [32, 64], 'hflip': 0.5,
       'randaugment': {'num_ops': 2, 'magnitude': 0.2}}


def test_preloaded_samples_equal_the_rendered_ones():
    transform = build_transform(AUG)
    live = build_dataset('synthetic', None, 'train', transform=transform, seed=3,
                         size=[48, 96], length=5, stride=4)
    pre = PreloadedDataset(build_dataset('synthetic', None, 'train', size=[48, 96], length=5,
                                         stride=4), transform, seed=3, progress=False)
    assert len(pre) == 5 and pre.num_classes == live.num_classes
    assert repr(pre) == repr(build_dataset('synthetic', None, 'train', size=[48, 96],
                                           length=5, stride=4))
    for epoch in (0, 2):
        live.set_epoch(epoch)
        pre.set_epoch(epoch)
        for i in range(5):
            (a_img, a_lab), (b_img, b_lab) = live[i], pre[i]
            assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    # what a caller gets is a copy: a transform writing in place cannot change the store
    img, lab = pre.load(1)
    img[:] = 0
    lab[:] = 7
    assert np.array_equal(pre.load(1)[1], live.load(1)[1])
    assert pre.load(1)[0].any()
    with pytest.raises(IndexError):
        pre.load(5)


class _Mixed:
    class_names, palette, ignore_index = ['a'], [[0, 0, 0]], 255

    def __len__(self) -> int:
        return 2

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        h = 16 + 8 * i
        return np.zeros((h, 32, 3), np.uint8), np.zeros((h, 32), np.uint8)


def test_preload_refuses_mixed_sizes_and_too_much_memory(monkeypatch):
    with pytest.raises(SegRosError, match='one size'):
        PreloadedDataset(_Mixed(), progress=False)
    monkeypatch.setattr(preload, 'available_memory', lambda: 1000)
    with pytest.raises(SegRosError, match='data.preload needs'):
        PreloadedDataset(_Mixed(), progress=False)


def test_training_with_preload_gives_the_same_weights(tmp_path: Path):
    finals = []
    for flag in (False, True):
        name = f'pre_{flag}'
        cfg = {'name': name, 'out': str(tmp_path / name), 'progress': False,
               'tensorboard': False, 'model': {'name': 'regseg48'},
               'data': {'kind': 'synthetic', 'preload': flag, 'val_split': None, 'workers': 0,
                        'options': {'size': [48, 96], 'length': 4, 'stride': 9},
                        'augment': AUG},
               'optim': {'iterations': 3, 'batch_size': 2, 'lr': 0.02, 'threads': 1},
               'checkpoint': {'every': 0}}
        path = tmp_path / f'{name}.yaml'
        path.write_text(yaml.safe_dump(cfg))
        train(load_config(path))
        finals.append(load_checkpoint(tmp_path / name / 'final.pt')['state_dict'])
    a, b = finals
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
