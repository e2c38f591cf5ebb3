"""Which form a bag on disk has, and the conversions that make every form read alike.

People's bags come as ROS 1 ``.bag`` files, rosbag2 folders of every era (sqlite3 without the
newer tables or without metadata.yaml, MCAP), bare storage files, pre-Foxy type names
(``sensor_msgs/Image``) and zstd/lz4-compressed payloads. :class:`seg_ros.bag.io.BagReader`
reads all of them through the helpers here, so that everything above it (eval-bag, make-bag,
extract-frames, int8 calibration, the live player) only ever sees rosbag2 CDR payloads with
``pkg/msg/Name`` types.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from seg_ros.errors import SegRosError

ROS1_MAGIC = b'#ROSBAG V2.0'
ROS1_OLD_MAGIC = b'#ROSRECORD V1.2'
MCAP_MAGIC = b'\x89MCAP0\r\n'
SQLITE_MAGIC = b'SQLite format 3\x00'
ZSTD_MAGIC = b'\x28\xb5\x2f\xfd'
LZ4_MAGIC = b'\x04\x22\x4d\x18'
# Compressions a payload or a whole file may carry that nothing here decompresses: named in the
# error so the user knows which tool to run.
OTHER_COMPRESSIONS = {b'BZh': 'bzip2', b'\x1f\x8b': 'gzip', b'\xfd7zXZ\x00': 'xz'}

ROS2_DISTROS = ('ardent', 'bouncy', 'crystal', 'dashing', 'eloquent', 'foxy', 'galactic',
                'humble', 'iron', 'jazzy', 'kilted', 'lyrical', 'rolling')
# rosbag2 metadata.yaml versions and the distributions whose rosbag2 wrote them (the version is
# bumped with each format change; a later distribution may keep writing an older version).
_METADATA_ERA = {1: 'Dashing', 2: 'Eloquent', 3: 'Foxy', 4: 'Foxy/Galactic',
                 5: 'Galactic/Humble', 6: 'Humble', 7: 'Iron', 8: 'Iron/Jazzy',
                 9: 'Jazzy or later'}
# rosbag2 sqlite3 database schemas (rosbags' Sqlite3Reader.schema): 1 has no
# offered_qos_profiles column (before Foxy), 3 adds the schema/metadata tables (Humble),
# 4 the message_definitions table (Iron and later).
_SQLITE_ERA = {1: 'Dashing/Eloquent', 2: 'Foxy-Humble', 3: 'Humble', 4: 'Iron or later'}


@dataclass
class BagForm:
    """What kind of bag was read (written into reports).

    Attributes:
        format: ``rosbag1``, ``sqlite3`` or ``mcap``.
        container: ``folder`` (with metadata.yaml), ``folder without metadata.yaml`` or
            ``file``.
        storage_file: the file actually opened (None: the folder through metadata.yaml).
        metadata_version: metadata.yaml ``version`` (None without one).
        ros_distro: metadata.yaml ``ros_distro`` when the writer recorded it.
        compression: ``none``, ``message zstd`` (each payload), ``chunk zstd`` / ``chunk lz4``
            (MCAP chunks), ``chunk bz2`` / ``chunk lz4`` (ROS 1 chunks).
        notes: what was mapped or forgiven on the way (type names, topic names, payloads).
    """

    format: str
    container: str
    storage_file: Path | None = None
    metadata_version: int | None = None
    ros_distro: str = ''
    compression: str = 'none'
    sqlite_schema: int | None = None
    old_type_names: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def era(self) -> str:
        """The distribution era the writer belongs to, as far as the file tells."""
        if self.format == 'rosbag1':
            return 'ROS 1'
        if self.ros_distro.lower() in ROS2_DISTROS:
            return self.ros_distro.capitalize()
        if self.old_type_names:
            return 'Dashing/Eloquent (pre-Foxy type names)'
        if self.metadata_version in _METADATA_ERA:
            return _METADATA_ERA[self.metadata_version]  # describe() names the version
        if self.sqlite_schema in _SQLITE_ERA:
            return f'{_SQLITE_ERA[self.sqlite_schema]} (sqlite3 schema {self.sqlite_schema})'
        return 'unknown (no metadata.yaml)'

    def describe(self) -> str:
        """One line: format, container, era, compression."""
        name = {'rosbag1': 'ROS 1 bag (v2.0)', 'sqlite3': 'rosbag2 sqlite3',
                'mcap': 'rosbag2 MCAP'}[self.format]
        comp = '' if self.compression == 'none' else f', {self.compression} compressed'
        writer = (f' (writer: {self.ros_distro})' if self.ros_distro
                  and self.ros_distro.lower() not in ROS2_DISTROS else '')
        where = self.container + (f' (metadata.yaml v{self.metadata_version})'
                                  if self.metadata_version is not None else '')
        return f'{name}, {where}{comp}; era: {self.era}{writer}'

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary for report.json."""
        return {'format': self.format, 'container': self.container, 'era': self.era,
                'metadata_version': self.metadata_version, 'compression': self.compression,
                'sqlite_schema': self.sqlite_schema, 'description': self.describe(),
                'notes': list(self.notes)}


def file_magic(path: Path, n: int = 16) -> bytes:
    """The first ``n`` bytes of a file (b'' when unreadable)."""
    try:
        with path.open('rb') as fh:
            return fh.read(n)
    except OSError:
        return b''


def _compression_name(head: bytes) -> str:
    if head.startswith(ZSTD_MAGIC):
        return 'zstd'
    if head.startswith(LZ4_MAGIC):
        return 'lz4'
    for magic, name in OTHER_COMPRESSIONS.items():
        if head.startswith(magic):
            return name
    return ''


def refuse_compressed_file(path: Path) -> None:
    """A whole-file-compressed bag (rosbag2 ``compression_mode: file``, or a .gz download)
    cannot be read in place: say what it is and what to run.

    Raises:
        SegRosError: the file is compressed as a whole.
    """
    name = _compression_name(file_magic(path))
    if name:
        tool = {'zstd': 'zstd -d', 'lz4': 'lz4 -d', 'bzip2': 'bunzip2', 'gzip': 'gunzip',
                'xz': 'unxz'}[name]
        raise SegRosError(f'{path}: the whole file is {name}-compressed (rosbag2 '
                          f'compression_mode: file, or a compressed download); decompress it '
                          f'first (`{tool} {path.name}`) and pass the .db3/.mcap/.bag it gives')


def read_metadata(folder: Path) -> dict[str, Any] | None:
    """``rosbag2_bagfile_information`` of a folder's metadata.yaml (None: absent/unreadable)."""
    meta = folder / 'metadata.yaml'
    if not meta.is_file():
        return None
    try:
        info = yaml.safe_load(meta.read_text())['rosbag2_bagfile_information']
        return info if isinstance(info, dict) else None
    except Exception:  # a damaged metadata.yaml: read the storage file instead
        return None


def detect(path: Path) -> BagForm:
    """The bag form of a file or folder, before any reader opens it.

    Raises:
        SegRosError: a form no reader here handles (whole-file compression, ROS 1 v1.2,
            a folder with several ROS 1 bags).
    """
    if path.is_dir():
        info = read_metadata(path)
        if info is not None:
            storage = str(info.get('storage_identifier') or 'sqlite3')
            mode = str(info.get('compression_mode') or '').lower()
            fmt = str(info.get('compression_format') or '').lower()
            if mode == 'file':
                raise SegRosError(f'{path}: the bag is file-compressed (metadata.yaml '
                                  f'compression_mode: file, {fmt}); decompress each storage '
                                  f'file (`{fmt or "zstd"} -d FILE`) and pass the .db3/.mcap')
            form = BagForm(format='mcap' if storage == 'mcap' else 'sqlite3', container='folder',
                           metadata_version=_int(info.get('version')),
                           ros_distro=str(info.get('ros_distro') or ''),
                           compression=f'message {fmt or "zstd"}' if mode == 'message' else 'none')
            return form
        files = sorted(p for p in path.iterdir() if p.suffix in ('.db3', '.mcap', '.bag'))
        if len(files) != 1:
            raise SegRosError(f'{path}: not a rosbag2 folder (no metadata.yaml and '
                              f'{len(files)} .db3/.mcap/.bag files)')
        form = detect(files[0])
        form.container = 'folder without metadata.yaml'
        return form
    head = file_magic(path)
    refuse_compressed_file(path)
    if head.startswith(ROS1_MAGIC):
        return BagForm(format='rosbag1', container='file', storage_file=path)
    if head.startswith(ROS1_OLD_MAGIC):
        raise SegRosError(f'{path}: a ROS 1 bag of format 1.2 (before ROS C Turtle); convert it '
                          'with `rosbag fix` on a ROS 1 machine first')
    if head.startswith(MCAP_MAGIC):
        return BagForm(format='mcap', container='file', storage_file=path)
    if head.startswith(SQLITE_MAGIC):
        return BagForm(format='sqlite3', container='file', storage_file=path)
    suffix = {'.bag': 'rosbag1', '.mcap': 'mcap', '.db3': 'sqlite3'}.get(path.suffix)
    if suffix is None:
        raise SegRosError(f'{path}: not a bag (neither a ROS 1 .bag, a rosbag2 folder, nor a '
                          '.db3 / .mcap file)')
    # a known suffix with the wrong content: let the reader say what is broken (salvage path)
    return BagForm(format=suffix, container='file', storage_file=path)


def mcap_chunk_compression(files: list[Path], max_records: int = 64) -> str:
    """Compression of the first chunk record of the first MCAP file ('' for none/unknown).

    Reads record headers only (opcode, length) up to the first Chunk record, whose
    ``compression`` string follows its three 8-byte and one 4-byte fields.
    """
    import struct

    for f in files[:1]:
        try:
            with f.open('rb') as fh:
                if fh.read(8) != MCAP_MAGIC:
                    return ''
                for _ in range(max_records):
                    head = fh.read(9)
                    if len(head) < 9:
                        return ''
                    op, length = head[0], struct.unpack('<Q', head[1:])[0]
                    if op == 0x06:  # Chunk
                        fields = fh.read(28 + 4)
                        n = struct.unpack('<I', fields[28:32])[0]
                        return fh.read(n).decode('utf-8', 'replace')
                    fh.seek(length, 1)
        except (OSError, struct.error):
            return ''
    return ''


def ros1_chunk_compression(path: Path) -> str:
    """Compression of a ROS 1 bag's first chunk ('' for none): its record header holds a
    length-prefixed ``compression=<name>`` field."""
    import struct

    head = file_magic(path, 1 << 16)
    pos = head.find(b'compression=')
    if pos < 4:
        return ''
    (length,) = struct.unpack('<I', head[pos - 4:pos])
    name = head[pos + len(b'compression='):pos + length].decode('ascii', 'replace')
    return '' if name == 'none' else name


def _int(x: Any) -> int | None:
    try:
        return int(x)
    except (TypeError, ValueError):
        return None


def normalize_msgtype(msgtype: str) -> str:
    """``pkg/Name`` (ROS 1, and rosbag2 before Foxy) -> ``pkg/msg/Name``."""
    parts = msgtype.split('/')
    if len(parts) == 2 and all(parts):
        return f'{parts[0]}/msg/{parts[1]}'
    return msgtype


def payload_compression(raw: bytes) -> str:
    """Name of the compression a payload carries ('' for a plain CDR message).

    A CDR message starts with its encapsulation header ``00 00|01|02|03 ...``, which no
    compression magic number matches, so the check cannot mistake a real message.
    """
    if len(raw) >= 2 and raw[0] == 0 and raw[1] in (0, 1, 2, 3):
        return ''
    return _compression_name(bytes(raw[:8]))


def decompress_payload(raw: bytes, name: str) -> bytes:
    """Decompress a zstd or lz4 frame (rosbag2 ``compression_mode: message`` payloads).

    Raises:
        SegRosError: another compression, or a frame that does not decompress.
    """
    try:
        if name == 'zstd':
            try:
                from compression import zstd  # novermin (Python >= 3.14; ImportError below)
            except ImportError:
                from backports import zstd  # what rosbags itself uses before 3.14
            return bytes(zstd.decompress(raw))
        if name == 'lz4':
            from lz4.frame import decompress

            return bytes(decompress(raw))
    except Exception as exc:  # a cut or corrupt frame: the caller reports the message index
        raise SegRosError(f'{name} payload does not decompress ({type(exc).__name__})') from exc
    raise SegRosError(f'payload is {name}-compressed; decompress the bag first (e.g. '
                      '`ros2 bag convert` or the matching command-line tool)')


def ros1_typestore() -> Any:
    """A Noetic type store, for ROS 1 bags that lack embedded definitions (rare)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS1_NOETIC)


def _ros2_fields(msg: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """Fields of a ROS 1 message under their ROS 2 names (CameraInfo: ``K`` -> ``k``)."""
    out = {}
    for name in names:
        value = getattr(msg, name) if hasattr(msg, name) else getattr(msg, name.upper())
        out[name] = value
    return out


def ros1_to_ros2(msg: Any, msgtype: str, ts2: Any) -> Any:
    """A deserialised ROS 1 Image / CompressedImage / CameraInfo as a ROS 2 (Humble) message.

    The layouts differ only in the header (ROS 1 has ``seq``) and CameraInfo's upper-case
    matrix names, so the pixels and stamps pass through unchanged.

    Raises:
        SegRosError: any other message type (only image, label and camera_info topics are read).
    """
    t = ts2.types
    header = t['std_msgs/msg/Header'](
        stamp=t['builtin_interfaces/msg/Time'](sec=int(msg.header.stamp.sec),
                                               nanosec=int(msg.header.stamp.nanosec)),
        frame_id=str(msg.header.frame_id))
    if msgtype == 'sensor_msgs/msg/Image':
        f = _ros2_fields(msg, ('height', 'width', 'encoding', 'is_bigendian', 'step'))
        return t[msgtype](header=header, data=np.asarray(msg.data, dtype=np.uint8), **f)
    if msgtype == 'sensor_msgs/msg/CompressedImage':
        return t[msgtype](header=header, format=str(msg.format),
                          data=np.asarray(msg.data, dtype=np.uint8))
    if msgtype == 'sensor_msgs/msg/CameraInfo':
        f = _ros2_fields(msg, ('height', 'width', 'distortion_model', 'binning_x', 'binning_y'))
        mats = {k: np.asarray(v, dtype=np.float64)
                for k, v in _ros2_fields(msg, ('d', 'k', 'r', 'p')).items()}
        roi = msg.roi
        roi2 = t['sensor_msgs/msg/RegionOfInterest'](
            x_offset=int(roi.x_offset), y_offset=int(roi.y_offset), height=int(roi.height),
            width=int(roi.width), do_rectify=bool(roi.do_rectify))
        return t[msgtype](header=header, roi=roi2, **f, **mats)
    raise SegRosError(f'{msgtype} is not read from ROS 1 bags (only Image, CompressedImage and '
                      'CameraInfo topics are)')
