"""``seg-ros extract-frames``: images out of a bag, named by stamp, for labelling.

Each selected frame of an Image or CompressedImage topic (any bag form
:class:`~seg_ros.bag.io.BagReader` reads) becomes ``<sec>.<nanosec, 9 digits>.png`` -- a name
``seg-ros eval-bag --labels DIR`` parses as the frame's header stamp, so a label PNG saved under
the same name matches that frame exactly (:mod:`seg_ros.bag.labels`). The camera calibration is
written alongside as ``camera_info.yaml`` in the camera_calibration_parsers layout that
``camera_info_manager`` loads (``camera_info_url: file:///.../camera_info.yaml``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from seg_ros.bag.io import (
    CAMERA_INFO_TYPE,
    IMAGE_TYPE,
    BagReader,
    BagReadError,
    message_to_rgb,
    ns_to_stamp,
    stamp_to_ns,
    typestore,
)
from seg_ros.bag.labels import DEFAULT_TOLERANCE_MS, parse_stamp
from seg_ros.encodings import ImageDecodeError, image_to_array
from seg_ros.errors import SegRosError
from seg_ros.progress import progress_bar

FORMATS = ('png', 'jpg')
CAMERA_INFO_FILE = 'camera_info.yaml'
# Single-channel encodings written as they are (class ids, depth): a colour conversion would
# triple the file and lose 16-bit values.
_MONO = ('mono8', '8UC1', 'mono16', '16UC1')


@dataclass
class ExtractResult:
    """What :func:`extract_frames` wrote."""

    out: Path
    topic: str
    files: list[Path] = field(default_factory=list)
    stamps_ns: list[int] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)
    camera_info: Path | None = None
    camera_info_topic: str | None = None
    camera_info_changes: bool = False
    form: str = ''
    notes: list[str] = field(default_factory=list)


def frame_stem(stamp_ns: int) -> str:
    """File stem of a frame: ``<sec>.<nanosec:09d>`` (parsed back by ``labels.parse_stamp``)."""
    sec, nsec = ns_to_stamp(stamp_ns)
    return f'{sec}.{nsec:09d}'


def read_stamps_file(path: Path) -> list[int]:
    """Stamps to extract, one a line: nanoseconds, ``sec.nsec``, or a file name made of one
    (``1700000000.100000000.png``); empty lines and ``#`` comments are skipped.

    Raises:
        SegRosError: missing file, a line that is not a stamp, or no stamps.
    """
    if not path.is_file():
        raise SegRosError(f'{path}: stamps file not found')
    stamps = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        text = line.split('#', 1)[0].strip()
        if not text:
            continue
        name = Path(text).name
        stem = name[:-len(Path(name).suffix)] if Path(name).suffix.lower() in (
            '.png', '.jpg', '.jpeg') else name
        value = int(stem) if stem.isdigit() else parse_stamp(stem)
        if value is None:
            raise SegRosError(f'{path}:{n}: {text!r} is not a stamp (give nanoseconds, '
                              '<sec>.<nsec> or a stamp-named file)')
        stamps.append(value)
    if not stamps:
        raise SegRosError(f'{path}: no stamps in the file')
    return stamps


def select(stamps: list[int], every: int | None, wanted: list[int] | None,
           tolerance_ms: float) -> list[int]:
    """Indices of the frames to extract (sorted, unique).

    Raises:
        SegRosError: ``every`` < 1, or wanted stamps that match no frame within the tolerance.
    """
    if every is not None and wanted is not None:
        raise SegRosError('give --every or --stamps, not both')
    if wanted is None:
        if every is not None and every < 1:
            raise SegRosError(f'--every must be >= 1, got {every}')
        return list(range(0, len(stamps), every or 1))
    order = np.argsort(np.asarray(stamps, dtype=np.int64), kind='stable')
    sorted_stamps = np.asarray(stamps, dtype=np.int64)[order]
    tol = int(round(tolerance_ms * 1e6))
    picked, missing = set(), []
    for s in wanted:
        pos = int(np.searchsorted(sorted_stamps, s))
        cands = [c for c in (pos - 1, pos) if 0 <= c < len(sorted_stamps)]
        best = min(cands, key=lambda c: abs(int(sorted_stamps[c]) - s))
        if abs(int(sorted_stamps[best]) - s) <= tol:
            picked.add(int(order[best]))
        else:
            missing.append(s)
    if missing:
        raise SegRosError(f'{len(missing)} of {len(wanted)} stamps match no frame within '
                          f'{tolerance_ms:g} ms (first: {frame_stem(missing[0])}); raise '
                          '--tolerance-ms or check the stamps')
    return sorted(picked)


def _camera_info_topic(reader: BagReader, image_topic: str, given: str | None) -> str | None:
    """The CameraInfo topic of the camera: given, the one next to the image topic
    (``/cam/image_raw`` -> ``/cam/camera_info``), or the bag's only one."""
    if given:
        return reader.require_topic(given, (CAMERA_INFO_TYPE,)).name
    topics = reader.camera_info_topics()
    ns = image_topic.rstrip('/').rsplit('/', 1)[0]
    if image_topic.endswith('/compressed'):  # /cam/image_raw/compressed -> /cam
        ns = ns.rsplit('/', 1)[0]
    for t in topics:
        if t == f'{ns}/camera_info':
            return t
    return topics[0] if len(topics) == 1 else None


def camera_info_yaml(msg: Any, camera_name: str) -> str:
    """A CameraInfo message in the camera_calibration_parsers YAML layout."""
    import yaml

    def mat(rows: int, cols: int, data: Any) -> dict[str, Any]:
        return {'rows': rows, 'cols': cols, 'data': [float(x) for x in data]}

    d = list(msg.d)
    doc = {'image_width': int(msg.width), 'image_height': int(msg.height),
           'camera_name': camera_name, 'camera_matrix': mat(3, 3, msg.k),
           'distortion_model': str(msg.distortion_model),
           'distortion_coefficients': mat(1, len(d), d),
           'rectification_matrix': mat(3, 3, msg.r), 'projection_matrix': mat(3, 4, msg.p)}
    return yaml.safe_dump(doc, sort_keys=False)


def _calibration_key(msg: Any) -> tuple:
    return (int(msg.width), int(msg.height), str(msg.distortion_model), tuple(msg.d),
            tuple(msg.k), tuple(msg.r), tuple(msg.p))


def _pixels(raw: bytes, msgtype: str, index: int, path: Path) -> np.ndarray:
    """The array to write: single-channel images as stored, colour as BGR for OpenCV."""
    try:
        msg = typestore().deserialize_cdr(raw, msgtype)
    except Exception as exc:  # a corrupt payload
        raise BagReadError(f'{path}: message {index} ({msgtype}) is corrupt '
                           f'({type(exc).__name__})', index) from exc
    if msgtype == IMAGE_TYPE and msg.encoding in _MONO:
        return np.ascontiguousarray(image_to_array(msg))
    return cv2.cvtColor(message_to_rgb(msg, msgtype), cv2.COLOR_RGB2BGR)


def extract_frames(bag: str | Path, topic: str, out: str | Path, every: int | None = None,
                   stamps_file: str | Path | None = None,
                   tolerance_ms: float = DEFAULT_TOLERANCE_MS, fmt: str = 'png',
                   camera_info_topic: str | None = None, overwrite: bool = False,
                   progress: bool = True) -> ExtractResult:
    """Write the selected frames of ``topic`` into ``out``, named by stamp.

    Args:
        bag: any bag form :class:`BagReader` reads.
        topic: Image or CompressedImage topic (a missing/extra leading slash is forgiven).
        out: folder to write into (created).
        every: every N-th frame (default: all).
        stamps_file: only the frames whose stamps are listed (see :func:`read_stamps_file`).
        tolerance_ms: largest |listed stamp - frame stamp| accepted.
        fmt: ``png`` (lossless; 16-bit for mono16) or ``jpg``.
        camera_info_topic: CameraInfo topic (default: the camera's, see above).
        overwrite: replace existing files; otherwise any existing target is an error.
        progress: tqdm bar (also off when stderr is not a terminal).

    Raises:
        SegRosError: bad bag/topic/selection, stamps shared by frames, existing files.
    """
    if fmt not in FORMATS:
        raise SegRosError(f'--format must be one of {FORMATS}, got {fmt!r}')
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SegRosError(f'{out} exists and is not a folder')
    wanted = read_stamps_file(Path(stamps_file)) if stamps_file is not None else None
    with BagReader(bag) as reader:
        topic = reader.require_topic(topic).name
        stamps, scan_error = reader.stamps(topic)
        if not stamps:
            raise SegRosError(f'{bag}: no readable message on {topic!r}'
                              + (f' ({scan_error})' if scan_error else ''))
        chosen = select(stamps, every, wanted, tolerance_ms)
        stems = [frame_stem(stamps[i]) for i in chosen]
        seen: dict[str, int] = {}
        for i, stem in zip(chosen, stems):
            if stem in seen:
                raise SegRosError(f'frames {seen[stem]} and {i} of {topic} share the header '
                                  f'stamp {stem}; stamp-named files need distinct stamps '
                                  '(is the camera driver stamping?)')
            seen[stem] = i
        targets = [out / f'{s}.{fmt}' for s in stems]
        info_topic = _camera_info_topic(reader, topic, camera_info_topic)
        info_path = out / CAMERA_INFO_FILE if info_topic else None
        existing = [p for p in targets + ([info_path] if info_path else []) if p.exists()]
        if existing and not overwrite:
            raise SegRosError(f'{len(existing)} of the files to write exist already in {out} '
                              f'(e.g. {existing[0].name}); pass --overwrite to replace them')
        out.mkdir(parents=True, exist_ok=True)
        res = ExtractResult(out=out, topic=topic, form=reader.form.describe())
        res.camera_info_topic = info_topic
        if info_topic:
            _write_camera_info(reader, info_topic, [stamps[i] for i in chosen], res, info_path)
        wanted_idx = dict(zip(chosen, targets))
        last = chosen[-1]
        bar = progress_bar(total=len(chosen), desc='extract-frames', unit='frame',
                           enabled=progress)
        try:
            for index, (_, _, raw, msgtype) in enumerate(reader.raw_messages([topic])):
                if index > last:
                    break
                target = wanted_idx.get(index)
                if target is None:
                    continue
                try:
                    img = _pixels(raw, msgtype, index, reader.path)
                except ImageDecodeError as exc:
                    res.undecodable.append(f'frame {index}: {exc}')
                    bar.update(1)
                    continue
                if not cv2.imwrite(str(target), img):
                    raise SegRosError(f'{target}: cannot write image')
                res.files.append(target)
                res.stamps_ns.append(stamps[index])
                bar.update(1)
        finally:
            bar.close()
        res.notes = list(reader.form.notes)
    if scan_error:
        res.notes.append(f'the bag breaks off after {len(stamps)} frames ({scan_error})')
    return res


def _write_camera_info(reader: BagReader, topic: str, frame_stamps: list[int],
                       res: ExtractResult, path: Path) -> None:
    """camera_info.yaml from the CameraInfo nearest to the first extracted frame; notes
    whether the calibration changes across the bag."""
    msgs = []
    for _, _, raw, msgtype in reader.raw_messages([topic]):
        msg = typestore().deserialize_cdr(raw, msgtype)
        msgs.append((stamp_to_ns(msg.header.stamp), msg))
    if not msgs:
        res.camera_info_topic = None
        return
    first = frame_stamps[0]
    _, msg = min(msgs, key=lambda m: abs(m[0] - first))
    res.camera_info_changes = len({_calibration_key(m) for _, m in msgs}) > 1
    name = topic.strip('/').rsplit('/', 1)[0].replace('/', '_') or 'camera'
    path.write_text(camera_info_yaml(msg, name))
    res.camera_info = path
