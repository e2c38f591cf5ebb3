"""Bag reading (ROS 1 and rosbag2 of every era) and rosbag2 writing on ``rosbags``; no ROS needed.

Everything that touches the bag container lives here, so that every way a bag can be broken
(missing, not a bag, truncated, corrupt payload, missing topic) turns into one
:class:`BagReadError` with a message a person can act on.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
import hashlib
import json
from pathlib import Path
import struct
from typing import Any

import numpy as np
import yaml

from seg_ros.bag import forms
from seg_ros.bag.salvage import SalvageBreak, salvage_messages
from seg_ros.encodings import (
    ImageDecodeError,
    array_to_image_fields,
    compressed_to_rgb,
    image_to_array,
    image_to_rgb,
)
from seg_ros.errors import SegRosError

normalize_msgtype = forms.normalize_msgtype
IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_TYPE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO_TYPE = 'sensor_msgs/msg/CameraInfo'
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
STORAGES = ('sqlite3', 'mcap')
# Key in the bag's metadata custom_data where make-bag records each frame's source file stem,
# so label PNGs can later be matched by file name.
FRAME_NAMES_KEY = 'seg_ros.frame_names'

_TYPESTORE: Any = None


def typestore() -> Any:
    """The rosbags type store used to (de)serialise messages (Humble definitions).

    sensor_msgs/Image, CompressedImage and CameraInfo have the same layout in every ROS 2
    distribution since Foxy, so one store reads and writes bags for Humble, Jazzy and Kilted.
    """
    global _TYPESTORE
    if _TYPESTORE is None:
        from rosbags.typesys import Stores, get_typestore

        _TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
    return _TYPESTORE


class BagReadError(SegRosError):
    """The bag cannot be read (missing, not a rosbag2, truncated, corrupt, wrong topic).

    Attributes:
        frames_read: frames successfully read from the image topic before the failure.
    """

    def __init__(self, message: str, frames_read: int = 0) -> None:
        super().__init__(message)
        self.frames_read = frames_read


@dataclass
class BagFrame:
    """One image message of a bag, decoded.

    Attributes:
        index: position of the message on its topic (0-based, bag order).
        stamp_ns: header stamp in nanoseconds (what the node passes through).
        log_time_ns: time the message was recorded (the bag's own timestamp).
        frame_id: header frame_id.
        rgb: H x W x 3 uint8 RGB, or None if the payload could not be decoded.
        msgtype: sensor_msgs/msg/Image or sensor_msgs/msg/CompressedImage.
        raw: the serialised CDR message (for copying into an output bag or replaying).
        error: why ``rgb`` is None.
        stamp: the header stamp exactly as recorded, ``(sec, nanosec)``: outputs reuse it
            unchanged (``stamp_ns`` normalises an out-of-range ``nanosec`` such as 1e9).
    """

    index: int
    stamp_ns: int
    log_time_ns: int
    frame_id: str
    rgb: np.ndarray | None
    msgtype: str
    raw: bytes = b''
    error: str = ''
    stamp: tuple[int, int] = (0, 0)


@dataclass
class TopicInfo:
    """Name, type and message count of one topic."""

    name: str
    msgtype: str
    count: int


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> tuple[int, int]:
    """Integer nanoseconds -> (sec, nanosec)."""
    return int(ns) // 1_000_000_000, int(ns) % 1_000_000_000


def bag_sha256(path: str | Path) -> dict[str, Any]:
    """Checksums of a bag: one per file and one over all files (sorted by relative path).

    Returns:
        ``{'sha256': combined hex digest, 'files': {relative path: hex digest}}``.
    """
    path = Path(path)
    files = sorted(p for p in path.rglob('*') if p.is_file()) if path.is_dir() else [path]
    combined = hashlib.sha256()
    per_file: dict[str, str] = {}
    for f in files:
        h = hashlib.sha256()
        with f.open('rb') as fh:
            for block in iter(lambda: fh.read(1 << 20), b''):
                h.update(block)
        rel = f.name if not path.is_dir() else str(f.relative_to(path))
        per_file[rel] = h.hexdigest()
        combined.update(rel.encode() + b'\0' + h.digest())
    return {'sha256': combined.hexdigest(), 'files': per_file}


def _storage_file_fallback(path: Path) -> Path:
    """A bag folder whose metadata.yaml is missing (a recorder killed before it closed the bag)
    can still be read through its single storage file."""
    candidates = sorted(p for p in path.iterdir() if p.suffix in ('.db3', '.mcap'))
    if len(candidates) == 1:
        return candidates[0]
    raise BagReadError(f'{path}: not a rosbag2 folder (no metadata.yaml and '
                       f'{len(candidates)} .db3/.mcap files)')


class BagReader:
    """Reads image, label and camera_info messages from a rosbag2 (sqlite3 or MCAP).

    Accepts a bag folder, or a single ``.db3`` / ``.mcap`` file. Use as a context manager.

    Raises:
        BagReadError: on open, when the bag is missing, not a rosbag2 or unreadable.
    """

    def __init__(self, path: str | Path, salvage: bool = True) -> None:
        from rosbags.rosbag2 import Reader

        self.path = Path(path)
        if not self.path.exists():
            raise BagReadError(f'{self.path}: no such bag')
        self._reader: Any = None
        self._ros1 = False
        self.custom_data: dict[str, str] = {}
        # Set when the bag could only be opened by salvaging its storage files.
        self.damage: str = ''
        self._salvage_files: list[Path] = []
        self._salvage_topics: dict[str, TopicInfo] = {}
        self._salvage_break: str = ''
        try:
            self.form = forms.detect(self.path)
        except SegRosError as exc:
            raise BagReadError(str(exc)) from exc
        if self.form.format == 'rosbag1':
            self._open_ros1(self.form.storage_file or self.path)
            return
        target = self.path
        if target.is_dir() and not (target / 'metadata.yaml').exists():
            target = _storage_file_fallback(target)
        try:
            reader = Reader(target)
            reader.open()
            self._reader = reader
        except Exception as exc:  # rosbags raises ReaderError, apsw errors, struct errors...
            files = _storage_files(self.path)
            if not salvage or not files:
                raise BagReadError(f'{self.path}: cannot open bag ({_describe(exc)}); is it a '
                                   'complete rosbag2 (sqlite3 or mcap) or ROS 1 bag?') from exc
            self.damage = _describe(exc)
            self._open_salvage(files)
        if self._reader is not None:
            meta = getattr(getattr(self._reader, 'storage', None), 'metadata', None)
            if meta is not None and getattr(meta, 'custom', None):
                self.custom_data = dict(meta.custom)
            self.form.sqlite_schema = getattr(self._reader.storage, 'schema', None) or None
            if any(normalize_msgtype(c.msgtype) != c.msgtype for c in self._reader.connections):
                self.form.old_type_names = True
                self.form.notes.append('type names without /msg/ (pre-Foxy, e.g. '
                                       'sensor_msgs/Image) read as pkg/msg/Name')
        elif (self.path / 'metadata.yaml').is_file():
            self.custom_data = _custom_data_from_yaml(self.path / 'metadata.yaml')
        if self.form.format == 'mcap' and self.form.compression == 'none':
            chunk = forms.mcap_chunk_compression(_storage_files(self.path))
            if chunk:
                self.form.compression = f'chunk {chunk}'

    def _open_ros1(self, path: Path) -> None:
        """A ROS 1 bag through rosbags' AnyReader (its own typestore from the embedded
        message definitions); payloads are converted to rosbag2 CDR in :meth:`raw_messages`."""
        from rosbags.highlevel import AnyReader

        if path.is_dir():
            path = next(p for p in sorted(path.iterdir()) if p.suffix == '.bag')
        try:
            reader = AnyReader([path], default_typestore=forms.ros1_typestore())
            reader.open()
        except Exception as exc:  # unindexed (recorder killed), truncated, not a bag
            raise BagReadError(f'{self.path}: cannot open ROS 1 bag ({_describe(exc)}); if the '
                               'recorder was killed, run `rosbag reindex` on it first') from exc
        self._reader = reader
        self._ros1 = True
        chunk = forms.ros1_chunk_compression(path)
        if chunk:
            self.form.compression = f'chunk {chunk}'

    def _open_salvage(self, files: list[Path]) -> None:
        """Index what the damaged storage files still hold (one pass, kept small)."""
        self._salvage_files = files
        counts: dict[str, TopicInfo] = {}
        try:
            for f in files:
                for topic, msgtype, _, _ in salvage_messages(f):
                    info = counts.setdefault(topic, TopicInfo(topic, msgtype, 0))
                    info.count += 1
        except SalvageBreak as exc:
            self._salvage_break = str(exc)
        if not counts:
            raise BagReadError(f'{self.path}: cannot open bag ({self.damage}) and no message '
                               f'could be recovered ({self._salvage_break or "empty"})')
        self._salvage_topics = counts

    @property
    def salvaged(self) -> bool:
        """True when the bag is damaged and read by the salvage reader."""
        return self._reader is None

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying storage."""
        reader = getattr(self, '_reader', None)
        # rosbag2 readers say is_open, AnyReader says isopen
        if reader is not None and (getattr(reader, 'is_open', False)
                                   or getattr(reader, 'isopen', False)):
            try:
                reader.close()
            except Exception:  # closing a corrupt bag must not mask the real error
                pass

    @property
    def output_storage(self) -> str:
        """Storage for bags written from this one: outputs stay rosbag2 (a ROS 1 input gives a
        sqlite3 output, the rosbag2 default before Iron)."""
        return 'mcap' if self.storage_id == 'mcap' else 'sqlite3'

    @property
    def storage_id(self) -> str:
        """``sqlite3``, ``mcap`` or ``rosbag1``."""
        if self.form.format == 'rosbag1':
            return 'rosbag1'
        name = ''
        for p in ([self.path] if not self.path.is_dir() else list(self.path.iterdir())):
            if p.suffix == '.mcap':
                name = 'mcap'
            elif p.suffix == '.db3' and not name:
                name = 'sqlite3'
        return name or 'sqlite3'

    def topics(self) -> dict[str, TopicInfo]:
        """All topics: name -> :class:`TopicInfo`."""
        if self._reader is None:
            return {k: TopicInfo(v.name, v.msgtype, v.count)
                    for k, v in self._salvage_topics.items()}
        out: dict[str, TopicInfo] = {}
        for c in self._reader.connections:
            info = out.get(c.topic)
            out[c.topic] = TopicInfo(c.topic, normalize_msgtype(c.msgtype),
                                     c.msgcount + (info.count if info else 0))
        return out

    def resolve_topic(self, topic: str) -> str:
        """The topic's name as stored, forgiving a missing or extra leading slash.

        ROS 1 and ROS 2 tools store topics with a leading slash, but bags written by hand or
        by other tools may not; a forgiven mismatch is added to ``form.notes``.
        """
        topics = self.topics()
        if topic in topics or not topic:
            return topic
        alt = topic[1:] if topic.startswith('/') else '/' + topic
        if alt in topics:
            how = 'without' if topic.startswith('/') else 'with'
            note = f'topic {topic!r} is stored {how} its leading slash: read {alt!r}'
            if note not in self.form.notes:
                self.form.notes.append(note)
            return alt
        return topic

    def metadata_count(self, topic: str) -> int | None:
        """Message count of ``topic`` as metadata.yaml states it (None: no readable
        metadata.yaml, or the topic is not listed). Only a claim: the storage may hold fewer
        messages (a damaged bag) or more."""
        meta = self.path / 'metadata.yaml' if self.path.is_dir() else None
        if meta is None or not meta.is_file():
            return None
        try:
            info = yaml.safe_load(meta.read_text())['rosbag2_bagfile_information']
            total = 0
            found = False
            for entry in info.get('topics_with_message_count') or []:
                if entry['topic_metadata']['name'] == topic:
                    total += int(entry['message_count'])
                    found = True
            return total if found else None
        except Exception:  # a damaged metadata.yaml makes no claim
            return None

    def image_topics(self) -> list[str]:
        """Topics holding Image or CompressedImage messages."""
        return [t.name for t in self.topics().values() if t.msgtype in IMAGE_TYPES]

    def frame_names(self) -> list[str] | None:
        """Source file stems recorded by ``seg-ros make-bag`` (None for other bags)."""
        text = self.custom_data.get(FRAME_NAMES_KEY)
        if not text:
            return None
        try:
            names = json.loads(text)
        except json.JSONDecodeError:
            return None
        return [str(n) for n in names] if isinstance(names, list) else None

    def require_topic(self, topic: str, types: tuple[str, ...] = IMAGE_TYPES) -> TopicInfo:
        """The topic's info, or a :class:`BagReadError` that lists what the bag does hold."""
        topics = self.topics()
        info = topics.get(self.resolve_topic(topic))
        if info is None:
            listing = ', '.join(f'{t.name} [{t.msgtype.split("/")[-1]}]'
                                for t in topics.values()) or 'none'
            raise BagReadError(f'{self.path}: topic {topic!r} not in bag (topics: {listing})')
        if info.msgtype not in types:
            raise BagReadError(f'{self.path}: topic {topic!r} has type {info.msgtype}, '
                               f'expected {" or ".join(types)}')
        return info

    def raw_messages(self, topics: list[str]) -> Iterator[tuple[str, int, bytes, str]]:
        """(topic, log time ns, CDR bytes, msgtype) in bag order for the given topics.

        Raises:
            BagReadError: the container breaks off (truncated file, corrupt chunk or page);
                ``frames_read`` counts messages yielded before.
        """
        topics = [self.resolve_topic(t) for t in topics]
        if self._reader is None:
            yield from self._salvaged_messages(topics)
            return
        conns = [c for c in self._reader.connections if c.topic in topics]
        if not conns:
            return
        count = 0
        it = self._reader.messages(connections=conns)
        while True:
            try:
                conn, t, raw = next(it)
            except StopIteration:
                return
            except Exception as exc:
                raise BagReadError(f'{self.path}: bag is truncated or corrupt after {count} '
                                   f'messages ({_describe(exc)})', count) from exc
            msgtype = normalize_msgtype(conn.msgtype)
            yield conn.topic, int(t), self._to_cdr(raw, msgtype, count), msgtype
            count += 1

    def _to_cdr(self, raw: Any, msgtype: str, index: int) -> bytes:
        """A payload as rosbag2 CDR: ROS 1 messages converted, compressed payloads (a
        per-message-compressed bag read without the metadata.yaml that says so) unpacked."""
        if self._ros1:
            try:
                msg = self._reader.deserialize(bytes(raw), msgtype)
                ts = typestore()
                return bytes(ts.serialize_cdr(forms.ros1_to_ros2(msg, msgtype, ts), msgtype))
            except SegRosError as exc:
                raise BagReadError(f'{self.path}: {exc}', index) from exc
            except Exception as exc:  # a corrupt ROS 1 payload
                raise BagReadError(f'{self.path}: message {index} ({msgtype}) is corrupt '
                                   f'({_describe(exc)})', index) from exc
        raw = bytes(raw)
        kind = forms.payload_compression(raw)
        if not kind:
            return raw
        try:
            out = forms.decompress_payload(raw, kind)
        except SegRosError as exc:
            raise BagReadError(f'{self.path}: message {index} ({msgtype}): {exc}',
                               index) from exc
        note = (f'payloads are {kind}-compressed one by one (rosbag2 compression_mode: message) '
                'and no metadata.yaml says so: decompressed')
        if note not in self.form.notes:
            self.form.notes.append(note)
            if self.form.compression == 'none':
                self.form.compression = f'message {kind}'
        return out

    def _salvaged_messages(self, topics: list[str]) -> Iterator[tuple[str, int, bytes, str]]:
        count = 0
        try:
            for f in self._salvage_files:
                for topic, msgtype, t, raw in salvage_messages(f):
                    if topic in topics:
                        count += 1
                        msgtype = normalize_msgtype(msgtype)
                        yield topic, t, self._to_cdr(raw, msgtype, count - 1), msgtype
        except SalvageBreak as exc:
            raise BagReadError(f'{self.path}: bag is truncated or damaged ({self.damage}; '
                               f'{exc}); {count} messages before the break were read',
                               count) from exc

    def frames(self, topic: str, decode: bool = True) -> Iterator[BagFrame]:
        """Decoded image frames of ``topic`` in bag order.

        A frame whose pixels cannot be decoded (bad step, corrupt JPEG) is yielded with
        ``rgb=None`` and ``error`` set, so callers can count it and go on, like the node does.

        Raises:
            BagReadError: missing topic, or a container / CDR error (truncated, corrupt);
                ``frames_read`` says how many frames were yielded before.
        """
        topic = self.require_topic(topic).name
        index = 0
        try:
            for _, t, raw, msgtype in self.raw_messages([topic]):
                yield decode_frame(raw, msgtype, index, t, self.path, decode)
                index += 1
        except BagReadError as exc:
            exc.frames_read = index
            raise

    def stamps(self, topic: str) -> tuple[list[int], str]:
        """Header stamps of every readable message on ``topic`` without decoding pixels.

        Returns:
            (stamps in bag order, error message or '' when the whole topic was readable).
        """
        topic = self.require_topic(topic).name
        stamps: list[int] = []
        try:
            for _, _, raw, _ in self.raw_messages([topic]):
                stamps.append(cdr_header_stamp(raw, self.path, len(stamps)))
        except BagReadError as exc:
            return stamps, str(exc)
        return stamps, ''

    def label_messages(self, topic: str) -> Iterator[tuple[int, np.ndarray]]:
        """(header stamp ns, H x W uint8 label) for a mono8 label topic.

        Raises:
            BagReadError: missing topic, wrong encoding, truncated/corrupt container.
        """
        topic = self.require_topic(topic, (IMAGE_TYPE,)).name
        for i, (_, _, raw, msgtype) in enumerate(self.raw_messages([topic])):
            msg = _deserialize(raw, msgtype, self.path, i)
            if msg.encoding not in ('mono8', '8UC1'):
                raise BagReadError(f'{self.path}: label topic {topic!r} has encoding '
                                   f'{msg.encoding!r}; labels must be mono8 class ids')
            try:
                label = np.array(image_to_array(msg), copy=True)
            except ImageDecodeError as exc:
                raise BagReadError(f'{self.path}: label message {i} on {topic!r}: {exc}') from exc
            yield stamp_to_ns(msg.header.stamp), label

    def camera_info_topics(self) -> list[str]:
        """Topics holding sensor_msgs/CameraInfo."""
        return [t.name for t in self.topics().values() if t.msgtype == CAMERA_INFO_TYPE]


def _storage_files(path: Path) -> list[Path]:
    """Storage files of a bag folder (in metadata order when it is readable) or the file."""
    if not path.is_dir():
        return [path] if path.suffix in ('.db3', '.mcap') else []
    files = sorted(p for p in path.iterdir() if p.suffix in ('.db3', '.mcap'))
    meta = path / 'metadata.yaml'
    if meta.is_file():
        try:
            info = yaml.safe_load(meta.read_text())['rosbag2_bagfile_information']
            listed = [path / Path(x).name for x in info['relative_file_paths']]
            files = [p for p in listed if p.is_file()] or files
        except Exception:  # an unreadable metadata.yaml: fall back to the files present
            pass
    return files


def _custom_data_from_yaml(meta: Path) -> dict[str, str]:
    try:
        info = yaml.safe_load(meta.read_text())['rosbag2_bagfile_information']
        return {str(k): str(v) for k, v in (info.get('custom_data') or {}).items()}
    except Exception:  # custom data is optional; a damaged metadata.yaml just has none
        return {}


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ''
    return f'{type(exc).__name__}: {text}' if text else type(exc).__name__


def _deserialize(raw: bytes, msgtype: str, path: Path, index: int) -> Any:
    try:
        return typestore().deserialize_cdr(raw, msgtype)
    except Exception as exc:  # a corrupt payload fails in many ways inside the CDR decoder
        raise BagReadError(f'{path}: message {index} ({msgtype}) is corrupt '
                           f'({_describe(exc)})', index) from exc


def cdr_header_stamp(raw: bytes, path: Path | str = '', index: int = 0) -> int:
    """Header stamp (ns) of a serialised message whose first field is a std_msgs/Header.

    The stamp sits right after the 4-byte CDR encapsulation header (int32 sec, uint32 nanosec
    in the byte order the encapsulation names), so scanning a bag's stamps costs no
    deserialisation of the pixel data.
    """
    if len(raw) < 12 or raw[0] != 0 or raw[1] not in (0, 1, 2, 3):
        raise BagReadError(f'{path}: message {index} is not CDR-encoded (corrupt)', index)
    order = '<' if raw[1] & 1 else '>'
    sec, nsec = struct.unpack(order + 'iI', raw[4:12])
    return sec * 1_000_000_000 + nsec


def decode_frame(raw: bytes, msgtype: str, index: int, log_time_ns: int,
                 path: Path | str = '', decode: bool = True) -> BagFrame:
    """Deserialise one image message into a :class:`BagFrame`.

    Raises:
        BagReadError: the CDR payload is corrupt (pixel decode errors go into ``error``).
    """
    msg = _deserialize(raw, msgtype, Path(path), index)
    rgb, error = None, ''
    if decode:
        try:
            rgb = message_to_rgb(msg, msgtype)
        except ImageDecodeError as exc:
            error = str(exc)
    stamp = msg.header.stamp
    return BagFrame(index=index, stamp_ns=stamp_to_ns(stamp), log_time_ns=log_time_ns,
                    frame_id=str(msg.header.frame_id), rgb=rgb, msgtype=msgtype, raw=raw,
                    error=error, stamp=(int(stamp.sec), int(stamp.nanosec)))


def message_to_rgb(msg: Any, msgtype: str) -> np.ndarray:
    """Decode a (rosbags or rclpy) Image / CompressedImage to H x W x 3 uint8 RGB.

    Raises:
        ImageDecodeError: the payload is not a decodable image.
    """
    if msgtype == COMPRESSED_TYPE:
        return compressed_to_rgb(msg.data, msg.format)
    return image_to_rgb(msg)


def _header(stamp_ns: int, frame_id: str, stamp: tuple[int, int] | None = None) -> Any:
    ts = typestore()
    sec, nsec = ns_to_stamp(stamp_ns) if stamp is None else stamp
    Time = ts.types['builtin_interfaces/msg/Time']
    Header = ts.types['std_msgs/msg/Header']
    return Header(stamp=Time(sec=sec, nanosec=nsec), frame_id=frame_id)


def default_camera_info(height: int, width: int, hfov_deg: float = 90.0) -> dict[str, Any]:
    """Pinhole intrinsics for an undistorted camera with the given horizontal field of view.

    Used when the source carries no calibration (synthetic frames, plain image folders):
    RViz and Foxglove need a CameraInfo to project, and the node passes it through.
    """
    fx = width / (2.0 * np.tan(np.radians(hfov_deg) / 2.0))
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    return {'height': height, 'width': width, 'distortion_model': 'plumb_bob',
            'd': [0.0] * 5, 'k': [fx, 0.0, cx, 0.0, fx, cy, 0.0, 0.0, 1.0],
            'r': [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            'p': [fx, 0.0, cx, 0.0, 0.0, fx, cy, 0.0, 0.0, 0.0, 1.0, 0.0]}


@dataclass
class BagWriter:
    """Writes Image / CompressedImage / CameraInfo messages into a new rosbag2.

    Use as a context manager; the bag is complete (metadata.yaml written) only after a clean
    exit. On an exception the partial bag is removed so it can never be mistaken for a good one.

    Attributes:
        path: bag folder to create (must not exist).
        storage: ``sqlite3`` or ``mcap``.
        custom_data: string key/values stored in metadata.yaml.
    """

    path: Path
    storage: str = 'sqlite3'
    custom_data: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path = Path(self.path)
        if self.storage not in STORAGES:
            raise SegRosError(f'storage must be one of {STORAGES}, got {self.storage!r}')
        if self.path.exists():
            raise SegRosError(f'{self.path} exists already; choose another --out or remove it')
        self.path.parent.mkdir(parents=True, exist_ok=True)
        plugin = StoragePlugin.MCAP if self.storage == 'mcap' else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=9, storage_plugin=plugin)
        self._conns: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> BagWriter:
        self._writer.open()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            for key, value in self.custom_data.items():
                self._writer.set_custom_data(key, value)
            self._writer.close()
        else:
            import shutil

            self._writer.abort()
            shutil.rmtree(self.path, ignore_errors=True)

    def _conn(self, topic: str, msgtype: str) -> Any:
        conn = self._conns.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=typestore())
            self._conns[topic] = conn
            self.counts[topic] = 0
        elif conn.msgtype != msgtype:
            raise SegRosError(f'topic {topic!r} already holds {conn.msgtype}, not {msgtype}')
        return conn

    def write_raw(self, topic: str, msgtype: str, log_time_ns: int, raw: bytes) -> None:
        """Copy an already serialised message (e.g. from an input bag) unchanged."""
        self._writer.write(self._conn(topic, msgtype), int(log_time_ns), raw)
        self.counts[topic] += 1

    def write_message(self, topic: str, msgtype: str, log_time_ns: int, msg: Any) -> None:
        """Serialise and write a rosbags message object."""
        self.write_raw(topic, msgtype, log_time_ns,
                       bytes(typestore().serialize_cdr(msg, msgtype)))

    def write_image(self, topic: str, arr: np.ndarray, encoding: str, stamp_ns: int,
                    frame_id: str, log_time_ns: int | None = None,
                    stamp: tuple[int, int] | None = None) -> None:
        """Write an array as sensor_msgs/Image (``encoding`` as in :mod:`seg_ros.encodings`).

        Args:
            stamp: header ``(sec, nanosec)`` written as given (e.g. an input message's header,
                even one whose ``nanosec`` is out of range); default: from ``stamp_ns``.
        """
        fields = array_to_image_fields(arr, encoding)
        fields['data'] = np.frombuffer(fields['data'], dtype=np.uint8)
        msg = typestore().types[IMAGE_TYPE](header=_header(stamp_ns, frame_id, stamp), **fields)
        self.write_message(topic, IMAGE_TYPE, stamp_ns if log_time_ns is None else log_time_ns,
                           msg)

    def write_compressed(self, topic: str, data: bytes, fmt: str, stamp_ns: int,
                         frame_id: str, log_time_ns: int | None = None) -> None:
        """Write encoded JPEG/PNG bytes as sensor_msgs/CompressedImage."""
        msg = typestore().types[COMPRESSED_TYPE](
            header=_header(stamp_ns, frame_id), format=fmt,
            data=np.frombuffer(data, dtype=np.uint8))
        self.write_message(topic, COMPRESSED_TYPE,
                           stamp_ns if log_time_ns is None else log_time_ns, msg)

    def write_camera_info(self, topic: str, info: dict[str, Any], stamp_ns: int,
                          frame_id: str) -> None:
        """Write sensor_msgs/CameraInfo from :func:`default_camera_info`-style fields."""
        ts = typestore()
        roi = ts.types['sensor_msgs/msg/RegionOfInterest'](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        msg = ts.types[CAMERA_INFO_TYPE](
            header=_header(stamp_ns, frame_id), height=int(info['height']),
            width=int(info['width']), distortion_model=str(info['distortion_model']),
            d=np.asarray(info['d'], dtype=np.float64), k=np.asarray(info['k'], np.float64),
            r=np.asarray(info['r'], np.float64), p=np.asarray(info['p'], np.float64),
            binning_x=0, binning_y=0, roi=roi)
        self.write_message(topic, CAMERA_INFO_TYPE, stamp_ns, msg)
