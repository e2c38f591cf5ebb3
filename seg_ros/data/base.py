"""Mechanics every seg_ros dataset shares: epochs, per-sample augmentation generators, indexing.

Each sample's augmentation draws come from a generator seeded by ``(seed, epoch, index)``, so
they do not depend on which DataLoader worker loads the sample or on a resume in mid-epoch.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

Transform = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


class AugmentedDataset:
    """Base class: ``ds[i] = transform(*load(i), rng_for(i))``.

    Subclasses set ``seed``, ``epoch``, ``transform`` and ``class_names`` and implement
    ``__len__`` and ``load``; ``load_label`` may be overridden when a label is cheaper alone.
    """

    seed: int = 0
    epoch: int = 0
    transform: Transform | None = None
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(class_names)``)."""
        return len(self.class_names)

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` (RGB uint8 image, uint8 label) without the transform."""
        raise NotImplementedError

    def check_index(self, index: int) -> None:
        """Raise IndexError for an index outside ``0..len-1``."""
        if not 0 <= index < len(self):
            raise IndexError(f'index {index} out of range for {len(self)} samples')

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation draws ``__getitem__`` returns."""
        self.epoch = int(epoch)

    def rng_for(self, index: int) -> np.random.Generator:
        """The generator the transform of sample ``index`` gets in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def load_label(self, index: int) -> np.ndarray:
        """Only the label of sample ``index`` (what class-uniform sampling scans)."""
        return self.load(index)[1]

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, label = self.load(index)
        if self.transform is not None:
            image, label = self.transform(image, label, self.rng_for(index))
        return image, label
