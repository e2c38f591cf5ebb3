"""Every frame of a data set made once and kept in memory (``data.preload: true``).

A synthetic frame costs ~35 ms to render in random order (the world segments in view are
rebuilt) but ~8 ms in order, and a short CPU training run visits each frame about six times:
rendering in the DataLoader worker took as much CPU time as the forward and backward passes on
a 2-core machine. :class:`PreloadedDataset` renders (or decodes) every sample once, in order,
into two arrays before training; the DataLoader workers, forked later, share those pages
copy-on-write, so the memory is paid once per rank.

The transform still runs per sample with a generator seeded by ``(seed, epoch, index)``
(:class:`~seg_ros.data.base.AugmentedDataset`), so runs stay reproducible and resumable.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from seg_ros.data.base import AugmentedDataset, Transform
from seg_ros.errors import SegRosError

log = logging.getLogger(__name__)

__all__ = ['PreloadedDataset', 'available_memory']

# a preload may take at most this share of the memory that is available when it starts
MEMORY_SHARE = 0.5


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux ``MemAvailable``), None if unknown."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    except (ValueError, OSError, AttributeError):
        return None


class PreloadedDataset(AugmentedDataset):
    """All samples of ``base`` in two uint8 arrays, with a per-sample transform.

    Args:
        base: a dataset with ``load(i) -> (image, label)`` whose samples all have one size
            (synthetic drives, the toy set, a folder of equal-size frames).
        transform: applied in ``__getitem__`` (the base's own transform is not used).
        seed: seed of the per-sample augmentation generators.
        progress: tqdm progress while loading.

    Raises:
        SegRosError: samples of different sizes, or more memory than half of what is
            available (Cityscapes at full resolution needs ~25 GB: load it from disk).
    """

    def __init__(self, base: Any, transform: Transform | None = None, seed: int = 0,
                 progress: bool = True) -> None:
        n = len(base)
        if n < 1:
            raise SegRosError('cannot preload an empty data set')
        image, label = base.load(0)
        need = n * (image.nbytes + label.nbytes)
        avail = available_memory()
        if avail is not None and need > MEMORY_SHARE * avail:
            raise SegRosError(f'data.preload needs {need / 2**30:.1f} GiB for {n} samples, '
                              f'more than half of the {avail / 2**30:.1f} GiB available; '
                              f'set data.preload: false')
        self.base = base
        self.images = np.empty((n, *image.shape), np.uint8)
        self.labels = np.empty((n, *label.shape), np.uint8)
        it: Any = range(n)
        if progress:
            from seg_ros.progress import progress_bar
            it = progress_bar(it, desc='preload', unit='frame')
        for i in it:
            if i:
                image, label = base.load(i)
            if image.shape != self.images.shape[1:] or label.shape != self.labels.shape[1:]:
                raise SegRosError(f'data.preload needs samples of one size: sample {i} is '
                                  f'{image.shape[0]}x{image.shape[1]}, sample 0 is '
                                  f'{self.images.shape[1]}x{self.images.shape[2]} (HxW)')
            self.images[i] = image
            self.labels[i] = label
        log.info('preloaded %d samples (%.2f GiB)', n, need / 2**30)
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0
        self.class_names = list(base.class_names)
        self.palette = [list(c) for c in base.palette]
        self.ignore_index = base.ignore_index

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` without the transform (copies: transforms may write in place)."""
        self.check_index(index)
        return self.images[index].copy(), self.labels[index].copy()

    def load_label(self, index: int) -> np.ndarray:
        self.check_index(index)
        return self.labels[index]

    def __repr__(self) -> str:
        # the class-uniform centroid cache is keyed by repr: same samples, same key
        return repr(self.base)
