"""Class-uniform sampling (Zhu et al., "Improving Semantic Segmentation via Video Propagation
and Label Relaxation", used by RegSeg with percent 0.5 and by SFNet-Lite as class-balanced
sampling).

Once per dataset, every label is cut into tiles (1024 px, as in the reference implementation)
and, for each class present in a tile, one pixel of that class near the class's centroid in
the tile is stored. The centroid table is cached on disk (JSON, written atomically) under a key
of the dataset's file list, so it is computed once and shared by all runs and DDP ranks.

Each epoch, :class:`ClassUniformDataset` plans ``len(base)`` samples from a generator seeded by
``(seed, epoch)``: a fraction ``1 - percent`` are ordinary images (random crop), and ``percent``
are split evenly over the classes: pick a class, pick one of its stored centroids, crop a
window that contains it. Rare classes (poles, signs, riders) are seen far more often.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from seg_ros.data.transforms import Compose, RandomCrop
from seg_ros.errors import SegRosError
from seg_ros.fileio import atomic_write_text

log = logging.getLogger(__name__)

CACHE_VERSION = 1
Centroids = dict[int, list[tuple[int, int, int]]]   # class -> [(sample index, row, col)]


def dataset_fingerprint(dataset: Any) -> str:
    """A key that changes when the dataset's samples change.

    File datasets: label paths, sizes and modification times. Generated datasets (synthetic,
    toy): their ``repr``, which names seed, size and length.
    """
    h = hashlib.sha256()
    h.update(type(dataset).__name__.encode())
    items = getattr(dataset, 'items', None)
    if items is not None:
        for _, lab in items:
            st = Path(lab).stat()
            h.update(f'{Path(lab).resolve()}|{st.st_size}|{st.st_mtime_ns}\n'.encode())
        lut = getattr(dataset, 'label_lut', None)
        if lut is not None:
            h.update(np.asarray(lut).tobytes())
    else:
        h.update(repr(dataset).encode())
    return h.hexdigest()


def label_centroids(label: np.ndarray, num_classes: int, tile_size: int = 1024,
                    stride: int = 2) -> list[tuple[int, int, int]]:
    """``(class, row, col)`` for every class in every tile of one label.

    The stored pixel is the class pixel closest to the class's centroid within the tile, so it
    lies on the class even for thin or split shapes. The search runs on every ``stride``-th
    pixel (coordinates are returned at full resolution).
    """
    out: list[tuple[int, int, int]] = []
    h, w = label.shape
    for ty in range(0, h, tile_size):
        for tx in range(0, w, tile_size):
            tile = label[ty:ty + tile_size:stride, tx:tx + tile_size:stride]
            present = np.bincount(tile.ravel(), minlength=256)[:num_classes]
            for c in np.nonzero(present)[0].tolist():
                ys, xs = np.nonzero(tile == c)
                cy, cx = ys.mean(), xs.mean()
                k = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
                out.append((c, ty + int(ys[k]) * stride, tx + int(xs[k]) * stride))
    return out


def compute_centroids(dataset: Any, num_classes: int, tile_size: int = 1024,
                      progress: bool = True) -> Centroids:
    """Scan every label of ``dataset`` (``dataset.load_label(i)``) for class centroids."""
    cents: Centroids = {c: [] for c in range(num_classes)}
    it: Any = range(len(dataset))
    if progress:
        from seg_ros.progress import progress_bar
        it = progress_bar(it, desc='class centroids', unit='label')
    for i in it:
        for c, y, x in label_centroids(dataset.load_label(i), num_classes, tile_size):
            cents[c].append((i, y, x))
    return cents


def load_or_compute_centroids(dataset: Any, num_classes: int, cache_path: str | Path | None,
                              tile_size: int = 1024, progress: bool = True) -> Centroids:
    """Centroids from the cache file when its key matches, else computed and cached.

    A missing, corrupt or stale cache (other files, classes or tile size) is recomputed and
    replaced atomically (temporary file + fsync + rename), so a reader never sees half a file.
    """
    key = {'version': CACHE_VERSION, 'fingerprint': dataset_fingerprint(dataset),
           'num_classes': int(num_classes), 'tile_size': int(tile_size), 'length': len(dataset)}
    path = Path(cache_path) if cache_path is not None else None
    if path is not None and path.is_file():
        try:
            data = json.loads(path.read_text())
            if data.get('key') == key:
                return {int(c): [tuple(v) for v in lst]  # type: ignore[misc]
                        for c, lst in data['centroids'].items()}
            log.info('class-uniform cache %s is stale: recomputing', path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning('class-uniform cache %s unreadable (%s): recomputing', path, exc)
    cents = compute_centroids(dataset, num_classes, tile_size, progress)
    if path is not None:
        atomic_write_text(path, json.dumps(
            {'key': key, 'centroids': {str(c): v for c, v in cents.items()}},
            separators=(',', ':')))
    return cents


class ClassUniformDataset:
    """Wrap a dataset so that a fraction of each epoch's crops is centred on uniformly chosen
    classes.

    Args:
        base: a dataset with ``load(i) -> (image, label)`` and ``load_label(i)`` (any dataset
            of :mod:`seg_ros.data.datasets`; its own ``transform`` is not used).
        transform: the training :class:`~seg_ros.data.transforms.Compose`; it must contain a
            :class:`~seg_ros.data.transforms.RandomCrop` (the crop is placed around the
            centroid, after the scale transforms moved it).
        percent: fraction of class-uniform samples per epoch (0.5 in RegSeg).
        cache_path: JSON centroid cache; None keeps it in memory only.
        tile_size: tile size of the centroid search.
        seed: seed of the epoch plans and of the per-sample augmentation generators.
        progress: tqdm progress while computing centroids.
    """

    def __init__(self, base: Any, transform: Compose, percent: float = 0.5,
                 cache_path: str | Path | None = None, tile_size: int = 1024, seed: int = 0,
                 progress: bool = True) -> None:
        if not 0.0 <= percent <= 1.0:
            raise SegRosError(f'class-uniform percent must be in [0, 1], got {percent}')
        if not isinstance(transform, Compose) or not any(
                isinstance(t, RandomCrop) for t in transform.transforms):
            raise SegRosError('class-uniform sampling needs a transform Compose with a '
                              'RandomCrop (the crop is what gets centred on a class)')
        self.base = base
        self.transform = transform
        self.percent = float(percent)
        self.seed = int(seed)
        self.class_names = base.class_names
        self.palette = base.palette
        self.ignore_index = base.ignore_index
        self.centroids = load_or_compute_centroids(base, self.num_classes, cache_path,
                                                   tile_size, progress)
        self.epoch = 0
        self.plan = self._plan(0)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        """Draw the sample plan of ``epoch`` (same on every rank and after a resume)."""
        self.epoch = int(epoch)
        self.plan = self._plan(self.epoch)

    def _plan(self, epoch: int) -> list[tuple[int, int, tuple[int, int] | None]]:
        """``len(base)`` entries ``(sample index, class or -1, centre or None)``."""
        rng = np.random.default_rng([self.seed, epoch, 0xC1A55])
        n = len(self.base)
        classes = [c for c, lst in sorted(self.centroids.items()) if lst]
        n_uniform = int(round(n * self.percent)) if classes else 0
        plan: list[tuple[int, int, tuple[int, int] | None]] = [
            (int(i), -1, None) for i in rng.permutation(n)[:n - n_uniform]]
        if n_uniform:
            # classes take turns in a random order, so each gets n_uniform / K (+-1) samples
            order = np.resize(rng.permutation(classes), n_uniform)
            for c in order.tolist():
                lst = self.centroids[c]
                idx, y, x = lst[int(rng.integers(len(lst)))]
                plan.append((int(idx), int(c), (int(y), int(x))))
        perm = rng.permutation(len(plan))
        return [plan[k] for k in perm]

    def __getitem__(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        idx, _, center = self.plan[k]
        image, label = self.base.load(idx)
        rng = np.random.default_rng([self.seed, self.epoch, int(k)])
        return self.transform(image, label, rng,
                              center=None if center is None else (float(center[0]),
                                                                  float(center[1])))

    def class_of(self, k: int) -> int:
        """The class sample ``k`` of this epoch is centred on (-1: an ordinary sample)."""
        return self.plan[k][1]

    def __repr__(self) -> str:
        return f'ClassUniformDataset({self.base!r}, percent={self.percent})'
