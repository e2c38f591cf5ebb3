"""The one host-side pre/post-processing path: resize or letterbox in, and exactly back out.

Everything here works on uint8 with OpenCV; normalisation and the NHWC -> NCHW layout change
happen inside the network (:class:`seg_ros.runtime.pipeline.SegmentationPipeline`), so the host
does no float work per pixel.

``stretch`` resizes the frame to the network size (aspect ratio not kept). ``letterbox`` scales
it to fit and pads the rest with the normalisation mean (which normalises to ~0); on the way
back the padding is cropped off and the ids are resized with nearest-neighbour, so the result
covers exactly the input frame at its own resolution.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from seg_ros.errors import SegRosError

RESIZE_MODES = ('stretch', 'letterbox')
COLOR_ORDERS = ('rgb', 'bgr')
# Pixel-centre-aligned nearest neighbour: INTER_NEAREST is off by half a pixel, which would
# shift label borders (and break the letterbox round trip) by one pixel at some scales.
ID_INTERP = cv2.INTER_NEAREST_EXACT


@dataclass(frozen=True)
class Geometry:
    """How an input frame maps into the network input.

    Attributes:
        src_size: (height, width) of the input frame.
        dst_size: (height, width) of the network input.
        content: (top, left, height, width) of the frame's pixels inside the network input;
            the whole network input for ``stretch``.
    """

    src_size: tuple[int, int]
    dst_size: tuple[int, int]
    content: tuple[int, int, int, int]

    @property
    def is_identity(self) -> bool:
        """True when the frame already is the network input (no resize, no padding)."""
        return self.src_size == self.dst_size and self.content == (0, 0, *self.dst_size)


def check_image(image: object, name: str = 'image') -> np.ndarray:
    """Validate an (H, W, 3) uint8 frame; raise :class:`SegRosError` with the reason if not."""
    if not isinstance(image, np.ndarray):
        raise SegRosError(f'{name} must be a numpy array, got {type(image).__name__}')
    if image.dtype != np.uint8:
        raise SegRosError(f'{name} must be uint8, got {image.dtype} (convert 16-bit or float '
                          f'images to 8-bit first)')
    if image.ndim != 3 or image.shape[2] != 3:
        channels = image.shape[2] if image.ndim == 3 else 1 if image.ndim == 2 else None
        raise SegRosError(f'{name} must be (H, W, 3) with 3 colour channels, got shape '
                          f'{image.shape} ({channels} channels)')
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise SegRosError(f'{name} has zero size: {image.shape}')
    return image


def compute_geometry(src_size: Sequence[int], dst_size: Sequence[int],
                     mode: str = 'stretch') -> Geometry:
    """Where a ``src_size`` frame lands in a ``dst_size`` network input.

    Args:
        src_size: (height, width) of the frame.
        dst_size: (height, width) of the network input.
        mode: ``stretch`` or ``letterbox``.
    """
    if mode not in RESIZE_MODES:
        raise SegRosError(f'resize_mode must be one of {RESIZE_MODES}, got {mode!r}')
    h, w = int(src_size[0]), int(src_size[1])
    dh, dw = int(dst_size[0]), int(dst_size[1])
    if min(h, w, dh, dw) < 1:
        raise SegRosError(f'zero size: frame {h}x{w}, network {dh}x{dw}')
    if mode == 'stretch':
        return Geometry((h, w), (dh, dw), (0, 0, dh, dw))
    scale = min(dh / h, dw / w)
    nh = min(dh, max(1, round(h * scale)))
    nw = min(dw, max(1, round(w * scale)))
    return Geometry((h, w), (dh, dw), ((dh - nh) // 2, (dw - nw) // 2, nh, nw))


def pad_value(mean: Sequence[float]) -> tuple[int, int, int]:
    """RGB uint8 padding colour that normalises to (almost) zero."""
    return tuple(int(round(255.0 * m)) for m in mean)  # type: ignore[return-value]


def prepare(image: np.ndarray, geometry: Geometry, color_order: str = 'rgb',
            fill: Sequence[int] = (0, 0, 0), out: np.ndarray | None = None) -> np.ndarray:
    """Turn a validated frame into a network input: (H, W, 3) uint8 RGB at ``dst_size``.

    Args:
        image: (h, w, 3) uint8 frame in ``color_order``.
        geometry: from :func:`compute_geometry` for this frame's size.
        color_order: ``rgb`` or ``bgr``.
        fill: RGB padding colour for letterbox.
        out: optional preallocated (H, W, 3) uint8 destination (e.g. one slot of a batch).
    """
    if color_order not in COLOR_ORDERS:
        raise SegRosError(f'color_order must be one of {COLOR_ORDERS}, got {color_order!r}')
    if tuple(image.shape[:2]) != geometry.src_size:
        raise SegRosError(f'frame is {image.shape[:2]}, geometry was made for '
                          f'{geometry.src_size}')
    if geometry.is_identity and color_order == 'rgb' and out is None:
        return np.ascontiguousarray(image)  # already the network input: no copy
    top, left, ch, cw = geometry.content
    dh, dw = geometry.dst_size
    if out is None:
        out = np.empty((dh, dw, 3), np.uint8)
    content = out[top:top + ch, left:left + cw]
    # Resize before the colour conversion: the conversion then runs on the (usually smaller)
    # network-size image.
    if (ch, cw) == geometry.src_size:
        resized = image
    else:
        resized = cv2.resize(image, (cw, ch), interpolation=cv2.INTER_LINEAR)
    if color_order == 'bgr':
        # (cv2 cannot write into a strided view reliably; assign the converted image instead)
        content[...] = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
    else:
        content[...] = resized
    if (ch, cw) != (dh, dw):
        fill_rgb = np.asarray(fill, np.uint8)
        out[:top] = fill_rgb
        out[top + ch:] = fill_rgb
        out[top:top + ch, :left] = fill_rgb
        out[top:top + ch, left + cw:] = fill_rgb
    return out


def restore(net_map: np.ndarray, geometry: Geometry, interpolation: int = ID_INTERP) -> np.ndarray:
    """Map an (H, W) network-resolution map back onto the input frame.

    Crops the letterbox padding and resizes to the frame size: nearest-neighbour for class ids
    (the default), ``cv2.INTER_LINEAR`` for confidence.
    """
    top, left, ch, cw = geometry.content
    content = net_map[top:top + ch, left:left + cw]
    h, w = geometry.src_size
    if (ch, cw) == (h, w):
        return np.ascontiguousarray(content)
    return cv2.resize(content, (w, h), interpolation=interpolation)
