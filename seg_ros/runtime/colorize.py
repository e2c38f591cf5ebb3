"""Class ids -> colours (a 256-entry LUT) and colour-over-image overlays.

Both are single OpenCV calls on uint8 data (``cv2.LUT``, ``cv2.addWeighted``): at 1024x2048
they cost about a millisecond each, which keeps post-processing a small fraction of inference.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from seg_ros.errors import SegRosError
from seg_ros.metadata import IGNORE_INDEX, load_palette

IGNORE_COLOR: tuple[int, int, int] = (0, 0, 0)


def palette_lut(palette: Sequence[Sequence[int]] | str,
                ignore_color: Sequence[int] = IGNORE_COLOR) -> np.ndarray:
    """Build a (256, 1, 3) uint8 RGB lookup table for :func:`colorize`.

    Args:
        palette: one RGB colour per class id, or a palette name / YAML file understood by
            :func:`seg_ros.metadata.load_palette` (``cityscapes``, ``camvid``, ``my.yaml``).
        ignore_color: colour of id 255 (ignore) and of ids beyond the palette.

    Returns:
        The LUT; entry ``i`` is the colour of class ``i``.
    """
    if isinstance(palette, str):
        palette = load_palette(palette)[1]
    colours = np.asarray(palette, dtype=np.int64)
    if colours.ndim != 2 or colours.shape[1] != 3 or not len(colours):
        raise SegRosError(f'palette must be a list of [r, g, b], got shape {colours.shape}')
    if len(colours) > IGNORE_INDEX:
        raise SegRosError(f'palette has {len(colours)} colours; at most 255 classes '
                          f'(255 = ignore)')
    if colours.min() < 0 or colours.max() > 255:
        raise SegRosError('palette colours must be in 0..255')
    lut = np.empty((256, 1, 3), np.uint8)
    lut[:] = np.asarray(ignore_color, np.uint8)
    lut[:len(colours), 0] = colours
    return lut


def colorize(ids: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Colour an (H, W) uint8 id map with a LUT from :func:`palette_lut`.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    if ids.dtype != np.uint8 or ids.ndim != 2:
        raise SegRosError(f'ids must be an (H, W) uint8 array, got {ids.dtype} {ids.shape}')
    # cv2.LUT maps a 3-channel image through a 3-channel table in one pass; merging the id map
    # into three identical channels is cheaper than numpy fancy indexing (lut[ids]).
    return cv2.LUT(cv2.merge((ids, ids, ids)), lut)


def overlay(image: np.ndarray, color: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a colour mask over an image: ``(1 - alpha) * image + alpha * color``.

    Args:
        image: (H, W, 3) uint8, in the same channel order as ``color``.
        color: (H, W, 3) uint8 coloured mask.
        alpha: weight of the mask, 0..1.
    """
    if not 0.0 <= alpha <= 1.0:
        raise SegRosError(f'overlay alpha must be in [0, 1], got {alpha}')
    if image.shape != color.shape or image.dtype != np.uint8 or color.dtype != np.uint8:
        raise SegRosError(f'overlay needs two uint8 images of one shape, got {image.shape} '
                          f'{image.dtype} and {color.shape} {color.dtype}')
    return cv2.addWeighted(image, 1.0 - alpha, color, alpha, 0.0)
