"""Training augmentations of the papers, on ``(image uint8 HxWx3 RGB, label uint8 HxW)`` pairs.

Every transform is a callable ``t(image, label, rng) -> (image, label)`` that draws all its
randomness from the ``numpy.random.Generator`` it is given, so a sample's augmentation is a
pure function of its generator (datasets seed one per ``(seed, epoch, index)``). Images stay
uint8 RGB: normalisation happens in the model's ``Normalize`` module.

Recipes (see :data:`PRESETS`):

- RegSeg Cityscapes (regseg.txt Sec. 4.2): random scale of the shorter side in [400, 1600]
  keeping the aspect ratio, random crop 1024x1024, horizontal flip, reduced RandAugment
  (auto contrast, equalize, rotate, color, contrast, brightness, sharpness; 2 ops, magnitude
  0.2 of 1), class-uniform sampling 0.5 (:mod:`seg_ros.data.sampling`).
- RegSeg CamVid: shorter side [288, 1152], crop 720x960, flip; no RandAugment.
- SFNet(-Lite) Cityscapes (sfnet.txt Sec. 4.1): scale factor [0.75, 2.0], crop 1024x1024, flip,
  class-balanced sampling.
- ESeg Cityscapes (eseg.txt Sec. 4.1): scale factor [0.5, 2.0], crop 512x1024, flip.

Crops pad images with the ImageNet mean colour (0 after normalisation) and labels with 255
(ignored by the loss).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from seg_ros.errors import SegRosError
from seg_ros.metadata import IGNORE_INDEX

Center = tuple[float, float] | None          # (row, col) a crop must contain, or None
MEAN_FILL = (124, 116, 104)                  # ImageNet mean in uint8 RGB


def _check(image: np.ndarray, label: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise SegRosError(f'transforms need uint8 HxWx3 images, got {image.dtype} {image.shape}')
    if label.dtype != np.uint8 or label.shape != image.shape[:2]:
        raise SegRosError(f'label must be uint8 {image.shape[:2]}, got {label.dtype} '
                          f'{label.shape}')


class Compose:
    """Apply transforms in order; threads a class-uniform crop centre through geometry ops."""

    def __init__(self, transforms: Sequence[Callable[..., Any]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                 center: Center = None) -> tuple[np.ndarray, np.ndarray]:
        _check(image, label)
        for t in self.transforms:
            if hasattr(t, 'with_center'):
                image, label, center = t.with_center(image, label, rng, center)
            else:
                image, label = t(image, label, rng)
        return image, label

    def __repr__(self) -> str:
        return 'Compose(' + ', '.join(repr(t) for t in self.transforms) + ')'


class GeometricTransform:
    """A transform that moves pixels: ``with_center`` also maps a class-uniform crop centre.

    Subclasses implement ``with_center``; calling the transform drops the centre.
    """

    def with_center(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                    center: Center) -> tuple[np.ndarray, np.ndarray, Center]:
        raise NotImplementedError

    def __call__(self, image: np.ndarray, label: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        image, label, _ = self.with_center(image, label, rng, None)
        return image, label


class RandomScale(GeometricTransform):
    """Resize by a random factor: bilinear for the image, nearest for the label.

    Exactly one of ``short_side`` (range of the target shorter side in pixels, aspect ratio
    kept; RegSeg) or ``factor`` (range of the scale factor; SFNet, ESeg) is given.
    """

    def __init__(self, short_side: tuple[int, int] | None = None,
                 factor: tuple[float, float] | None = None) -> None:
        if (short_side is None) == (factor is None):
            raise SegRosError('RandomScale needs exactly one of short_side or factor')
        rng_ = short_side if short_side is not None else factor
        assert rng_ is not None
        lo, hi = float(rng_[0]), float(rng_[1])
        if lo <= 0 or hi < lo:
            raise SegRosError(f'RandomScale range must be 0 < lo <= hi, got {rng_}')
        self.short_side = (int(lo), int(hi)) if short_side is not None else None
        self.factor = (lo, hi) if factor is not None else None

    def draw(self, h: int, w: int, rng: np.random.Generator) -> float:
        """The scale factor for an ``h`` x ``w`` image."""
        if self.short_side is not None:
            target = int(rng.integers(self.short_side[0], self.short_side[1] + 1))
            return target / min(h, w)
        assert self.factor is not None
        return float(rng.uniform(self.factor[0], self.factor[1]))

    def with_center(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                    center: Center) -> tuple[np.ndarray, np.ndarray, Center]:
        h, w = label.shape
        s = self.draw(h, w, rng)
        nh, nw = max(int(round(h * s)), 1), max(int(round(w * s)), 1)
        if (nh, nw) != (h, w):
            interp = cv2.INTER_LINEAR if s > 1 else cv2.INTER_AREA
            image = cv2.resize(image, (nw, nh), interpolation=interp)
            # centre-aligned nearest (INTER_NEAREST is off by half a pixel vs. bilinear)
            label = cv2.resize(label, (nw, nh), interpolation=cv2.INTER_NEAREST_EXACT)
        if center is not None:
            center = ((center[0] + 0.5) * nh / h - 0.5, (center[1] + 0.5) * nw / w - 0.5)
        return image, label, center

    def __repr__(self) -> str:
        return (f'RandomScale(short_side={self.short_side})' if self.short_side
                else f'RandomScale(factor={self.factor})')


class RandomCrop(GeometricTransform):
    """Random ``(h, w)`` crop; smaller inputs are padded (image: ``fill``, label: 255).

    With a class-uniform centre, the crop is drawn among the windows that contain it.
    """

    def __init__(self, size: int | tuple[int, int], fill: tuple[int, int, int] = MEAN_FILL,
                 ignore_index: int = IGNORE_INDEX) -> None:
        h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if h < 1 or w < 1:
            raise SegRosError(f'crop size must be positive, got {size}')
        self.size = (h, w)
        self.fill = tuple(int(v) for v in fill)
        self.ignore_index = int(ignore_index)

    def with_center(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                    center: Center) -> tuple[np.ndarray, np.ndarray, Center]:
        ch, cw = self.size
        h, w = label.shape
        ph, pw = max(ch - h, 0), max(cw - w, 0)
        if ph or pw:
            # pad at the bottom / right: keeps pixel coordinates (and the centre) unchanged
            image = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_CONSTANT,
                                       value=self.fill)
            label = cv2.copyMakeBorder(label, 0, ph, 0, pw, cv2.BORDER_CONSTANT,
                                       value=self.ignore_index)
            h, w = label.shape
        y0 = self._offset(h, ch, center[0] if center is not None else None, rng)
        x0 = self._offset(w, cw, center[1] if center is not None else None, rng)
        return (np.ascontiguousarray(image[y0:y0 + ch, x0:x0 + cw]),
                np.ascontiguousarray(label[y0:y0 + ch, x0:x0 + cw]), None)

    @staticmethod
    def _offset(n: int, c: int, center: float | None, rng: np.random.Generator) -> int:
        hi = n - c                                  # largest valid offset
        if center is None:
            return int(rng.integers(0, hi + 1))
        # offsets whose window [o, o + c) contains the centre pixel
        px = min(max(int(round(center)), 0), n - 1)
        lo_o, hi_o = max(px - c + 1, 0), min(px, hi)
        return int(rng.integers(lo_o, hi_o + 1))

    def __repr__(self) -> str:
        return f'RandomCrop({self.size[0]}x{self.size[1]})'


class RandomHorizontalFlip(GeometricTransform):
    """Mirror image and label left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = float(p)

    def with_center(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                    center: Center) -> tuple[np.ndarray, np.ndarray, Center]:
        if rng.random() < self.p:
            image = np.ascontiguousarray(image[:, ::-1])
            label = np.ascontiguousarray(label[:, ::-1])
            if center is not None:
                center = (center[0], label.shape[1] - 1 - center[1])
        return image, label, center

    def __repr__(self) -> str:
        return f'RandomHorizontalFlip(p={self.p})'


# ---------------------------------------------------------------------------- RandAugment ops
def _blend(a: np.ndarray, b: np.ndarray, factor: float) -> np.ndarray:
    """PIL ImageEnhance semantics: ``b + factor * (a - b)`` (``b`` the degenerate image),
    saturated to uint8; one OpenCV pass."""
    return cv2.addWeighted(a, factor, b, 1.0 - factor, 0.0)


def _linear_lut(image: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """``clip(v * scale + offset)`` for every channel value, as a lookup table."""
    lut = np.clip(np.arange(256, dtype=np.float32) * scale + offset + 0.5, 0, 255)
    return cv2.LUT(image, lut.astype(np.uint8))


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def auto_contrast(image: np.ndarray) -> np.ndarray:
    """Stretch each channel to the full 0..255 range (PIL ``ImageOps.autocontrast``)."""
    lut = np.empty((256, 1, 3), np.uint8)
    values = np.arange(256, dtype=np.float32)
    for c, channel in enumerate(cv2.split(image)):
        lo, hi, _, _ = cv2.minMaxLoc(channel)
        if hi > lo:
            lut[:, 0, c] = np.clip((values - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255)
        else:
            lut[:, 0, c] = values
    return cv2.LUT(image, lut)


def equalize(image: np.ndarray) -> np.ndarray:
    """Histogram equalisation of each channel (PIL ``ImageOps.equalize``)."""
    return cv2.merge([cv2.equalizeHist(c) for c in cv2.split(image)])


def adjust_color(image: np.ndarray, factor: float) -> np.ndarray:
    """Saturation: blend with the greyscale image (PIL ``ImageEnhance.Color``)."""
    return _blend(image, cv2.cvtColor(_gray(image), cv2.COLOR_GRAY2RGB), factor)


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the mean grey level (PIL ``ImageEnhance.Contrast``)."""
    mean = float(cv2.mean(_gray(image))[0])
    return _linear_lut(image, factor, (1.0 - factor) * mean)


def adjust_brightness(image: np.ndarray, factor: float) -> np.ndarray:
    """Blend with black (PIL ``ImageEnhance.Brightness``)."""
    return _linear_lut(image, factor, 0.0)


def adjust_sharpness(image: np.ndarray, factor: float) -> np.ndarray:
    """Blend with PIL's SMOOTH-filtered image, borders untouched (``ImageEnhance.Sharpness``)."""
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13.0
    smooth = cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REPLICATE)
    smooth[0], smooth[-1], smooth[:, 0], smooth[:, -1] = (image[0], image[-1], image[:, 0],
                                                         image[:, -1])
    return _blend(image, smooth, factor)


def rotate(image: np.ndarray, label: np.ndarray, degrees: float,
           fill: tuple[int, int, int] = MEAN_FILL,
           ignore_index: int = IGNORE_INDEX) -> tuple[np.ndarray, np.ndarray]:
    """Rotate about the centre (counter-clockwise for positive degrees); the label with
    nearest neighbour and 255 in the uncovered corners."""
    h, w = label.shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), degrees, 1.0)
    image = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    label = cv2.warpAffine(label, m, (w, h), flags=cv2.INTER_NEAREST,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=ignore_index)
    return image, label


# name -> maximum strength at magnitude 1 (torchvision RandAugment ranges: enhance factors
# 1 +- 0.9, rotation +-30 degrees); None: the op has no magnitude.
REGSEG_OPS: dict[str, float | None] = {
    'auto_contrast': None, 'equalize': None, 'rotate': 30.0, 'color': 0.9, 'contrast': 0.9,
    'brightness': 0.9, 'sharpness': 0.9}


class RandAugment:
    """RandAugment with RegSeg's reduced op set: ``num_ops`` ops drawn uniformly (with
    replacement), each at ``magnitude`` (0..1) of its maximum strength with a random sign.

    Only ``rotate`` moves pixels; it moves the label with them (nearest, 255 fill).
    """

    def __init__(self, num_ops: int = 2, magnitude: float = 0.2,
                 ops: Sequence[str] = tuple(REGSEG_OPS), fill: tuple[int, int, int] = MEAN_FILL,
                 ignore_index: int = IGNORE_INDEX) -> None:
        unknown = [o for o in ops if o not in REGSEG_OPS]
        if unknown or not ops:
            raise SegRosError(f'unknown RandAugment ops {unknown}; valid: {list(REGSEG_OPS)}')
        if not 0.0 <= magnitude <= 1.0 or num_ops < 0:
            raise SegRosError(f'RandAugment needs num_ops >= 0 and magnitude in [0, 1], got '
                              f'{num_ops}, {magnitude}')
        self.num_ops = int(num_ops)
        self.magnitude = float(magnitude)
        self.ops = list(ops)
        self.fill = fill
        self.ignore_index = ignore_index

    def apply_op(self, name: str, image: np.ndarray, label: np.ndarray,
                 signed_strength: float) -> tuple[np.ndarray, np.ndarray]:
        """Apply op ``name``; ``signed_strength`` is magnitude x max strength x (+1 or -1)."""
        if name == 'auto_contrast':
            return auto_contrast(image), label
        if name == 'equalize':
            return equalize(image), label
        if name == 'rotate':
            return rotate(image, label, signed_strength, self.fill, self.ignore_index)
        factor = 1.0 + signed_strength
        fn = {'color': adjust_color, 'contrast': adjust_contrast,
              'brightness': adjust_brightness, 'sharpness': adjust_sharpness}[name]
        return fn(image, factor), label

    def __call__(self, image: np.ndarray, label: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        for _ in range(self.num_ops):
            name = self.ops[int(rng.integers(len(self.ops)))]
            sign = 1.0 if rng.random() < 0.5 else -1.0
            top = REGSEG_OPS[name] or 0.0
            image, label = self.apply_op(name, image, label, sign * self.magnitude * top)
        return image, label

    def __repr__(self) -> str:
        return f'RandAugment(num_ops={self.num_ops}, magnitude={self.magnitude})'


# ---------------------------------------------------------------------------- recipes
PRESETS: dict[str, dict[str, Any]] = {
    'regseg_cityscapes': {'scale': {'short_side': [400, 1600]}, 'crop': [1024, 1024],
                          'hflip': 0.5, 'randaugment': {'num_ops': 2, 'magnitude': 0.2},
                          'class_uniform': 0.5},
    'regseg_camvid': {'scale': {'short_side': [288, 1152]}, 'crop': [720, 960], 'hflip': 0.5},
    'sfnet_cityscapes': {'scale': {'factor': [0.75, 2.0]}, 'crop': [1024, 1024], 'hflip': 0.5,
                         'class_uniform': 0.5},
    'eseg_cityscapes': {'scale': {'factor': [0.5, 2.0]}, 'crop': [512, 1024], 'hflip': 0.5},
}


def build_transform(cfg: dict[str, Any] | str | None) -> Compose | None:
    """Build the training transform from a config dict or a :data:`PRESETS` name.

    Keys (all optional, applied in this order): ``scale`` (``{short_side: [lo, hi]}`` or
    ``{factor: [lo, hi]}``), ``crop`` (``[h, w]`` or an int), ``hflip`` (probability),
    ``randaugment`` (``{num_ops, magnitude, ops}``). ``crop: frame`` (the first training
    frame's size) is resolved by :func:`seg_ros.data.datasets.build_training_dataset`
    before this is called. ``class_uniform`` is read by
    :func:`seg_ros.data.sampling.ClassUniformDataset`, not here.

    Returns:
        A :class:`Compose`, or None for an empty / None config.
    """
    if cfg is None:
        return None
    if isinstance(cfg, str):
        if cfg not in PRESETS:
            raise SegRosError(f'unknown augmentation preset {cfg!r}; valid: {sorted(PRESETS)}')
        cfg = PRESETS[cfg]
    known = {'scale', 'crop', 'hflip', 'randaugment', 'class_uniform', 'preset'}
    unknown = set(cfg) - known
    if unknown:
        raise SegRosError(f'unknown augmentation keys {sorted(unknown)}; valid: {sorted(known)}')
    if 'preset' in cfg:  # preset with overrides
        base = dict(PRESETS.get(cfg['preset']) or {})
        if not base:
            raise SegRosError(f'unknown augmentation preset {cfg["preset"]!r}')
        base.update({k: v for k, v in cfg.items() if k != 'preset'})
        cfg = base
    ts: list[Any] = []
    if cfg.get('scale'):
        sc = cfg['scale']
        if not isinstance(sc, dict) or set(sc) - {'short_side', 'factor'}:
            raise SegRosError(f'scale must be {{short_side: [lo, hi]}} or {{factor: [lo, hi]}}, '
                              f'got {sc!r}')
        ts.append(RandomScale(short_side=sc.get('short_side'), factor=sc.get('factor')))
    if cfg.get('crop'):
        crop = cfg['crop']
        if crop == 'frame':
            raise SegRosError('crop: frame (the size of the first training frame) is resolved '
                              'by build_training_dataset; build_transform needs [h, w]')
        if not (isinstance(crop, int) or (isinstance(crop, (list, tuple)) and len(crop) == 2
                                          and all(isinstance(v, int) for v in crop))):
            raise SegRosError(f'crop must be [h, w], an int or frame, got {crop!r}')
        ts.append(RandomCrop(crop if isinstance(crop, int) else tuple(crop)))
    if cfg.get('hflip'):
        ts.append(RandomHorizontalFlip(float(cfg['hflip'])))
    if cfg.get('randaugment'):
        ra = dict(cfg['randaugment'])
        ts.append(RandAugment(**ra))
    return Compose(ts) if ts else None
