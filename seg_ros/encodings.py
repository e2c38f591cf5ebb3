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


def image_to_array(msg: ImageLike, max_pixels: int | None = None) -> np.ndarray:
    """Raw pixels of an Image message as (H, W[, C]) without colour conversion.

    Args:
        msg: the message (rclpy or rosbags).
        max_pixels: refuse frames of more than this many pixels (None: no bound).

    Raises:
        ImageDecodeError: unknown encoding, zero or too large a size, step too small or data
            too short.
    """
    enc = msg.encoding
    if enc not in _LAYOUT:
        raise ImageDecodeError(f'unsupported encoding {enc!r} (supported: '
                               f'{", ".join(SUPPORTED_ENCODINGS)})')
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ImageDecodeError(f'empty image {h}x{w} (HxW)')
    check_pixels(w, h, max_pixels)
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


def image_to_rgb(msg: ImageLike, max_pixels: int | None = None) -> np.ndarray:
    """Decode an Image message to H x W x 3 uint8 RGB (a fresh contiguous array).

    ``max_pixels`` bounds the frame size as in :func:`image_to_array`.
    """
    arr = image_to_array(msg, max_pixels)
    enc = msg.encoding
    if enc in ('mono16', '16UC1'):
        # Keep the 8 most significant bits: the usual 16 -> 8 bit display mapping.
        arr = (arr >> 8).astype(np.uint8)
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
    if enc == 'rgb8':
        return np.ascontiguousarray(arr)
    return cv2.cvtColor(np.ascontiguousarray(arr), _TO_RGB[enc])


def check_pixels(width: int, height: int, max_pixels: int | None) -> None:
    """Refuse a ``width`` x ``height`` frame larger than ``max_pixels`` (None: no bound).

    Raises:
        ImageDecodeError: the frame is too large.
    """
    if max_pixels is not None and width * height > max_pixels:
        raise ImageDecodeError(f'frame {height}x{width} (HxW) has {width * height} pixels, '
                               f'more than max_input_pixels={max_pixels}')


_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# JPEG start-of-frame markers (ITU T.81 Table B.1): every SOFn except DHT (C4), JPG (C8) and
# DAC (CC), which share the range but carry no frame size.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RST0-7, SOI, EOI.
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xDA)])


def compressed_size(data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """(width, height) declared by a PNG or JPEG header, without decoding any pixels.

    Returns:
        The declared size, or None when ``data`` is neither a PNG nor a JPEG with a readable
        frame header.
    """
    view = memoryview(data).cast('B')
    start = bytes(view[:8])
    if start.startswith(_PNG_SIGNATURE):
        # The first chunk must be IHDR: length (4) 'IHDR' width (4) height (4), big-endian.
        head = bytes(view[8:24])
        if len(head) == 16 and head[4:8] == b'IHDR':
            return int.from_bytes(head[8:12], 'big'), int.from_bytes(head[12:16], 'big')
        return None
    if not start.startswith(b'\xff\xd8'):
        return None
    i, n = 2, len(view)
    while i + 4 <= n:
        if view[i] != 0xFF:
            return None  # lost sync: not a JPEG we can read
        marker = view[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in _JPEG_STANDALONE:
            i += 2
            continue
        length = (view[i + 2] << 8) | view[i + 3]
        if marker in _JPEG_SOF:
            if i + 9 > n or length < 7:
                return None
            height = (view[i + 5] << 8) | view[i + 6]
            width = (view[i + 7] << 8) | view[i + 8]
            return (width, height) if height else None  # 0: height set by a DNL marker
        if marker == 0xDA or length < 2:  # scan data before any frame header: broken
            return None
        i += 2 + length
    return None


def compressed_to_rgb(data: Any, fmt: str = '', max_pixels: int | None = None) -> np.ndarray:
    """Decode a CompressedImage payload (JPEG/PNG) to H x W x 3 uint8 RGB.

    Args:
        data: the payload.
        fmt: the message's ``format`` (for error messages).
        max_pixels: when set, only PNG and JPEG are accepted and the size their header
            declares is checked *before* decoding, so a small file declaring a huge image
            (a decompression bomb) is refused in microseconds without allocating it.

    Raises:
        ImageDecodeError: empty, corrupt, unreadable-header or too large data.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size == 0:
        raise ImageDecodeError(f'empty compressed image (format {fmt!r})')
    if max_pixels is not None:
        size = compressed_size(buf.data)
        if size is None:
            raise ImageDecodeError(f'compressed image (format {fmt!r}, {buf.size} bytes) is '
                                   'not a PNG or JPEG with a readable size header')
        check_pixels(*size, max_pixels)
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
