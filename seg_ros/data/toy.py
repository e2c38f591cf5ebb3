"""RegSeg's thin-rectangle toy task (regseg.txt Sec. 3.6, Fig. 6).

Each image holds vertical rectangles of full image height and small widths. A rectangle's
class is visible only in a short cue at its *bottom*; the rest of the rectangle looks the
same for every class. The label marks the whole rectangle with its class, so a network must
carry the bottom cue up the full height of the image: it needs a field of view as tall as the
image *and* enough resolution to keep thin rectangles apart. RegSeg (dilated, 1/16) solves it
down to width 16 and fails at width 8; downsampling designs (DDRNet, PSPNet) fail entirely.

``ThinRectangles(size=1024, seed=0).sample(i) -> (rgb, label)`` is a pure function of
``(seed, i)``; :meth:`ThinRectangles.sample_with_widths` also returns each pixel's rectangle
width so that accuracy can be reported per width (:func:`accuracy_per_width`), as in the
paper's figure.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from seg_ros.data.base import AugmentedDataset
from seg_ros.errors import SegRosError
from seg_ros.metadata import IGNORE_INDEX

# cue colours of the rectangle classes (class 0 is the background)
_CUE_COLOURS = ((230, 40, 40), (40, 200, 60), (50, 90, 240), (240, 210, 40), (200, 60, 220),
                (40, 210, 220), (250, 140, 30), (140, 90, 40))


class ThinRectangles:
    """Generator of the thin-rectangle toy task.

    Args:
        size: image side (square images, 1024 in the paper) or ``(height, width)``.
        seed: dataset seed.
        widths: rectangle widths in pixels to draw from.
        num_rect_classes: number of rectangle classes (cue colours), 1..8; the label has
            ``num_rect_classes + 1`` classes with 0 = background.
        cue_height: height of the class cue at the bottom of each rectangle (pixels);
            default 1/16 of the image height.
        rects_per_image: ``(min, max)`` number of rectangles per image.
        noise: standard deviation of the pixel noise.
    """

    def __init__(self, size: int | tuple[int, int] = 1024, seed: int = 0,
                 widths: tuple[int, ...] = (8, 16, 32, 64), num_rect_classes: int = 3,
                 cue_height: int | None = None, rects_per_image: tuple[int, int] = (4, 10),
                 noise: float = 6.0) -> None:
        h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if h < 16 or w < 16:
            raise SegRosError(f'toy image size must be at least 16x16, got {h}x{w}')
        if not 1 <= num_rect_classes <= len(_CUE_COLOURS):
            raise SegRosError(f'num_rect_classes must be 1..{len(_CUE_COLOURS)}, '
                              f'got {num_rect_classes}')
        if not widths or min(widths) < 1 or max(widths) * 2 > w:
            raise SegRosError(f'rectangle widths must be >= 1 and at most half the image width '
                              f'({w}), got {widths}')
        lo, hi = rects_per_image
        if lo < 1 or hi < lo:
            raise SegRosError(f'rects_per_image must be (min >= 1, max >= min), got '
                              f'{rects_per_image}')
        self.size = (h, w)
        self.seed = int(seed)
        self.widths = tuple(int(x) for x in widths)
        self.num_rect_classes = int(num_rect_classes)
        self.cue_height = int(cue_height) if cue_height else max(h // 16, 2)
        if not 1 <= self.cue_height < h:
            raise SegRosError(f'cue_height must be in 1..{h - 1}, got {self.cue_height}')
        self.rects_per_image = (int(lo), int(hi))
        self.noise = float(noise)

    @property
    def num_classes(self) -> int:
        return self.num_rect_classes + 1

    @property
    def class_names(self) -> list[str]:
        return ['background'] + [f'rect{k}' for k in range(1, self.num_classes)]

    @property
    def palette(self) -> list[list[int]]:
        return [[0, 0, 0]] + [list(c) for c in _CUE_COLOURS[:self.num_rect_classes]]

    def sample(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``i``: ``(rgb (H, W, 3) uint8, label (H, W) uint8)``."""
        rgb, label, _ = self.sample_with_widths(i)
        return rgb, label

    def sample_with_widths(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image ``i`` plus a ``(H, W)`` uint16 map of each pixel's rectangle width (0: none)."""
        if i < 0:
            raise SegRosError(f'sample index must be >= 0, got {i}')
        h, w = self.size
        rng = np.random.default_rng([self.seed, int(i), 0x7079])
        bg = rng.integers(20, 80, 3)
        body = np.clip(bg + rng.choice([-1, 1]) * rng.integers(50, 110), 0, 255)
        row_rgb = np.empty((w, 3), np.int16)
        row_rgb[:] = bg
        cue_rgb = row_rgb.copy()
        row_lab = np.zeros(w, np.uint8)
        row_width = np.zeros(w, np.uint16)
        n = int(rng.integers(self.rects_per_image[0], self.rects_per_image[1] + 1))
        taken = np.zeros(w, bool)
        for _ in range(n):
            width = int(rng.choice(self.widths))
            # a free slot with at least one background column on each side
            for _attempt in range(20):
                x0 = int(rng.integers(0, w - width + 1))
                a, b = max(x0 - 2, 0), min(x0 + width + 2, w)
                if not taken[a:b].any():
                    break
            else:
                continue
            cls = int(rng.integers(1, self.num_classes))
            taken[x0:x0 + width] = True
            # every rectangle body has the same colour: only the bottom cue tells the class
            row_rgb[x0:x0 + width] = body
            cue_rgb[x0:x0 + width] = np.asarray(_CUE_COLOURS[cls - 1]) * rng.uniform(0.85, 1.0)
            row_lab[x0:x0 + width] = cls
            row_width[x0:x0 + width] = width
        img = np.empty((h, w, 3), np.int16)
        img[:] = row_rgb[None]
        img[h - self.cue_height:] = cue_rgb[None]
        img += rng.normal(0, self.noise, (h, w, 1)).astype(np.int16)
        rgb = np.clip(img, 0, 255).astype(np.uint8)
        label = np.broadcast_to(row_lab[None], (h, w)).copy()
        widths = np.broadcast_to(row_width[None], (h, w)).copy()
        return rgb, label, widths


class ThinRectanglesDataset(AugmentedDataset):
    """``length`` samples of :class:`ThinRectangles` with the dataset interface of
    :mod:`seg_ros.data.datasets` (``ds[i] -> (image, label)``, ``class_names``, ``set_epoch``)."""

    name = 'toy'

    def __init__(self, length: int, transform: Callable[..., tuple[np.ndarray, np.ndarray]]
                 | None = None, aug_seed: int = 0, **kw: Any) -> None:
        if length < 1:
            raise SegRosError(f'toy dataset length must be >= 1, got {length}')
        self.gen = ThinRectangles(**kw)
        self.length = int(length)
        self.transform = transform
        self.seed = int(aug_seed)
        self.epoch = 0
        self.class_names = self.gen.class_names
        self.palette = self.gen.palette
        self.ignore_index = IGNORE_INDEX

    @property
    def num_classes(self) -> int:
        return self.gen.num_classes

    def __len__(self) -> int:
        return self.length

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` without the transform."""
        self.check_index(index)
        return self.gen.sample(index)

    def __repr__(self) -> str:
        # also the key of the class-uniform centroid cache: name everything that shapes it
        g = self.gen
        return (f'ThinRectanglesDataset(length={self.length}, size={g.size}, seed={g.seed}, '
                f'widths={g.widths}, classes={g.num_rect_classes}, cue={g.cue_height}, '
                f'rects={g.rects_per_image}, noise={g.noise})')


def accuracy_per_width(pred: np.ndarray, label: np.ndarray,
                       widths: np.ndarray) -> dict[int, float]:
    """Pixel accuracy of the rectangles grouped by rectangle width (the paper's Fig. 6 view).

    Args:
        pred: predicted class ids.
        label: ground truth from :meth:`ThinRectangles.sample_with_widths`.
        widths: the width map from the same call.

    Returns:
        ``{width: fraction of that width's rectangle pixels predicted with the right class}``
        for every width present, and ``0``: fraction of background pixels predicted as
        background.
    """
    if pred.shape != label.shape or widths.shape != label.shape:
        raise SegRosError('pred, label and widths must have the same shape')
    out: dict[int, float] = {}
    for width in np.unique(widths).tolist():
        m = widths == width
        out[int(width)] = float((pred[m] == label[m]).mean())
    return out
