"""sensor_msgs/Image and CompressedImage <-> numpy without cv_bridge.

Works on any object with the message fields (rclpy messages and ``rosbags`` messages alike),
so the node and the bag tools share one conversion. Row padding (``step``) and
``is_bigendian`` are respected; every decoded image is H x W x 3 uint8 **RGB**.
"""
from __future__ import annotations

from typing import Any, Protocol

import cv2
import numpy as np

from seg_ros.errors import SegRosError


class ImageDecodeError(SegRosError):
    """A frame that cannot be turned into an image (bad step, short data, unknown encoding)."""


class ImageLike(Protocol):
    """The sensor_msgs/Image fields this module reads."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: Any


# encoding -> (bytes per pixel, channels, numpy dtype)
_LAYOUT: dict[str, tuple[int, int, str]] = {
    'rgb8': (3, 3, 'u1'), 'bgr8': (3, 3, 'u1'), 'rgba8': (4, 4, 'u1'), 'bgra8': (4, 4, 'u1'),
    'mono8': (1, 1, 'u1'), '8UC1': (1, 1, 'u1'), '8UC3': (3, 3, 'u1'),
    'mono16': (2, 1, 'u2'), '16UC1': (2, 1, 'u2'),
    'bayer_rggb8': (1, 1, 'u1'), 'bayer_bggr8': (1, 1, 'u1'),
    'bayer_gbrg8': (1, 1, 'u1'), 'bayer_grbg8': (1, 1, 'u1'),
    'yuv422': (2, 2, 'u1'), 'uyvy': (2, 2, 'u1'),
    'yuyv': (2, 2, 'u1'), 'yuv422_yuy2': (2, 2, 'u1'),
}

# ROS names Bayer patterns by the first row; OpenCV by the second-row/second-column
# quartet, hence the apparent swap (the same mapping cv_bridge uses).
_TO_RGB: dict[str, int] = {
    'bgr8': cv2.COLOR_BGR2RGB, '8UC3': cv2.COLOR_BGR2RGB,
    'rgba8': cv2.COLOR_RGBA2RGB, 'bgra8': cv2.COLOR_BGRA2RGB,
    'mono8': cv2.COLOR_GRAY2RGB, '8UC1': cv2.COLOR_GRAY2RGB,
    'bayer_rggb8': cv2.COLOR_BayerBG2RGB, 'bayer_bggr8': cv2.COLOR_BayerRG2RGB,
    'bayer_gbrg8': cv2.COLOR_BayerGR2RGB, 'bayer_grbg8': cv2.COLOR_BayerGB2RGB,
    'yuv422': cv2.COLOR_YUV2RGB_UYVY, 'uyvy': cv2.COLOR_YUV2RGB_UYVY,
    'yuyv': cv2.COLOR_YUV2RGB_YUYV, 'yuv422_yuy2': cv2.COLOR_YUV2RGB_YUYV,
}

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUT)


def image_to_array(msg: ImageLike) -> np.ndarray:
    """Raw pixels of an Image message as (H, W[, C]) without colour conversion.

    Raises:
        ImageDecodeError: unknown encoding, zero size, step too small or data too short.
    """
    enc = msg.encoding
    if enc not in _LAYOUT:
        raise ImageDecodeError(f'unsupported encoding {enc!r} (supported: '
                               f'{", ".join(SUPPORTED_ENCODINGS)})')
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ImageDecodeError(f'empty image {w}x{h}')
    bpp, channels, dtype = _LAYOUT[enc]
    if step < w * bpp:
        raise ImageDecodeError(f'step {step} < width {w} x {bpp} bytes per pixel ({enc})')
    if enc in ('yuv422', 'uyvy', 'yuyv', 'yuv422_yuy2') and w % 2:
        raise ImageDecodeError(f'{enc} needs an even width, got {w}')
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size < step * h:
        raise ImageDecodeError(f'data has {buf.size} bytes, expected step {step} x height {h}'
                               f' = {step * h}')
    rows = buf[:step * h].reshape(h, step)[:, :w * bpp]
    if dtype == 'u2':
        order = '>' if msg.is_bigendian else '<'
        arr = np.ascontiguousarray(rows).view(np.dtype(order + 'u2')).reshape(h, w)
        return arr.astype(np.uint16, copy=False)
    return rows.reshape(h, w, channels) if channels > 1 else rows.reshape(h, w)


def image_to_rgb(msg: ImageLike) -> np.ndarray:
    """Decode an Image message to H x W x 3 uint8 RGB (a fresh contiguous array)."""
    arr = image_to_array(msg)
    enc = msg.encoding
    if enc in ('mono16', '16UC1'):
        # Keep the 8 most significant bits: the usual 16 -> 8 bit display mapping.
        arr = (arr >> 8).astype(np.uint8)
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
    if enc == 'rgb8':
        return np.ascontiguousarray(arr)
    return cv2.cvtColor(np.ascontiguousarray(arr), _TO_RGB[enc])


def compressed_to_rgb(data: Any, fmt: str = '') -> np.ndarray:
    """Decode a CompressedImage payload (JPEG/PNG) to H x W x 3 uint8 RGB.

    Raises:
        ImageDecodeError: empty or corrupt data.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        raise ImageDecodeError(f'empty compressed image (format {fmt!r})')
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise ImageDecodeError(f'cannot decode compressed image (format {fmt!r}, '
                               f'{buf.size} bytes)')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def array_to_image_fields(arr: np.ndarray, encoding: str) -> dict[str, Any]:
    """Fields for an Image message holding ``arr`` (``data`` as bytes: fast to assign).

    Args:
        arr: (H, W) uint8 for mono8, (H, W, 3) uint8 for rgb8/bgr8, (H, W) uint16 for mono16.
        encoding: the encoding the array already is in.
    """
    arr = np.ascontiguousarray(arr)
    if encoding not in _LAYOUT:
        raise ImageDecodeError(f'unsupported encoding {encoding!r}')
    bpp, channels, dtype = _LAYOUT[encoding]
    h, w = arr.shape[:2]
    expected = (h, w) if channels == 1 else (h, w, channels)
    if arr.shape != expected or arr.dtype != np.dtype(dtype):
        raise ImageDecodeError(f'array {arr.shape} {arr.dtype} does not fit {encoding}')
    little = np.little_endian or arr.dtype.itemsize == 1
    return {'height': h, 'width': w, 'encoding': encoding, 'is_bigendian': int(not little),
            'step': w * bpp, 'data': arr.tobytes()}


def encode_compressed(rgb: np.ndarray, fmt: str = 'jpeg', quality: int = 90) -> bytes:
    """Encode H x W x 3 RGB as JPEG or PNG bytes for a CompressedImage."""
    ext = {'jpeg': '.jpg', 'jpg': '.jpg', 'png': '.png'}.get(fmt.lower())
    if ext is None:
        raise ImageDecodeError(f'unsupported compressed format {fmt!r} (jpeg or png)')
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == '.jpg' else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageDecodeError(f'cannot encode {rgb.shape} as {fmt}')
    return buf.tobytes()
