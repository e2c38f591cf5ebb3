"""Building blocks of the segmentation nodes that do not need a ROS graph.

* :class:`FrameSlot`: the one-slot, drop-oldest hand-over from the subscription callback to
  the worker thread (latency never grows because of a queue).
* :class:`ErrorThrottle`: rate-limits repeated error messages per kind of problem.
* :func:`resolve_model_path`: ``package://`` and relative paths for the ``model`` parameter.
* :func:`class_names_json`, :func:`scale_camera_info_fields`.
"""
from __future__ import annotations

from collections.abc import Sequence
import json
import os
from pathlib import Path
import re
import threading
import time
from typing import Any, Generic, TypeVar

from seg_ros.errors import SegRosError
from seg_ros.metadata import IGNORE_INDEX

T = TypeVar('T')
_MODEL_SUFFIXES = ('.onnx', '.engine', '.plan', '.pt', '.pth')


class FrameSlot(Generic[T]):
    """A one-item buffer: :meth:`put` replaces an unconsumed item and counts it as dropped.

    The subscription callback only calls :meth:`put` (constant time, never blocks on the
    worker); the worker blocks in :meth:`take`. Thread-safe.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False
        self.received = 0
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Store ``item``; returns True when an older unprocessed item was dropped."""
        with self._cond:
            dropped = self._item is not None
            if dropped:
                self.dropped += 1
            self._item = item
            self.received += 1
            self._cond.notify()
            return dropped

    def take(self, timeout: float | None = None) -> T | None:
        """The newest item, waiting up to ``timeout`` s; None on timeout or when closed."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return None if self._closed else item

    def clear(self) -> int:
        """Discard a pending item (counted as dropped); returns how many were discarded."""
        with self._cond:
            n = int(self._item is not None)
            self.dropped += n
            self._item = None
            return n

    def close(self) -> None:
        """Wake the worker for good: :meth:`take` returns None from now on.

        A pending item is discarded and counted as dropped, so the counts keep adding up
        across a lifecycle deactivation.
        """
        with self._cond:
            self._closed = True
            self.dropped += int(self._item is not None)
            self._item = None
            self._cond.notify_all()

    def reopen(self) -> None:
        """Accept items again after :meth:`close` (lifecycle re-activation)."""
        with self._cond:
            self._closed = False


class ErrorThrottle:
    """Decide whether to log a message: at most once per ``period_s`` per kind of message.

    The kind is the message with its numbers blanked, so ``data has 10 bytes`` and
    ``data has 12 bytes`` are one kind while ``unsupported encoding 'foo'`` and ``empty image``
    are reported separately. Suppressed repeats are counted and reported with the next one.
    """

    def __init__(self, period_s: float = 5.0, clock: Any = time.monotonic) -> None:
        self.period_s = period_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    @staticmethod
    def kind(message: str) -> str:
        """The throttling key of ``message``."""
        return re.sub(r'\d+', '#', message)

    def check(self, message: str) -> str | None:
        """The text to log now (with the suppressed count), or None to stay quiet."""
        key = self.kind(message)
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            self._last[key] = now
            n = self._suppressed.pop(key, 0)
        return message + (f' ({n} more like this suppressed)' if n else '')


def resolve_model_path(model: str, base_dir: str | os.PathLike[str] | None = None) -> str:
    """Turn the ``model`` parameter into what ``Segmenter.from_file`` takes.

    ``package://PKG/sub/path`` resolves against PKG's share folder (or, for seg_ros run from
    a source tree, the repository root); values that look like files (a path separator or a
    model suffix) must exist; anything else is returned unchanged as a registered model name.

    Raises:
        SegRosError: a file that does not exist, or an unknown package.
    """
    model = model.strip()
    if model.startswith('package://'):
        pkg, _, rel = model[len('package://'):].partition('/')
        root = _package_root(pkg)
        path = root / rel
    elif os.sep in model or '/' in model or model.lower().endswith(_MODEL_SUFFIXES):
        path = Path(model).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
    else:
        return model
    if not path.is_file():
        raise SegRosError(f'model file not found: {path} (from model:={model})')
    return str(path.resolve())


def _package_root(pkg: str) -> Path:
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(pkg))
    except Exception as exc:  # not installed through ament (e.g. pip install -e .)
        if pkg == 'seg_ros':
            return Path(__file__).resolve().parents[2]  # seg_ros/ros/ -> the source tree
        raise SegRosError(f'package {pkg!r} not found for a package:// model path') from exc


def class_names_json(model: str, class_names: Sequence[str],
                     palette: Sequence[Sequence[int]]) -> str:
    """The ``~/class_names`` payload: ids, names and colours, plus the ignore id."""
    return json.dumps({
        'model': model,
        'num_classes': len(class_names),
        'ignore_index': IGNORE_INDEX,
        'classes': [{'id': i, 'name': str(n), 'color': [int(v) for v in palette[i]]}
                    for i, n in enumerate(class_names)],
    })


def scale_camera_info_fields(width: int, height: int, k: Sequence[float],
                             p: Sequence[float], new_width: int,
                             new_height: int) -> tuple[list[float], list[float]]:
    """K and P of a camera rescaled from ``width x height`` to ``new_width x new_height``.

    Pixel coordinates scale with the image (fx, cx by sx; fy, cy by sy); the same convention
    as image_proc's resize node. Distortion coefficients are scale-free and stay unchanged.
    """
    if width <= 0 or height <= 0:
        raise SegRosError(f'camera_info has no size ({height}x{width}, HxW); cannot rescale')
    sx, sy = new_width / width, new_height / height
    k2 = [float(v) for v in k]
    p2 = [float(v) for v in p]
    k2[0] *= sx
    k2[2] *= sx
    k2[4] *= sy
    k2[5] *= sy
    p2[0] *= sx
    p2[2] *= sx
    p2[3] *= sx
    p2[5] *= sy
    p2[6] *= sy
    return k2, p2
