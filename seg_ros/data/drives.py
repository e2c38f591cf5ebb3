"""Several synthetic drives as one data set (``data.options.drives: N``).

Every :class:`~seg_ros.data.synthetic.SyntheticDrive` draws its own palette (road, sky,
buildings, lighting), so a model trained on one drive does not generalise to another: the
held-out split is a different drive (world). ``data.options.drives: N`` trains on N drives
(drive seeds ``drive_seed + split offset + k``) of ``length`` frames each.
"""
from __future__ import annotations

from bisect import bisect_right
from typing import Any

import numpy as np

from seg_ros.errors import SegRosError

__all__ = ['ConcatSegDataset', 'build_drives_dataset']


class ConcatSegDataset:
    """Concatenation of seg_ros datasets that keeps their interface (``set_epoch``, ``load``,
    ``load_label``, ``class_names``, ``palette``, ``num_classes``, ``ignore_index``).

    Sub-datasets are built lazily by ``factories`` (a drive allocates its textures on first
    use, in the worker process that needs it).
    """

    def __init__(self, factories: list[Any], lengths: list[int], class_names: list[str],
                 palette: list[list[int]], ignore_index: int = 255) -> None:
        if not factories or len(factories) != len(lengths):
            raise SegRosError('ConcatSegDataset needs one length per sub-dataset')
        self.factories = factories
        self.lengths = [int(n) for n in lengths]
        self.offsets = np.cumsum([0] + self.lengths).tolist()
        self.parts: list[Any] = [None] * len(factories)
        self.class_names = list(class_names)
        self.palette = [list(c) for c in palette]
        self.ignore_index = ignore_index
        self.epoch = 0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return self.offsets[-1]

    def _locate(self, index: int) -> tuple[Any, int]:
        if not 0 <= index < len(self):
            raise IndexError(f'index {index} out of range for {len(self)} samples')
        k = bisect_right(self.offsets, index) - 1
        if self.parts[k] is None:
            self.parts[k] = self.factories[k]()
            self.parts[k].set_epoch(self.epoch)
        return self.parts[k], index - self.offsets[k]

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch (augmentation draws) to every built part."""
        self.epoch = int(epoch)
        for p in self.parts:
            if p is not None:
                p.set_epoch(epoch)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        part, i = self._locate(index)
        return part.load(i)

    def load_label(self, index: int) -> np.ndarray:
        part, i = self._locate(index)
        return part.load_label(i)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        part, i = self._locate(index)
        return part[i]

    def __repr__(self) -> str:
        return f'ConcatSegDataset({len(self.lengths)} parts, {len(self)} samples)'


class _DriveFactory:
    """Picklable builder of one drive's dataset (DataLoader workers rebuild it lazily)."""

    def __init__(self, split: str, transform: Any, seed: int, options: dict[str, Any]) -> None:
        self.split, self.transform, self.seed, self.options = split, transform, seed, options

    def __call__(self) -> Any:
        from seg_ros.data.datasets import build_dataset
        return build_dataset('synthetic', None, self.split, transform=self.transform,
                             seed=self.seed, **self.options)


def build_drives_dataset(kind: str, root: str | None, split: str, transform: Any = None,
                         seed: int = 0, **options: Any) -> Any:
    """``build_dataset`` plus ``drives: N`` for synthetic data (N drives of ``length`` frames;
    each drive's augmentation seeded by ``seed + k``)."""
    from seg_ros.data.datasets import build_dataset

    options = dict(options)
    drives = options.pop('drives', None)
    if drives is None:
        return build_dataset(kind, root, split, transform=transform, seed=seed, **options)
    if kind != 'synthetic':
        raise SegRosError(f'data option "drives" is for synthetic data, not {kind}')
    drives = int(drives)
    if drives < 1:
        raise SegRosError(f'drives must be >= 1, got {drives}')
    base = int(options.pop('drive_seed', 0))
    length = int(options.get('length', 2000 if split == 'train' else 200))
    options['length'] = length
    factories = [_DriveFactory(split, transform, seed + k, {**options, 'drive_seed': base + k})
                 for k in range(drives)]
    from seg_ros.metadata import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
    return ConcatSegDataset(factories, [length] * drives, list(CITYSCAPES_CLASSES),
                            [list(c) for c in CITYSCAPES_PALETTE])
