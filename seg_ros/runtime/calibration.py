"""int8 calibration frames from an image folder or a rosbag2, prepared like inference frames.

TensorRT's entropy calibrator (in :mod:`seg_ros.runtime.trt_backend`) pulls batches from
:class:`CalibrationData`. Frames go through the very same resize / letterbox path as at run
time (:mod:`seg_ros.runtime.preprocess`, with the deployment's ``resize_mode``), as uint8 NHWC
RGB (the engine normalises inside), so the activation ranges TensorRT measures are those it
will see on the robot.

:class:`CalibrationRun` is what the TensorRT calibrator's callbacks do, without TensorRT: it
keeps an exception raised while reading frames (TensorRT's Python trampoline would swallow it
and take it for "no more data"), writes no calibration cache after such a failure, and counts
the frames TensorRT consumed. No TensorRT here.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from seg_ros.errors import SegRosError
from seg_ros.fileio import IMAGE_SUFFIXES, atomic_write_bytes

# OpenCV (and the preprocess module, which needs it) only when frames are read: loading an
# engine through trt_backend must work where OpenCV is not installed (a bare CUDA machine).
RESIZE_MODES = ('stretch', 'letterbox')  # == seg_ros.runtime.preprocess.RESIZE_MODES

log = logging.getLogger(__name__)

# rosbag2 storage files, and ROS 1 bags (seg_ros.bag.io.BagReader reads every form)
BAG_SUFFIXES = ('.mcap', '.db3', '.bag')


def _is_bag(path: Path) -> bool:
    if path.is_file():
        return path.suffix in BAG_SUFFIXES
    return (path / 'metadata.yaml').is_file() or any(
        p.suffix in BAG_SUFFIXES for p in path.glob('*'))


def _evenly(n_total: int, n: int) -> list[int]:
    """``n`` indices spread evenly over ``range(n_total)`` (all when fewer)."""
    if n_total <= n:
        return list(range(n_total))
    return sorted({int(round(i * (n_total - 1) / (n - 1))) for i in range(n)}) if n > 1 else [0]


class CalibrationData:
    """Calibration frames from ``source`` at the network input size.

    Args:
        source: image folder (searched recursively) or a bag (rosbag2 folder, ``.mcap``,
            ``.db3``, ROS 1 ``.bag``).
        input_size: (height, width) of the network input.
        num_frames: frames to use, spread evenly over the source.
        batch_size: frames per calibration batch: the network's static batch, or the batch
            of the calibration profile of a dynamic one
            (:func:`seg_ros.runtime.engine_cache.calibration_batch`).
        topic: image topic of a bag (default: the only / first image topic).
        resize_mode: ``stretch`` or ``letterbox``, as at run time.
        mean: normalisation mean (letterbox padding colour).
    """

    def __init__(self, source: str | os.PathLike[str], input_size: tuple[int, int],
                 num_frames: int = 256, batch_size: int = 8, topic: str | None = None,
                 resize_mode: str = 'stretch',
                 mean: tuple[float, float, float] = (0.485, 0.456, 0.406)) -> None:
        self.source = Path(source)
        if not self.source.exists():
            raise SegRosError(f'calibration source not found: {self.source}')
        if num_frames < 1 or batch_size < 1:
            raise SegRosError('num_frames and batch_size must be >= 1')
        if resize_mode not in RESIZE_MODES:
            raise SegRosError(f'resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}')
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.num_frames = num_frames
        self.batch_size = batch_size
        self.topic = topic
        self.resize_mode = resize_mode
        self.mean = tuple(float(m) for m in mean)
        self.is_bag = _is_bag(self.source)
        if not self.is_bag:
            if not self.source.is_dir():
                raise SegRosError(f'{self.source}: calibration source must be an image folder '
                                  f'or a bag (rosbag2 folder, .mcap, .db3 or ROS 1 .bag)')
            files = sorted(p for p in self.source.rglob('*') if p.suffix.lower()
                           in IMAGE_SUFFIXES)
            if not files:
                raise SegRosError(f'{self.source}: no images ({", ".join(IMAGE_SUFFIXES)})')
            self.files = [files[i] for i in _evenly(len(files), num_frames)]

    def identity(self) -> str:
        """Hash of what the calibration sees (source content, frame choice, size, mode).

        Part of the int8 engine key and the calibration cache name: other frames, another size
        or another resize mode mean another calibration.
        """
        digest = hashlib.sha256()
        digest.update(f'{self.input_size}|{self.resize_mode}|{self.num_frames}|'
                      f'{self.topic}'.encode())
        if self.is_bag:
            bag_files = [self.source] if self.source.is_file() else sorted(
                p for p in self.source.iterdir() if p.is_file())
            for p in bag_files:
                st = p.stat()
                digest.update(f'{p.name}|{st.st_size}|{int(st.st_mtime)}'.encode())
        else:
            for p in self.files:
                st = p.stat()
                digest.update(f'{p.relative_to(self.source)}|{st.st_size}|'
                              f'{int(st.st_mtime)}'.encode())
        return digest.hexdigest()[:16]

    @property
    def fill(self) -> tuple[int, int, int]:
        """Letterbox padding colour (the normalisation mean, as at run time)."""
        from seg_ros.runtime.preprocess import pad_value

        return pad_value(self.mean)

    def _prepare(self, rgb: np.ndarray) -> np.ndarray:
        from seg_ros.runtime.preprocess import compute_geometry, prepare

        geo = compute_geometry(rgb.shape[:2], self.input_size, self.resize_mode)
        return prepare(rgb, geo, 'rgb', self.fill, out=np.empty((*self.input_size, 3),
                                                                   np.uint8))

    def frames(self) -> Iterator[np.ndarray]:
        """Network-size (H, W, 3) uint8 RGB frames."""
        if not self.is_bag:
            import cv2

            for p in self.files:
                bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
                if bgr is None:
                    raise SegRosError(f'{p}: not a readable image')
                yield self._prepare(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            return
        from seg_ros.bag.io import BagReader

        with BagReader(self.source) as reader:
            topics = reader.image_topics()
            if self.topic is None:
                if not topics:
                    raise SegRosError(f'{self.source}: no image topics in the bag')
                if len(topics) > 1:
                    raise SegRosError(f'{self.source}: several image topics {topics}; choose '
                                      f'one with --calib-topic')
                topic = topics[0]
            else:
                topic = self.topic
            count = reader.require_topic(topic).count
            wanted = set(_evenly(count, self.num_frames))
            for frame in reader.frames(topic):
                if frame.index in wanted and frame.rgb is not None:
                    yield self._prepare(frame.rgb)

    def batches(self) -> Iterator[np.ndarray]:
        """(batch_size, H, W, 3) uint8 batches; the last partial batch is dropped (TensorRT
        calibrates with a fixed batch size), unless it is the only one (then it is padded by
        repeating frames)."""
        buf: list[np.ndarray] = []
        emitted = False
        for frame in self.frames():
            buf.append(frame)
            if len(buf) == self.batch_size:
                yield np.stack(buf)
                emitted = True
                buf = []
        if buf and not emitted:
            n_read = len(buf)
            while len(buf) < self.batch_size:
                buf.append(buf[len(buf) % n_read])
            yield np.stack(buf)
        elif not buf and not emitted:
            raise SegRosError(f'{self.source}: no calibration frames could be read')

    def check(self) -> tuple[int, int]:
        """Read the first frame now (bag topic, decoding, size), before minutes of building.

        Returns:
            (height, width) of the prepared frame (the network input size).

        Raises:
            SegRosError: no such topic, several image topics, no readable frame.
        """
        frames = self.frames()
        try:
            first = next(frames, None)
        finally:
            close = getattr(frames, 'close', None)
            if close is not None:
                close()
        if first is None:
            raise SegRosError(f'{self.source}: no calibration frames could be read')
        return int(first.shape[0]), int(first.shape[1])

    def cache_path(self, cache_dir: str | os.PathLike[str], onnx_sha256: str) -> Path:
        """Calibration cache file for this data and model."""
        return Path(cache_dir) / 'calibration' / (f'{onnx_sha256[:16]}-{self.identity()}-'
                                                  f'b{self.batch_size}.cache')


class CalibrationRun:
    """The logic behind TensorRT's calibrator callbacks (same method names), TensorRT-free.

    TensorRT calls :meth:`read_calibration_cache` first; without a cache it calls
    :meth:`get_batch` until it returns an empty list, then :meth:`write_calibration_cache`.
    An exception inside ``get_batch`` never reaches the builder (the binding's trampoline
    logs it and TensorRT carries on as if the data had ended), so it is kept here, the run
    stops feeding, no cache is written, and :meth:`raise_if_failed` re-raises it after the
    build.

    Args:
        data: the calibration frames.
        cache_file: calibration cache to read / write.
        upload: copies a (batch, H, W, 3) uint8 batch into the input buffer and returns its
            device address (in the TensorRT calibrator: a CUDA tensor's ``data_ptr()``).
    """

    def __init__(self, data: CalibrationData, cache_file: Path,
                 upload: Callable[[np.ndarray], int]) -> None:
        self.data = data
        self.cache_file = Path(cache_file)
        self._upload = upload
        self._batches: Iterator[np.ndarray] | None = None
        self.error: BaseException | None = None
        self.batches = 0
        self.finished = False
        self.used_cache = False
        self.wrote_cache = False

    @property
    def frames_consumed(self) -> int:
        """Frames handed to TensorRT so far."""
        return self.batches * self.data.batch_size

    def get_batch_size(self) -> int:
        return self.data.batch_size

    def get_batch(self, names: list[str]) -> list[int]:
        """Device addresses of the next batch (one input), or [] at the end or after an error."""
        if self.error is not None or self.finished:
            return []
        try:
            if self._batches is None:
                self._batches = self.data.batches()
            batch = next(self._batches, None)
            if batch is None:
                self.finished = True
                log.info('calibration: %d frames in %d batches of %d', self.frames_consumed,
                         self.batches, self.data.batch_size)
                return []
            if batch.shape != (self.data.batch_size, *self.data.input_size, 3):
                raise SegRosError(f'calibration batch {batch.shape} does not match the '
                                  f'network batch {self.data.batch_size} and size '
                                  f'{self.data.input_size}')
            address = int(self._upload(batch))
        except BaseException as exc:  # noqa: BLE001 - re-raised by raise_if_failed
            self.error = exc
            log.error('calibration stopped after %d frames: %s: %s', self.frames_consumed,
                      type(exc).__name__, exc)
            return []
        self.batches += 1
        if self.batches % 8 == 0:
            log.info('calibration: %d frames', self.frames_consumed)
        return [address]

    def read_calibration_cache(self) -> bytes | None:
        if self.cache_file.is_file():
            log.info('calibration: using cache %s', self.cache_file)
            self.used_cache = True
            return self.cache_file.read_bytes()
        return None

    def write_calibration_cache(self, cache: bytes | memoryview | Any) -> None:
        """Keep TensorRT's calibration table (any buffer), only after a complete run."""
        if self.error is not None or not self.finished:
            log.warning('calibration incomplete: no calibration cache written')
            return
        try:
            atomic_write_bytes(self.cache_file, bytes(cache))
        except OSError as exc:
            log.warning('calibration cache not saved (%s: %s)', type(exc).__name__, exc)
            return
        self.wrote_cache = True
        log.info('calibration: wrote cache %s', self.cache_file)

    def raise_if_failed(self) -> None:
        """After the build: re-raise what went wrong while TensorRT pulled frames.

        Raises:
            SegRosError: reading frames failed, or no frame was used (and no cache either).
        """
        if self.error is not None:
            raise SegRosError(f'int8 calibration failed after {self.frames_consumed} frames: '
                              f'{type(self.error).__name__}: {self.error}') from self.error
        if not self.used_cache and self.batches == 0:
            raise SegRosError('int8 calibration used no frames (TensorRT never asked for a '
                              'batch)')
