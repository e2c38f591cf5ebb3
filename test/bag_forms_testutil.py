"""Writers for the bag forms people have on disk, built from one modern rosbag2 reference bag.

Every writer copies every message of the reference (images, labels, camera_info) unchanged in
content, so a form read correctly must score exactly like the reference. The forms are built
explicitly, not with a converter: a ROS 1 bag (rosbags.rosbag1, optional bz2/lz4 chunks), a
pre-Foxy sqlite3 database (schema 1: no offered_qos_profiles, ``pkg/Name`` type names, with or
without a version-1 metadata.yaml), and rosbag2 bags with per-message or per-chunk zstd
compression (MCAP bare or in its folder).
"""
from __future__ import annotations

from pathlib import Path
import shutil
import sqlite3

from seg_ros.bag.io import BagReader, typestore


def messages(ref: Path) -> list[tuple[str, str, int, bytes]]:
    """(topic, msgtype, log time, CDR) of every message of the reference bag, in bag order."""
    with BagReader(ref) as r:
        topics = {t.name: t.msgtype for t in r.topics().values()}
        return [(topic, msgtype, t, raw)
                for topic, t, raw, msgtype in r.raw_messages(list(topics))]


def _to_ros1(msg, msgtype: str, ts1, seq: int):
    t = ts1.types
    header = t['std_msgs/msg/Header'](
        seq=seq, stamp=t['builtin_interfaces/msg/Time'](sec=msg.header.stamp.sec,
                                                        nanosec=msg.header.stamp.nanosec),
        frame_id=msg.header.frame_id)
    if msgtype == 'sensor_msgs/msg/Image':
        return t[msgtype](header=header, height=msg.height, width=msg.width,
                          encoding=msg.encoding, is_bigendian=msg.is_bigendian, step=msg.step,
                          data=msg.data)
    if msgtype == 'sensor_msgs/msg/CompressedImage':
        return t[msgtype](header=header, format=msg.format, data=msg.data)
    roi = msg.roi
    return t[msgtype](header=header, height=msg.height, width=msg.width,
                      distortion_model=msg.distortion_model, D=msg.d, K=msg.k, R=msg.r, P=msg.p,
                      binning_x=msg.binning_x, binning_y=msg.binning_y,
                      roi=t['sensor_msgs/msg/RegionOfInterest'](
                          x_offset=roi.x_offset, y_offset=roi.y_offset, height=roi.height,
                          width=roi.width, do_rectify=roi.do_rectify))


def write_ros1(ref: Path, out: Path, compression: str | None = None) -> Path:
    """A ROS 1 .bag (v2.0) with the reference's messages; ``compression``: bz2 or lz4 chunks."""
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    ts1, ts2 = get_typestore(Stores.ROS1_NOETIC), typestore()
    writer = Writer(out)
    if compression:
        writer.set_compression(getattr(Writer.CompressionFormat, compression.upper()))
    conns = {}
    with writer:
        for i, (topic, msgtype, t, raw) in enumerate(messages(ref)):
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=ts1)
            msg1 = _to_ros1(ts2.deserialize_cdr(raw, msgtype), msgtype, ts1, i)
            writer.write(conns[topic], t, bytes(ts1.serialize_ros1(msg1, msgtype)))
    return out


def write_pre_foxy_sqlite3(ref: Path, out: Path, metadata: bool = False,
                           strip_slash: bool = False) -> Path:
    """A Dashing/Eloquent-style bag: sqlite3 schema 1 (topics without offered_qos_profiles),
    ``sensor_msgs/Image`` type names; a folder with a version-1 metadata.yaml, or (default)
    the bare .db3 file. ``strip_slash`` stores topic names without their leading slash."""
    msgs = messages(ref)
    folder = out if metadata else out.parent
    folder.mkdir(parents=True, exist_ok=True)
    db_path = folder / f'{out.name}_0.db3' if metadata else out
    db = sqlite3.connect(db_path)
    db.executescript(
        'CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL, '
        'serialization_format TEXT NOT NULL);'
        'CREATE TABLE messages(id INTEGER PRIMARY KEY, topic_id INTEGER NOT NULL, '
        'timestamp INTEGER NOT NULL, data BLOB NOT NULL);'
        'CREATE INDEX timestamp_idx ON messages (timestamp ASC);')
    ids: dict[str, int] = {}
    counts: dict[str, int] = {}
    types: dict[str, str] = {}
    for topic, msgtype, t, raw in msgs:
        name = topic.lstrip('/') if strip_slash else topic
        if name not in ids:
            ids[name] = len(ids) + 1
            types[name] = msgtype.replace('/msg/', '/')
            db.execute('INSERT INTO topics VALUES (?, ?, ?, ?)',
                       (ids[name], name, types[name], 'cdr'))
        counts[name] = counts.get(name, 0) + 1
        db.execute('INSERT INTO messages (topic_id, timestamp, data) VALUES (?, ?, ?)',
                   (ids[name], t, raw))
    db.commit()
    db.close()
    if metadata:
        times = [t for _, _, t, _ in msgs]
        topics = ''.join(
            f'    - topic_metadata:\n        name: {n}\n        type: {types[n]}\n'
            f'        serialization_format: cdr\n      message_count: {counts[n]}\n'
            for n in ids)
        (out / 'metadata.yaml').write_text(
            'rosbag2_bagfile_information:\n  version: 1\n  storage_identifier: sqlite3\n'
            f'  relative_file_paths:\n    - {db_path.name}\n'
            f'  duration:\n    nanoseconds: {max(times) - min(times)}\n'
            f'  starting_time:\n    nanoseconds_since_epoch: {min(times)}\n'
            f'  message_count: {len(msgs)}\n  topics_with_message_count:\n{topics}')
    return out


def write_rosbag2_compressed(ref: Path, out: Path, storage: str, mode: str,
                             bare: bool = False) -> Path:
    """A rosbag2 with zstd compression, ``mode`` ``message`` (each payload; metadata.yaml
    says so) or ``storage`` (MCAP chunks). ``bare``: return the storage file alone, moved out
    of its folder (metadata.yaml left behind, as when someone shares just the .mcap)."""
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

    folder = out.with_name(out.name + '_folder') if bare else out
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    writer = Writer(folder, version=9, storage_plugin=plugin)
    writer.set_compression(getattr(CompressionMode, mode.upper()), CompressionFormat.ZSTD)
    conns = {}
    with writer:
        for topic, msgtype, t, raw in messages(ref):
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=typestore())
            writer.write(conns[topic], t, raw)
    if not bare:
        return out
    (storage_file,) = [p for p in folder.iterdir() if p.suffix in ('.mcap', '.db3')]
    shutil.move(str(storage_file), str(out))
    shutil.rmtree(folder)
    return out


def first_payload(bag: Path) -> bytes:
    """The first stored payload of a bare MCAP file, as on disk (not decompressed)."""
    from rosbags.rosbag2 import Reader

    with Reader(bag) as r:
        for _, _, raw in r.messages():
            return bytes(raw)
    return b''

