"""Write a rosbag2 from an image folder, a dataset split, the synthetic drive generator or
another bag of any form (:func:`from_bag`: ROS 1, pre-Foxy, compressed -> a modern rosbag2).

Each frame becomes an image message (raw rgb8 ``sensor_msgs/Image`` or JPEG/PNG
``sensor_msgs/CompressedImage``), a ``sensor_msgs/CameraInfo`` and, when the source has
labels, a mono8 label image on ``/labels`` -- all with the same header stamp, so any tool that
matches by stamp pairs them exactly.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from seg_ros.bag.io import (
    CAMERA_INFO_TYPE,
    FRAME_NAMES_KEY,
    IMAGE_TYPES,
    BagReader,
    BagReadError,
    BagWriter,
    default_camera_info,
)
from seg_ros.bag.labels import read_label_png
from seg_ros.encodings import encode_compressed
from seg_ros.errors import SegRosError
from seg_ros.fileio import IMAGE_SUFFIXES
from seg_ros.progress import progress_bar

DEFAULT_IMAGE_TOPIC = '/camera/image_raw'
DEFAULT_LABEL_TOPIC = '/labels'
DEFAULT_CAMERA_INFO_TOPIC = '/camera/camera_info'
# A fixed, plausible start time: bags made from the same source are identical message for
# message (and their stamps look like a real recording's in Foxglove).
DEFAULT_START_NS = 1_700_000_000 * 1_000_000_000


@dataclass
class SourceFrame:
    """One frame to write: RGB image, optional label map, source name."""

    rgb: np.ndarray
    label: np.ndarray | None
    name: str


@dataclass
class MakeBagResult:
    """What :func:`make_bag` wrote."""

    path: Path
    frames: int
    labelled: int
    image_topic: str
    label_topic: str | None
    camera_info_topic: str
    storage: str
    stamps_ns: list[int] = field(default_factory=list)
    source_form: str = ''  # from_bag: what form the source bag had
    notes: list[str] = field(default_factory=list)  # from_bag: what the reader mapped


def _read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SegRosError(f'{path}: cannot read image')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def folder_frames(src: Path) -> tuple[int, Iterator[SourceFrame]]:
    """Frames of an image folder.

    ``src/images/*`` with optional ``src/masks/<same stem>.png`` (the generic dataset folder
    format written by ``seg-ros synth``), or a flat folder of images without labels.
    """
    image_dir = src / 'images' if (src / 'images').is_dir() else src
    mask_dir = src / 'masks' if (src / 'masks').is_dir() else None
    images = _images_in(image_dir)
    if not images:
        raise SegRosError(f'{image_dir}: no images ({", ".join(IMAGE_SUFFIXES)})')

    def gen() -> Iterator[SourceFrame]:
        for p in images:
            label = None
            if mask_dir is not None:
                mp = mask_dir / f'{p.stem}.png'
                label = read_label_png(mp) if mp.is_file() else None
            yield SourceFrame(_read_rgb(p), label, p.stem)

    return len(images), gen()


def dataset_frames(kind: str, root: Path, split: str) -> tuple[int, Iterator[SourceFrame]]:
    """Frames of a dataset split (``seg_ros.data.datasets.build_dataset``), with labels."""
    from seg_ros.data.datasets import build_dataset

    ds = build_dataset(kind, str(root), split)

    def gen() -> Iterator[SourceFrame]:
        for i in range(len(ds)):
            rgb, label = ds[i][:2]
            yield SourceFrame(_to_numpy_rgb(rgb), _to_numpy_label(label), f'{i:06d}')

    return len(ds), gen()


def _to_numpy_rgb(x: Any) -> np.ndarray:
    arr = x.detach().cpu().numpy() if hasattr(x, 'detach') else np.asarray(x)
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[2] != 3:  # CHW -> HWC
        arr = arr.transpose(1, 2, 0)
    if arr.dtype != np.uint8:
        raise SegRosError(f'dataset images must be uint8 RGB, got {arr.dtype}')
    return np.ascontiguousarray(arr)


def _to_numpy_label(x: Any) -> np.ndarray:
    arr = x.detach().cpu().numpy() if hasattr(x, 'detach') else np.asarray(x)
    return np.ascontiguousarray(arr.astype(np.uint8))


def synthetic_frames(n: int, size: tuple[int, int], seed: int = 0,
                     start: int = 0) -> tuple[int, Iterator[SourceFrame]]:
    """``n`` consecutive frames of :class:`seg_ros.data.synthetic.SyntheticDrive` (a drive)."""
    from seg_ros.data.synthetic import SyntheticDrive

    if n < 1:
        raise SegRosError(f'--synthetic needs at least 1 frame, got {n}')
    drive = SyntheticDrive(size=size, seed=seed)

    def gen() -> Iterator[SourceFrame]:
        for i in range(start, start + n):
            rgb, label = drive.frame(i)
            yield SourceFrame(np.ascontiguousarray(rgb), np.ascontiguousarray(label), f'{i:06d}')

    return n, gen()


def synthetic_camera_info(size: tuple[int, int], seed: int = 0) -> dict[str, Any]:
    """The synthetic drive's own pinhole intrinsics (its renderer's focal length and centre)."""
    from seg_ros.data.synthetic import SyntheticDrive

    drive = SyntheticDrive(size=size, seed=seed)
    h, w = size
    info = default_camera_info(h, w)
    f = float(getattr(drive, 'focal', info['k'][0]))
    cx = float(getattr(drive, 'cx', info['k'][2]))
    cy = float(getattr(drive, 'cy', info['k'][5]))
    info['k'] = [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0]
    info['p'] = [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def make_bag(out: str | Path, frames: Iterable[SourceFrame], total: int | None = None,
             storage: str = 'sqlite3', rate_hz: float = 10.0, compressed: str | None = None,
             image_topic: str | None = None, label_topic: str = DEFAULT_LABEL_TOPIC,
             camera_info_topic: str = DEFAULT_CAMERA_INFO_TOPIC, frame_id: str = 'camera',
             start_ns: int = DEFAULT_START_NS, jpeg_quality: int = 90, hfov_deg: float = 90.0,
             camera_info: dict[str, Any] | None = None, progress: bool = True) -> MakeBagResult:
    """Write frames into a new rosbag2.

    Args:
        out: bag folder to create (must not exist).
        frames: the frames, in order.
        total: number of frames (for the progress bar).
        storage: ``sqlite3`` or ``mcap``.
        rate_hz: camera rate; frame i is stamped ``start_ns + i / rate_hz``.
        compressed: None for raw rgb8 Images, else ``jpeg`` or ``png`` CompressedImages.
        image_topic: defaults to ``/camera/image_raw`` (``.../compressed`` when compressed).
        label_topic: mono8 label topic (written only for frames that have labels).
        camera_info_topic: CameraInfo topic (pinhole, ``hfov_deg`` horizontal field of view).
        frame_id: header frame_id of every message.
        start_ns: stamp of the first frame.
        jpeg_quality: JPEG quality when ``compressed='jpeg'``.
        hfov_deg: horizontal field of view for the CameraInfo.
        camera_info: CameraInfo fields (:func:`default_camera_info` layout) to use instead of
            the ``hfov_deg`` pinhole, e.g. the synthetic renderer's own intrinsics.
        progress: show a tqdm bar.

    Returns:
        :class:`MakeBagResult`.
    """
    if rate_hz <= 0:
        raise SegRosError(f'--rate must be > 0 Hz, got {rate_hz}')
    if compressed is not None and compressed not in ('jpeg', 'png'):
        raise SegRosError(f'--compressed must be jpeg or png, got {compressed!r}')
    if image_topic is None:
        image_topic = DEFAULT_IMAGE_TOPIC + ('/compressed' if compressed else '')
    period_ns = int(round(1e9 / rate_hz))
    names: list[str] = []
    stamps: list[int] = []
    labelled = 0
    writer = BagWriter(Path(out), storage)
    with writer:
        for i, frame in enumerate(progress_bar(frames, total=total, desc='make-bag', unit='frame',
                                               enabled=progress)):
            if frame.rgb.ndim != 3 or frame.rgb.shape[2] != 3 or frame.rgb.dtype != np.uint8:
                raise SegRosError(f'frame {frame.name}: expected HxWx3 uint8 RGB, got '
                                  f'{frame.rgb.shape} {frame.rgb.dtype}')
            h, w = frame.rgb.shape[:2]
            stamp = start_ns + i * period_ns
            if compressed:
                writer.write_compressed(image_topic, encode_compressed(
                    frame.rgb, compressed, jpeg_quality), compressed, stamp, frame_id)
            else:
                writer.write_image(image_topic, frame.rgb, 'rgb8', stamp, frame_id)
            info = camera_info if camera_info is not None and (
                camera_info['height'], camera_info['width']) == (h, w) \
                else default_camera_info(h, w, hfov_deg)
            writer.write_camera_info(camera_info_topic, info, stamp, frame_id)
            if frame.label is not None:
                if frame.label.shape != (h, w):
                    raise SegRosError(f'frame {frame.name}: label {frame.label.shape} does not '
                                      f'match image {(h, w)}')
                writer.write_image(label_topic, frame.label.astype(np.uint8, copy=False),
                                   'mono8', stamp, frame_id)
                labelled += 1
            names.append(frame.name)
            stamps.append(stamp)
        if not names:
            raise SegRosError('no frames to write')
        writer.custom_data[FRAME_NAMES_KEY] = json.dumps(names, separators=(',', ':'))
    return MakeBagResult(path=Path(out), frames=len(names), labelled=labelled,
                         image_topic=image_topic,
                         label_topic=label_topic if labelled else None,
                         camera_info_topic=camera_info_topic, storage=storage, stamps_ns=stamps)


def _absolute(topic: str) -> str:
    """ROS 2 topic names are absolute: give a relative one its leading slash."""
    return topic if topic.startswith('/') else '/' + topic


def from_bag(src: str | Path, out: str | Path, storage: str = 'sqlite3',
             image_topic: str | None = None, label_topic: str | None = DEFAULT_LABEL_TOPIC,
             max_frames: int | None = None, progress: bool = True) -> MakeBagResult:
    """Copy the image, label and camera_info topics of any bag into a new rosbag2.

    The reader converts what it reads (ROS 1 payloads to CDR, ``pkg/Name`` types to
    ``pkg/msg/Name``, per-message compression undone), so the output is a plain modern rosbag2
    that every ROS 2 tool opens. Topic names get their leading slash if the source lacks it.

    Args:
        src: the source bag (any form :class:`BagReader` reads).
        out: bag folder to create (must not exist).
        storage: ``sqlite3`` or ``mcap``.
        image_topic: the one image topic to copy (default: every Image/CompressedImage topic).
        label_topic: a mono8 label topic copied along when the source has it.
        max_frames: stop after this many messages on the image topic(s).
        progress: show a tqdm bar.

    Raises:
        SegRosError: unreadable source, missing topic, nothing to copy.
    """
    with BagReader(src) as reader:
        images = [reader.require_topic(image_topic).name] if image_topic is not None else []
        extra = reader.camera_info_topics()
        label = reader.resolve_topic(label_topic) if label_topic else None
        if label in reader.topics() and label not in images:
            extra.append(reader.require_topic(label, IMAGE_TYPES[:1]).name)
        if image_topic is None:
            images = [t for t in reader.image_topics() if t != label]
            if not images:
                raise SegRosError(f'{src}: no Image or CompressedImage topics to copy')
        counts = reader.topics()
        total = sum(counts[t].count for t in images)
        if max_frames is not None:
            if max_frames < 1:
                raise SegRosError(f'--max-frames must be >= 1, got {max_frames}')
            total = min(total, max_frames)
        first: dict[str, int] = {}
        written = 0
        labelled = 0
        writer = BagWriter(Path(out), storage)
        bar = progress_bar(total=total, desc='make-bag', unit='frame', enabled=progress)
        try:
            with writer:
                for topic, t, raw, msgtype in reader.raw_messages(images + extra):
                    name = _absolute(topic)
                    if topic in images:
                        if max_frames is not None and written >= max_frames:
                            break
                        written += 1
                        first.setdefault(name, t)
                        bar.update(1)
                    elif msgtype != CAMERA_INFO_TYPE:
                        labelled += 1
                    writer.write_raw(name, msgtype, t, raw)
                if not written:
                    raise SegRosError(f'{src}: no messages on {", ".join(images)}')
        except BagReadError as exc:
            raise SegRosError(f'{exc}; no output bag written') from exc
        finally:
            bar.close()
        notes = list(reader.form.notes) + [
            f'topic {t!r} written as {_absolute(t)!r}' for t in images + extra
            if _absolute(t) != t]
        form = reader.form.describe()
    res = MakeBagResult(path=Path(out), frames=written, labelled=labelled,
                        image_topic=', '.join(_absolute(t) for t in images),
                        label_topic=next((_absolute(t) for t in extra if counts[t].msgtype
                                          != CAMERA_INFO_TYPE), None),
                        camera_info_topic=', '.join(_absolute(t) for t in extra
                                                    if counts[t].msgtype == CAMERA_INFO_TYPE),
                        storage=storage, source_form=form, notes=notes)
    return res
