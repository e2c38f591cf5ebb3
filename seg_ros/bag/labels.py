"""Ground-truth labels for bag frames: from a mono8 label topic or a folder of label PNGs.

Matching rules (also written into every report):

* **timestamp**: a label belongs to the image whose header stamp is nearest to the label's
  stamp, if they differ by at most ``tolerance_ms``. Label topic stamps are their header
  stamps; label PNG names are stamps: ``<nanoseconds>.png`` (16-20 digits) or
  ``<sec>.<fraction>.png`` / ``<sec>_<fraction>.png``.
* **name**: a label PNG ``<stem>.png`` belongs to the image that ``seg-ros make-bag`` recorded
  with that source file stem; in bags without that record (or with numeric stems) the stem is
  the frame index on the image topic (``000012.png`` is the 13th image).

``auto`` picks timestamp when every PNG name parses as a stamp, otherwise name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import re

import cv2
import numpy as np

from seg_ros.errors import SegRosError

LABEL_EXTENSIONS = ('.png',)
_NS_RE = re.compile(r'^\d{16,20}$')
_SEC_FRAC_RE = re.compile(r'^(\d{1,11})[._](\d{1,9})$')
DEFAULT_TOLERANCE_MS = 1.0


def parse_stamp(stem: str) -> int | None:
    """Nanosecond stamp encoded in a file stem, or None when the stem is not a stamp."""
    if _NS_RE.match(stem):
        return int(stem)
    m = _SEC_FRAC_RE.match(stem)
    if m:
        return int(m.group(1)) * 1_000_000_000 + int(m.group(2).ljust(9, '0'))
    return None


def encode_label(label: np.ndarray) -> bytes:
    """Losslessly compress a label map (kept in memory per matched frame)."""
    ok, buf = cv2.imencode('.png', label)
    if not ok:
        raise SegRosError(f'cannot encode label {label.shape}')
    return buf.tobytes()


def decode_label(data: bytes) -> np.ndarray:
    """Inverse of :func:`encode_label`."""
    label = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise SegRosError('cannot decode a stored label')
    return np.asarray(label)


def read_label_png(path: Path) -> np.ndarray:
    """Read a label PNG of class ids (single channel, 8 bit; 255 = ignore).

    Raises:
        SegRosError: unreadable, or colour / 16-bit (class ids are expected, not colours).
    """
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise SegRosError(f'{path}: cannot read label image')
    if label.ndim == 3 and label.shape[2] in (3, 4):
        # Colour-coded labels: accept only the common grey-stored-as-RGB case (all channels
        # equal); true palette colours need a palette mapping the user must do explicitly.
        if np.array_equal(label[..., 0], label[..., 1]) and np.array_equal(label[..., 1],
                                                                           label[..., 2]):
            label = label[..., 0]
        else:
            raise SegRosError(f'{path}: label is a colour image; labels must be single-channel '
                              'class ids (trainIds, 255 = ignore)')
    if label.dtype != np.uint8:
        raise SegRosError(f'{path}: label has dtype {label.dtype}; expected 8-bit class ids')
    return np.ascontiguousarray(label)


@dataclass
class LabelMatcher:
    """Assigns labels to image frames.

    Build with :meth:`from_stamped` (label topic, or PNGs named by stamp) or
    :meth:`from_names` (PNGs matched by file name / frame index), then call :meth:`match`
    once per frame.

    Attributes:
        mode: ``timestamp`` or ``name``.
        tolerance_ns: largest |label stamp - image stamp| accepted (timestamp mode).
        source: where the labels come from (for the report).
    """

    mode: str
    tolerance_ns: int = int(DEFAULT_TOLERANCE_MS * 1e6)
    source: str = ''
    _stamps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    _loaders: list[object] = field(default_factory=list)
    _by_name: dict[str, object] = field(default_factory=dict)
    _numeric: dict[str, str] = field(default_factory=dict)
    used: set[int | str] = field(default_factory=set)

    @classmethod
    def from_stamped(cls, items: list[tuple[int, object]], tolerance_ms: float,
                     source: str) -> LabelMatcher:
        """Labels keyed by stamp; each item's payload is an array, PNG bytes or a Path."""
        if tolerance_ms < 0:
            raise SegRosError(f'label tolerance must be >= 0 ms, got {tolerance_ms}')
        items = sorted(items, key=lambda x: x[0])
        return cls(mode='timestamp', tolerance_ns=int(round(tolerance_ms * 1e6)), source=source,
                   _stamps=np.array([s for s, _ in items], dtype=np.int64),
                   _loaders=[p for _, p in items])

    @classmethod
    def from_names(cls, files: dict[str, Path], source: str) -> LabelMatcher:
        """Label PNGs keyed by file stem."""
        numeric = {(k.lstrip('0') or '0'): k for k in files if k.isdigit()}
        return cls(mode='name', source=source, _by_name=dict(files), _numeric=numeric)

    def __len__(self) -> int:
        return len(self._loaders) if self.mode == 'timestamp' else len(self._by_name)

    def _key_for_name(self, index: int, names: list[str] | None) -> list[str]:
        keys = []
        if names is not None and index < len(names):
            keys.append(names[index])
        keys.append(str(index))
        return keys

    def find(self, stamp_ns: int, index: int, names: list[str] | None = None) -> int | str | None:
        """Key of the label for a frame (without loading it), or None when none matches."""
        if self.mode == 'timestamp':
            if not len(self._stamps):
                return None
            pos = int(np.searchsorted(self._stamps, stamp_ns))
            best, best_d = None, None
            for cand in (pos - 1, pos):
                if 0 <= cand < len(self._stamps):
                    d = abs(int(self._stamps[cand]) - stamp_ns)
                    if best_d is None or d < best_d:
                        best, best_d = cand, d
            if best is None or best_d is None or best_d > self.tolerance_ns:
                return None
            return best
        for key in self._key_for_name(index, names):
            if key in self._by_name:
                return key
            # numeric stems match regardless of zero padding ('12' == '000012')
            norm = key.lstrip('0') or '0'
            if key.isdigit() and norm in self._numeric:
                return self._numeric[norm]
        return None

    def load(self, key: int | str) -> np.ndarray:
        """Load the label for a key returned by :meth:`find`."""
        payload = self._loaders[key] if isinstance(key, int) else self._by_name[key]
        if isinstance(payload, np.ndarray):
            return payload
        if isinstance(payload, (bytes, bytearray)):
            return decode_label(bytes(payload))
        return read_label_png(Path(str(payload)))

    def match(self, stamp_ns: int, index: int,
              names: list[str] | None = None) -> np.ndarray | None:
        """The label for a frame, or None when no label matches."""
        key = self.find(stamp_ns, index, names)
        if key is None:
            return None
        self.used.add(key)
        return self.load(key)

    def describe(self) -> dict[str, object]:
        """Matching rule, for the report."""
        out: dict[str, object] = {'source': self.source, 'mode': self.mode, 'labels': len(self)}
        if self.mode == 'timestamp':
            out['tolerance_ms'] = self.tolerance_ns / 1e6
        return out


def labels_from_dir(directory: str | Path, match: str = 'auto',
                    tolerance_ms: float = DEFAULT_TOLERANCE_MS) -> LabelMatcher:
    """A matcher over a folder of label PNGs (see the module docstring for the rules).

    Raises:
        SegRosError: no such folder, no PNGs, or ``match='timestamp'`` with names that are not
            stamps.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise SegRosError(f'{directory}: labels folder does not exist')
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in LABEL_EXTENSIONS)
    if not files:
        raise SegRosError(f'{directory}: no label PNGs')
    if match not in ('auto', 'timestamp', 'name'):
        raise SegRosError(f'label match must be auto, timestamp or name, got {match!r}')
    stamps = [parse_stamp(p.stem) for p in files]
    if match == 'auto':
        match = 'timestamp' if all(s is not None for s in stamps) else 'name'
    if match == 'timestamp':
        bad = [p.name for p, s in zip(files, stamps) if s is None]
        if bad:
            raise SegRosError(f'{directory}: {len(bad)} label names are not stamps '
                              f'(e.g. {bad[0]}); name them <nanoseconds>.png or <sec>.<nsec>.png'
                              ' or use --label-match name')
        return LabelMatcher.from_stamped([(s, p) for s, p in zip(stamps, files) if s is not None],
                                         tolerance_ms, str(directory))
    return LabelMatcher.from_names({p.stem: p for p in files}, str(directory))
