"""Read what is left of a truncated rosbag2 storage file (recorder killed, disk full, copy cut).

``rosbags`` refuses such files at open: an MCAP file without its footer, a sqlite3 file shorter
than its header says. The messages before the break are usually intact, and for an evaluation
they are worth having. These readers walk the file from the start in recording order and stop
with :class:`SalvageBreak` at the first record that is cut off or malformed.
"""
from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
import sqlite3
import struct
from typing import BinaryIO, Tuple  # noqa: UP035 - Python 3.8 (JetPack 5)

MCAP_MAGIC = b'\x89MCAP0\r\n'


class SalvageBreak(Exception):
    """The storage file ends or is damaged here; messages before were yielded."""


# (topic, msgtype, log time ns, CDR bytes); typing.Tuple: a runtime alias, and JetPack 5 /
# Isaac ROS 2.x run Python 3.8, where tuple[...] raises TypeError at import.
Message = Tuple[str, str, int, bytes]  # noqa: UP006


def salvage_messages(path: Path) -> Iterator[Message]:
    """Messages of a damaged ``.db3`` or ``.mcap`` file in recording order.

    Raises:
        SalvageBreak: at the point where the file is cut off or damaged.
        ValueError: the file is neither sqlite3 nor MCAP.
    """
    if path.suffix == '.mcap':
        return _mcap_messages(path)
    if path.suffix == '.db3':
        return _sqlite_messages(path)
    raise ValueError(f'{path}: not a .db3 or .mcap storage file')


def _sqlite_messages(path: Path) -> Iterator[Message]:
    try:
        conn = sqlite3.connect(f'file:{path}?mode=ro', uri=True)
        # SQLite refuses a file shorter than the page count in its header ("malformed")
        # unless writable_schema is set; with it, the pages that exist are read normally and
        # the first missing page raises DatabaseError, which is the break we report.
        conn.execute('PRAGMA writable_schema=ON')
        topics = {row[0]: (row[1], row[2]) for row in
                  conn.execute('SELECT id, name, type FROM topics')}
    except sqlite3.Error as exc:
        raise SalvageBreak(f'sqlite3: {exc}') from exc
    try:
        # rowid order is recording order and needs no (possibly lost) timestamp index.
        for topic_id, timestamp, data in conn.execute(
                'SELECT topic_id, timestamp, data FROM messages ORDER BY id'):
            if topic_id in topics:
                name, msgtype = topics[topic_id]
                yield name, msgtype, int(timestamp), bytes(data)
    except sqlite3.Error as exc:
        raise SalvageBreak(f'sqlite3: {exc}') from exc
    finally:
        conn.close()


def _read(bio: BinaryIO, n: int) -> bytes:
    data = bio.read(n)
    if len(data) != n:
        raise SalvageBreak(f'mcap: record cut off ({len(data)} of {n} bytes)')
    return data


def _string(bio: BinaryIO) -> str:
    (n,) = struct.unpack('<I', _read(bio, 4))
    return _read(bio, n).decode('utf8', errors='replace')


def _decompress(data: bytes, compression: str, size: int) -> bytes:
    """Decompress a chunk, or as much of it as there is (a cut-off chunk still yields its
    leading records: zstd and plain chunks decode as a stream)."""
    if compression == '':
        return data
    if compression == 'zstd':
        try:
            from compression import zstd  # type: ignore[import-not-found]  # novermin: >= 3.14
        except ImportError:
            from backports import zstd  # type: ignore[import-not-found,no-redef]  # rosbags dep

        return bytes(zstd.ZstdDecompressor().decompress(data))[:size]
    if compression == 'lz4':
        import lz4.frame  # type: ignore[import-untyped]

        return bytes(lz4.frame.LZ4FrameDecompressor().decompress(data))[:size]
    raise SalvageBreak(f'mcap: unsupported chunk compression {compression!r}')


def _mcap_messages(path: Path) -> Iterator[Message]:
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}
    with path.open('rb') as f:
        if f.read(8) != MCAP_MAGIC:
            raise SalvageBreak('mcap: bad magic, not an MCAP file')
        yield from _mcap_records(f, schemas, channels, top=True)


def _mcap_records(bio: BinaryIO, schemas: dict[int, str], channels: dict[int, tuple[str, str]],
                  top: bool) -> Iterator[Message]:
    pos = bio.tell()
    end = bio.seek(0, 2)
    bio.seek(pos)
    while True:
        op = bio.read(1)
        if not op:
            if top:  # the file ends between records: no footer, cut after a whole record
                raise SalvageBreak('mcap: file ends without a footer')
            return
        (length,) = struct.unpack('<Q', _read(bio, 8))
        if length > end - bio.tell() and op != b'\x06':
            # a cut record, or a garbage length from a damaged byte stream
            raise SalvageBreak(f'mcap: record 0x{op.hex()} of {length} bytes, '
                               f'{end - bio.tell()} left')
        body = bio.read(min(length, end - bio.tell()))
        cut = len(body) < length
        rec = BytesIO(body)
        try:
            if op == b'\x06' and top:  # chunk: a cut-off chunk still yields its leading records
                _start, _end, size, _crc = struct.unpack('<QQQI', _read(rec, 28))
                compression = _string(rec)
                (csize,) = struct.unpack('<Q', _read(rec, 8))
                try:
                    raw = _decompress(rec.read(csize), compression, size)
                except SalvageBreak:
                    raise
                except Exception as exc:
                    raise SalvageBreak(f'mcap: chunk does not decompress ({exc})') from exc
                yield from _mcap_records(BytesIO(raw), schemas, channels, top=False)
                if cut or len(raw) < size:
                    raise SalvageBreak(f'mcap: chunk cut off ({len(raw)} of {size} bytes)')
                continue
            if cut:
                raise SalvageBreak(f'mcap: record cut off ({len(body)} of {length} bytes)')
            if op == b'\x03':  # schema
                (sid,) = struct.unpack('<H', _read(rec, 2))
                schemas[sid] = _string(rec)
            elif op == b'\x04':  # channel
                cid, sid = struct.unpack('<HH', _read(rec, 4))
                channels[cid] = (_string(rec), schemas.get(sid, ''))
            elif op == b'\x05':  # message
                cid, _seq, log_time, _pub = struct.unpack('<HIQQ', _read(rec, 22))
                if cid not in channels:
                    raise SalvageBreak(f'mcap: message on unknown channel {cid}')
                topic, msgtype = channels[cid]
                yield topic, msgtype, int(log_time), rec.read()
            elif op == b'\x02' and top:  # footer: the file is complete after all
                return
        except struct.error as exc:
            raise SalvageBreak(f'mcap: malformed record 0x{op.hex()} ({exc})') from exc
