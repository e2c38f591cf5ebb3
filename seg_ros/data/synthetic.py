"""Procedural driving scenes with exact Cityscapes trainId labels (``seg-ros synth``).

A :class:`SyntheticDrive` is an endless, curving street (two or four lanes, parking strips,
curbs, an optional grass verge, sidewalks) seen from a car driving along it. The world is a
pure function of ``seed``: it is cut into 12 m segments along the road and each segment's
objects (buildings, walls, fences, parks, trees, street lights, sign posts, traffic lights,
parked cars, pedestrians) are drawn from a generator seeded by ``(seed, segment)``.
Moving traffic lives in "streams" (one per lane) whose segments move at the lane's speed, so a
frame is a pure function of ``(seed, i)`` as well: ``frame(i)`` needs no earlier frame, and
frames ``i`` and ``i + 1`` differ by one small step of a smooth camera path (speed, lane wander,
heading jitter, pitch bounce), so a run of consecutive frames looks like a drive.

Rendering is a painter's algorithm with OpenCV polygon fills into the image and the label at
the same time, so labels are exact by construction (no anti-aliasing, the same pixels in both).
The ground (road, lane markings, sidewalk, terrain) is computed per pixel with vectorised
numpy from the inverse perspective of each image row. Colours are drawn per drive and per
object from overlapping ranges and the whole frame gets a drifting exposure / white balance,
shadows and sensor noise, so that colour alone does not give the class.
"""
from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
import math
from pathlib import Path

import cv2
import numpy as np

from seg_ros.errors import SegRosError
from seg_ros.metadata import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IGNORE_INDEX

# Cityscapes trainIds used by the generator.
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY = range(11)
PERSON, CAR, TRUCK, BUS = 11, 13, 14, 15

SEGMENT_LEN = 12.0        # metres of road per generated world segment
EGO_LANE = 1.75           # lateral offset of our lane's centre from the road centre (m)
CAM_HEIGHT = 1.3
DRAW_DIST = 160.0         # objects beyond this are not drawn
DETAIL_DIST = 70.0        # windows, lights, wheels: only nearer than this
NEAR = 0.4                # near clipping plane (m)
SPEED = 0.55              # mean forward motion per frame (m); ~5.5 m/s at 10 Hz

# primitive kinds
_HULL, _ELLIPSE, _QUAD_D, _QUAD_Z, _TRI, _SHADOW = 0, 1, 2, 3, 4, 5
# polygon vertex order (corner indices) of the planar kinds: no convex hull needed
_RINGS = {_QUAD_D: [0, 2, 6, 4], _QUAD_Z: [0, 1, 3, 2], _TRI: [0, 1, 2]}
# box corner k takes the high d / y / z bound where bit 1 / 2 / 4 of k is set
_CORNER_BITS = np.array([[k & 1, k & 2, k & 4] for k in range(8)], bool)


@dataclass
class _Prims:
    """A batch of drawable primitives in road coordinates (d lateral, y up, z along road)."""

    corners: np.ndarray   # (n, 8, 3) float32 box corners (d, y, z); quads repeat 4 corners
    kind: np.ndarray      # (n,) uint8 _HULL, _ELLIPSE (centre = corners[:, 0]), _QUAD_*, ...
    radius: np.ndarray    # (n, 2) float32 ellipse radii (m) horizontal, vertical
    color: np.ndarray     # (n, 3) uint8 RGB
    cls: np.ndarray       # (n,) uint8 trainId
    label: np.ndarray     # (n,) bool: also paint the label (False for same-class details)
    ref: np.ndarray       # (n, 2) float32 (d, z) reference point of the owning object
    far: np.ndarray       # (n,) bool: the object's depth key is its far end (buildings)
    order: np.ndarray     # (n,) int32 drawing order inside the object
    detail: np.ndarray    # (n,) bool: skipped beyond DETAIL_DIST

    @staticmethod
    def concat(parts: list[_Prims]) -> _Prims:
        parts = [p for p in parts if len(p.cls)]
        if not parts:
            return _Builder().build()
        return _Prims(*(np.concatenate([getattr(p, f) for p in parts])
                        for f in _Prims.__dataclass_fields__))


class _Builder:
    """Accumulates primitives of one segment; each ``begin`` starts a new object."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self._ref = (0.0, 0.0)
        self._far = False
        self._order = 0

    def begin(self, d: float, z: float, far: bool = False) -> None:
        self._ref = (d, z)
        self._far = far
        self._order = 0

    def _add(self, corners: np.ndarray | tuple[float, ...], kind: int,
             radius: tuple[float, float], color: np.ndarray, cls: int, label: bool,
             detail: bool) -> None:
        # corners: an (8, 3) array, or (d0, y0, z0, d1, y1, z1) of a box, expanded in build()
        self.rows.append((corners, kind, radius, color, cls, label, self._ref, self._far,
                          self._order, detail))
        self._order += 1

    def box(self, d0: float, d1: float, y0: float, y1: float, z0: float, z1: float,
            color: np.ndarray, cls: int, label: bool = True, detail: bool = False,
            kind: int = _HULL) -> None:
        # corner index bits: 1 -> d1, 2 -> y1, 4 -> z1 (used by the near-plane clipper)
        self._add((d0, y0, z0, d1, y1, z1), kind, (0.0, 0.0), color, cls, label, detail)

    def quad_z(self, d0: float, d1: float, y0: float, y1: float, z: float,
               color: np.ndarray, cls: int, label: bool = True, detail: bool = False) -> None:
        """Rectangle facing the camera (constant z)."""
        self.box(d0, d1, y0, y1, z, z, color, cls, label, detail, _QUAD_Z)

    def quad_d(self, d: float, y0: float, y1: float, z0: float, z1: float,
               color: np.ndarray, cls: int, label: bool = True, detail: bool = False) -> None:
        """Rectangle parallel to the road (constant d), e.g. a facade or a fence."""
        self.box(d, d, y0, y1, z0, z1, color, cls, label, detail, _QUAD_D)

    def tri_z(self, d: float, y: float, z: float, size: float, color: np.ndarray, cls: int,
              up: bool = True, label: bool = True) -> None:
        """Triangle facing the camera; the 8 corner slots repeat its 3 vertices."""
        h = size * 0.87
        tip = (d, y + h / 2 if up else y - h / 2, z)
        a = (d - size / 2, y - h / 2 if up else y + h / 2, z)
        b = (d + size / 2, a[1], z)
        c = np.array([tip, a, b, tip, a, b, tip, a], np.float32)
        self._add(c, _TRI, (0.0, 0.0), color, cls, label, False)

    def ellipse(self, d: float, y: float, z: float, rx: float, ry: float, color: np.ndarray,
                cls: int, label: bool = True, detail: bool = False) -> None:
        c = np.zeros((8, 3), np.float32)
        c[:] = (d, y, z)
        self._add(c, _ELLIPSE, (rx, ry), color, cls, label, detail)

    def shadow(self, d0: float, d1: float, z0: float, z1: float, height: float,
               sun: tuple[float, float]) -> None:
        """Ground shadow of a box: its footprint swept along the sun direction.

        The swept corners take the ``y1`` corner slots, so the box-edge near-plane clipper
        also clips the shadow polygon (Minkowski sum of the footprint and the sweep).
        """
        sd, sz = sun[0] * height, sun[1] * height
        c = np.array([[(d1 if k & 1 else d0) + (sd if k & 2 else 0.0), 0.0,
                       (z1 if k & 4 else z0) + (sz if k & 2 else 0.0)] for k in range(8)],
                     np.float32)
        self._add(c, _SHADOW, (0.0, 0.0), np.zeros(3, np.uint8), 0, False, False)

    def build(self) -> _Prims:
        n = len(self.rows)
        if n == 0:
            return _Prims(np.zeros((0, 8, 3), np.float32), np.zeros(0, np.uint8),
                          np.zeros((0, 2), np.float32), np.zeros((0, 3), np.uint8),
                          np.zeros(0, np.uint8), np.zeros(0, bool), np.zeros((0, 2), np.float32),
                          np.zeros(0, bool), np.zeros(0, np.int32), np.zeros(0, bool))
        cols = list(zip(*self.rows))
        corners = np.empty((n, 8, 3), np.float32)
        is_box = np.array([isinstance(c, tuple) for c in cols[0]])
        if is_box.any():
            lohi = np.array([c for c in cols[0] if isinstance(c, tuple)], np.float32)
            corners[is_box] = np.where(_CORNER_BITS[None], lohi[:, None, 3:], lohi[:, None, :3])
        for k in np.nonzero(~is_box)[0].tolist():
            corners[k] = cols[0][k]
        return _Prims(corners, np.array(cols[1], np.uint8),
                      np.array(cols[2], np.float32), np.stack(cols[3]).astype(np.uint8),
                      np.array(cols[4], np.uint8), np.array(cols[5], bool),
                      np.array(cols[6], np.float32), np.array(cols[7], bool),
                      np.array(cols[8], np.int32), np.array(cols[9], bool))


def _jitter(rng: np.random.Generator, base: tuple[int, int, int], amount: float) -> np.ndarray:
    """A colour near ``base``: a shared brightness factor plus per-channel noise."""
    f = rng.uniform(1 - amount, 1 + amount)
    noise = rng.normal(0, 255 * amount * 0.35, 3).tolist()
    # plain Python arithmetic: thousands of these per world segment
    return np.array([min(max(int(v * f + e), 0), 255) for v, e in zip(base, noise)], np.uint8)


def _pick(rng: np.random.Generator, choices: list[tuple[int, int, int]],
          amount: float = 0.15) -> np.ndarray:
    return _jitter(rng, choices[int(rng.integers(len(choices)))], amount)


# Deliberately overlapping colour ranges: grey buildings vs grey road vs grey cars, green
# vegetation vs green terrain vs green cars, etc.
_FACADE = [(150, 150, 150), (190, 170, 140), (160, 90, 70), (120, 120, 130), (210, 200, 180),
           (100, 95, 90), (175, 160, 120), (140, 150, 165)]
_CAR = [(200, 200, 205), (40, 40, 45), (150, 20, 25), (30, 50, 120), (120, 125, 130),
        (230, 230, 225), (60, 90, 60), (170, 140, 50), (90, 90, 95)]
_CLOTHES = [(30, 30, 40), (200, 60, 50), (60, 80, 160), (220, 220, 210), (90, 110, 60),
            (120, 90, 70), (180, 160, 60), (70, 70, 70)]
_SKIN = [(230, 190, 160), (170, 120, 90), (110, 75, 55), (240, 210, 185)]
_FOLIAGE = [(60, 100, 40), (90, 120, 50), (40, 80, 45), (110, 110, 60), (70, 90, 30)]
_GREY = [(110, 110, 110), (150, 150, 145), (80, 85, 90), (170, 165, 160)]


class SyntheticDrive:
    """An endless, deterministic synthetic drive through a procedurally generated street.

    Args:
        size: output ``(height, width)`` in pixels.
        seed: selects the world (layout, colours, weather) and the camera path.
        min_width_px: parts narrower than this on screen (far poles, distant pedestrians'
            limbs) are not drawn, in the image and the label alike. Raise it (e.g. to 2) for
            an easier task when training at low resolution.

    ``frame(i)`` returns ``(rgb, label)``: ``rgb`` is ``(H, W, 3)`` uint8 RGB and ``label`` is
    ``(H, W)`` uint8 Cityscapes trainIds with 255 on the ego-vehicle hood (ignore). The result
    depends only on ``(seed, i, size)`` and consecutive ``i`` are consecutive camera positions
    (``SPEED`` metres apart on average). Creating one costs a few tens of ms (noise
    textures, sky panorama); an instance caches world segments and is not thread-safe (each
    DataLoader worker process owns its copy). Sequential frames are the fast path;
    random access also generates the segments in view (~30 ms more).
    """

    def __init__(self, size: tuple[int, int] = (512, 1024), seed: int = 0,
                 min_width_px: float = 0.5) -> None:
        h, w = int(size[0]), int(size[1])
        if h < 16 or w < 16:
            raise SegRosError(f'synthetic frame size must be at least 16x16, got {h}x{w}')
        if seed < 0:
            raise SegRosError(f'seed must be >= 0, got {seed}')
        if not 0.0 <= min_width_px <= w / 4:
            raise SegRosError(f'min_width_px must be in [0, {w / 4}], got {min_width_px}')
        self.size = (h, w)
        self.seed = int(seed)
        self.min_width_px = float(min_width_px)
        rng = np.random.default_rng([self.seed, 7919])
        # camera: ~67 deg horizontal field of view (wider than Cityscapes' ~49 deg, so that the
        # sidewalks of these wider streets stay in view), horizon a bit above the centre
        self.focal = 0.75 * w
        self.cx = (w - 1) / 2.0
        self.cy = 0.45 * h
        # road geometry (world x of the road centre as a function of z)
        self._curve_amp = float(rng.uniform(6.0, 22.0))
        self._curve_k = float(2 * math.pi / rng.uniform(350.0, 700.0))
        self._curve_phase = float(rng.uniform(0, 2 * math.pi))
        # street layout: 4 lanes (lane lines at +-3.5, parking 7..8.5) or 2 lanes (parking
        # 3.6..5.5); an optional grass verge between curb and sidewalk
        self._wide = bool(rng.random() < 0.35)
        self._lanes: tuple[tuple[float, float], ...]     # (lateral offset, speed per frame)
        self._dashed: tuple[float, ...]                   # |d| of dashed / solid lines
        self._solid: tuple[float, ...]
        if self._wide:
            self._road_half, self._park_d = 8.5, 7.75
            self._lanes = ((EGO_LANE, SPEED), (5.25, 0.6 * SPEED), (-1.75, -0.9 * SPEED),
                           (-5.25, -0.7 * SPEED))
            self._dashed, self._solid = (3.5,), (0.0, 7.0)
        else:
            self._road_half, self._park_d = 5.5, 4.6
            self._lanes = ((EGO_LANE, SPEED), (-1.75, -0.9 * SPEED))
            self._dashed, self._solid = (0.0,), (3.55,)
        self._sidewalk = float(rng.uniform(3.0, 5.5))
        self._verge = float(rng.uniform(0.8, 2.0)) if rng.random() < 0.3 else 0.0
        self._walk_in = self._road_half + self._verge
        self._walk_out = self._walk_in + self._sidewalk
        self._park_p = 0.45 if self._wide else 0.3
        # smooth camera path: a few slow sinusoids per quantity (periods in frames)
        self._path = rng.uniform(0, 2 * math.pi, 8)
        self._hood = bool(rng.random() < 0.7)
        self._hood_height = float(rng.uniform(0.05, 0.1))
        # appearance of this drive
        self._road_rgb = _pick(rng, [(90, 90, 95), (110, 105, 100), (70, 72, 80), (125, 122, 118)],
                               0.12).astype(np.int16)
        self._walk_rgb = _pick(rng, [(170, 165, 160), (150, 110, 100), (190, 180, 150),
                                     (120, 120, 125), (160, 140, 130)], 0.12).astype(np.int16)
        self._terrain_rgb = _pick(rng, [(100, 140, 60), (150, 150, 80), (120, 100, 70),
                                        (80, 120, 50)], 0.12).astype(np.int16)
        self._mark_rgb = _pick(rng, [(230, 230, 225), (220, 200, 90)], 0.05).astype(np.int16)
        self._sky_top = _pick(rng, [(70, 120, 200), (150, 160, 175), (110, 150, 210),
                                    (200, 170, 150)], 0.1).astype(np.float32)
        self._sky_bottom = np.clip(self._sky_top * 0.5 + rng.uniform(110, 150), 0, 255)
        self._exposure = float(rng.uniform(0.75, 1.15))
        self._tint = rng.uniform(0.9, 1.1, 3).astype(np.float32)
        self._noise_sigma = float(rng.uniform(3.0, 8.0))
        # sun: shadow offset (d, z) per metre of height, and how dark shadows are (overcast
        # drives have none)
        azimuth = rng.uniform(0, 2 * math.pi)
        reach = rng.uniform(0.4, 1.6)
        self._sun = (float(reach * math.sin(azimuth)), float(reach * math.cos(azimuth)))
        self._shade = int(rng.uniform(25, 70)) if rng.random() < 0.75 else 0
        self._build_textures(rng)
        self._build_ground_luts()
        self._cache: OrderedDict[tuple[int, int], _Prims] = OrderedDict()

    # ------------------------------------------------------------------ camera and road
    def road_center(self, z: np.ndarray | float) -> np.ndarray | float:
        """World x of the road centre line at world z (metres)."""
        return self._curve_amp * np.sin(self._curve_k * z + self._curve_phase)

    def _road_slope(self, z: float) -> float:
        return self._curve_amp * self._curve_k * math.cos(self._curve_k * z + self._curve_phase)

    def camera(self, i: int) -> tuple[float, float, float, float]:
        """Camera pose at frame ``i``: world (x, z), heading (rad), horizon row (px)."""
        p = self._path
        t = float(i)
        z = SPEED * t + 3.0 * math.sin(t / 97.0 + p[0]) + 1.0 * math.sin(t / 41.0 + p[1])
        d = EGO_LANE + 0.35 * math.sin(t / 63.0 + p[2]) + 0.1 * math.sin(t / 17.0 + p[3])
        x = float(self.road_center(z)) + d
        heading = math.atan(self._road_slope(z)) + 0.02 * math.sin(t / 29.0 + p[4])
        pitch = 0.012 * math.sin(t / 9.0 + p[5]) + 0.006 * math.sin(t / 23.0 + p[6])
        horizon = self.cy + self.focal * math.tan(pitch)
        return x, z, heading, horizon

    # ------------------------------------------------------------------ textures
    def _build_textures(self, rng: np.random.Generator) -> None:
        h, w = self.size
        pad = 32
        noise = rng.normal(0, self._noise_sigma, (h + pad, w + pad, 3))
        # luminance-correlated noise looks like sensor noise, not confetti
        noise += rng.normal(0, self._noise_sigma, (h + pad, w + pad, 1))
        self._noise_pos = np.clip(noise, 0, 255).astype(np.uint8)
        self._noise_neg = np.clip(-noise, 0, 255).astype(np.uint8)
        # blotchy low-frequency texture (dirt, wear, leaves) as a signed offset
        small = rng.normal(0, 1, (max(h // 16, 2) + 4, max(w // 16, 2) + 4)).astype(np.float32)
        blot = cv2.resize(small, (w + pad, h + pad), interpolation=cv2.INTER_CUBIC)
        blot = blot * 6.0
        self._blot_pos = np.clip(blot, 0, 255).astype(np.uint8)[..., None].repeat(3, 2)
        self._blot_neg = np.clip(-blot, 0, 255).astype(np.uint8)[..., None].repeat(3, 2)
        self._pad = pad
        # Sky panorama over 4 image widths (panned with the heading): gradient, clouds and a
        # distant skyline (trees / buildings beyond the modelled world) standing on the
        # horizon. Rendered once; a frame copies a window of it (pitch shifts it vertically).
        cw = 4 * w
        self._pano_h0 = int(math.ceil(self.cy + 0.02 * self.focal)) + 2   # horizon row in pano
        ph = self._pano_h0 + 2
        t = np.linspace(0.0, 1.0, ph, dtype=np.float32)[:, None] ** 0.7
        grad = np.clip(self._sky_top[None] * (1 - t) + self._sky_bottom[None] * t, 0, 255)
        small = rng.normal(0, 1, (8, cw // max(w // 8, 1) + 2)).astype(np.float32)
        clouds = cv2.resize(small, (cw, ph), interpolation=cv2.INTER_CUBIC)
        clouds = np.clip(clouds * 40.0 * rng.uniform(0.3, 1.5), 0, None)
        # clouds fade out towards the horizon
        clouds *= np.clip(1.2 - t * 1.2, 0, 1)
        pano = np.clip(grad[:, None, :] + clouds[..., None], 0, 255).astype(np.uint8)
        plab = np.full((ph, cw), SKY, np.uint8)
        rgbs = {BUILDING: _pick(rng, _FACADE, 0.1), VEGETATION: _pick(rng, _FOLIAGE, 0.1)}
        x = 0
        while x < cw:
            seg = min(int(rng.integers(w // 40 + 1, w // 6 + 2)), cw - x)
            if rng.random() < 0.5:
                cls = BUILDING
                prof = np.full(seg, rng.uniform(0.01, 0.06) * h, np.float32)
            else:
                cls = VEGETATION
                bumps = np.abs(np.sin(np.linspace(0, rng.uniform(2, 8), seg)))
                prof = ((0.01 + 0.03 * bumps) * h).astype(np.float32)
            top = np.round(self._pano_h0 - prof).astype(np.int32)
            rows = np.arange(ph)[:, None]
            m = rows >= top[None, :]
            plab[:, x:x + seg][m] = cls
            pano[:, x:x + seg][m] = rgbs[cls]
            x += seg
        # wrap around so that any window of width w is one slice
        self._pano_rgb = np.ascontiguousarray(np.concatenate([pano, pano[:, :w]], axis=1))
        self._pano_lab = np.ascontiguousarray(np.concatenate([plab, plab[:, :w]], axis=1))
        self._pano_px_per_rad = cw / (2 * math.pi)
        self._pano_w = cw

    # ------------------------------------------------------------------ world generation
    def _segment(self, stream: int, k: int) -> _Prims:
        key = (stream, k)
        prims = self._cache.get(key)
        if prims is not None:
            self._cache.move_to_end(key)
            return prims
        rng = np.random.default_rng([self.seed, stream, k & 0xFFFFFFFF, k < 0])
        b = _Builder()
        z0 = k * SEGMENT_LEN
        if stream == 0:
            self._static_segment(b, rng, z0)
        else:
            self._traffic_segment(b, rng, z0, stream)
        prims = b.build()
        self._cache[key] = prims
        if len(self._cache) > 512:
            self._cache.popitem(last=False)
        return prims

    def _static_segment(self, b: _Builder, rng: np.random.Generator, z0: float) -> None:
        walk_out = self._walk_out
        road_half = self._road_half
        intersection = rng.random() < 0.08
        for side in (-1.0, 1.0):
            zone = rng.choice(4, p=[0.58, 0.2, 0.12, 0.1])  # building, park, fence, wall
            if intersection:
                zone = 1
            if zone == 0:
                self._building(b, rng, side, walk_out, z0)
            else:
                if zone == 1 or rng.random() < 0.5:
                    for _ in range(int(rng.integers(1, 4))):
                        self._tree(b, rng, side * (walk_out + rng.uniform(2.0, 14.0)),
                                   z0 + rng.uniform(0, SEGMENT_LEN))
                    if rng.random() < 0.5:  # hedge
                        d = side * (walk_out + rng.uniform(0.5, 2.0))
                        za = z0 + rng.uniform(0, 4)
                        b.begin(d, za + 4)
                        b.box(d - 0.6, d + 0.6, 0, rng.uniform(0.6, 1.6), za,
                              za + rng.uniform(4, 8), _pick(rng, _FOLIAGE), VEGETATION)
                if zone == 2:
                    d = side * (walk_out + rng.uniform(0.0, 0.8))
                    hgt = rng.uniform(1.0, 2.2)
                    col = _pick(rng, _GREY + [(140, 110, 80), (60, 90, 60)], 0.15)
                    b.begin(d, z0 + SEGMENT_LEN, far=True)
                    b.quad_d(d, 0, hgt, z0, z0 + SEGMENT_LEN, col, FENCE)
                    bars = col // 2
                    for zz in np.arange(z0 + 0.3, z0 + SEGMENT_LEN, rng.uniform(0.4, 1.2)):
                        b.quad_d(d, 0, hgt, zz, zz + 0.06, bars, FENCE, label=False,
                                 detail=True)
                elif zone == 3:
                    d = side * (walk_out + rng.uniform(0.0, 1.5))
                    col = _pick(rng, _FACADE + _GREY, 0.15)
                    b.begin(d, z0 + SEGMENT_LEN, far=True)
                    b.box(d - 0.2 * side, d + 0.2 * side, 0, rng.uniform(0.8, 2.5), z0,
                          z0 + SEGMENT_LEN, col, WALL)
            # street furniture on the sidewalk
            curb = side * (road_half + 0.5)
            if rng.random() < 0.5:
                self._street_light(b, rng, curb, z0 + rng.uniform(0, SEGMENT_LEN), side)
            if rng.random() < 0.35:
                self._sign_post(b, rng, side * (road_half + rng.uniform(0.3, 1.0)),
                                z0 + rng.uniform(0, SEGMENT_LEN))
            if self._verge and rng.random() < 0.6:   # trees on the grass verge
                self._tree(b, rng, side * (road_half + self._verge / 2),
                           z0 + rng.uniform(0, SEGMENT_LEN))
            elif zone == 0 and rng.random() < 0.35:
                self._tree(b, rng, side * (walk_out - 1.0), z0 + rng.uniform(0, SEGMENT_LEN))
            for _ in range(int(rng.poisson(0.8))):
                d = side * (self._walk_in + rng.uniform(0.3, self._sidewalk - 0.3))
                self._person(b, rng, d, z0 + rng.uniform(0, SEGMENT_LEN))
            if rng.random() < self._park_p and not intersection:
                self._vehicle(b, rng, side * self._park_d, z0 + rng.uniform(0, SEGMENT_LEN - 5),
                              parked=True)
        if intersection:
            self._traffic_light(b, rng, z0 + SEGMENT_LEN / 2)

    def _traffic_segment(self, b: _Builder, rng: np.random.Generator, z0: float,
                         stream: int) -> None:
        lane = self._lanes[stream - 1][0]
        if stream == 1:  # ego lane: lead vehicles only far enough ahead
            if z0 < 12.0 or rng.random() > 0.15:
                return
        elif rng.random() > 0.45:
            return
        self._vehicle(b, rng, lane + rng.uniform(-0.3, 0.3), z0 + rng.uniform(0, 4),
                      parked=False)

    def _building(self, b: _Builder, rng: np.random.Generator, side: float, walk_out: float,
                  z0: float) -> None:
        gap0 = rng.uniform(0, 1.5) if rng.random() < 0.4 else 0.0
        gap1 = rng.uniform(0, 1.5) if rng.random() < 0.4 else 0.0
        za, zb = z0 + gap0, z0 + SEGMENT_LEN - gap1
        setback = rng.uniform(0.0, 3.0) if rng.random() < 0.5 else 0.0
        front = side * (walk_out + setback)
        back = side * (walk_out + setback + 15.0)
        height = float(rng.uniform(6.0, 28.0))
        col = _pick(rng, _FACADE, 0.18)
        b.begin(front, zb, far=True)
        if self._shade:
            b.shadow(min(front, back), max(front, back), za, zb, height, self._sun)
        # body: the end faces are slightly darker than the facade (simple shading)
        b.box(min(front, back), max(front, back), 0, height, za, zb,
              (col * 0.7).astype(np.uint8), BUILDING)
        b.quad_d(front, 0, height, za, zb, col, BUILDING, label=False)
        # windows: dark or sky-reflecting glass. One ribbon per floor, then facade-coloured
        # piers over them for a window grid: few primitives per building.
        glass = _pick(rng, [(40, 50, 60), (90, 110, 140), (20, 20, 25), (150, 160, 170)], 0.15)
        floor = rng.uniform(2.8, 3.6)
        first = floor * 0.35 + (floor if rng.random() < 0.3 else 0.0)
        floors = np.arange(first, height - 1.2, floor)[:9]
        for fy in floors:
            b.quad_d(front, fy, fy + floor * 0.5, za + 0.4, zb - 0.4, glass, BUILDING,
                     label=False, detail=True)
        if len(floors) and rng.random() < 0.7:
            ncol = int(np.clip((zb - za) / rng.uniform(1.8, 3.5), 1, 5))
            wz = (zb - za - 0.8) / ncol
            pier = rng.uniform(0.25, 0.5) * wz
            for c in range(1, ncol):
                zc = za + 0.4 + c * wz
                b.quad_d(front, floors[0] - 0.1, floors[-1] + floor * 0.6, zc - pier / 2,
                         zc + pier / 2, col, BUILDING, label=False, detail=True)
        if rng.random() < 0.3:  # shop awning / sign band at the ground floor
            b.quad_d(front, 2.6, 3.3, za + 0.3, zb - 0.3, _pick(rng, _CAR, 0.2), BUILDING,
                     label=False, detail=True)

    def _tree(self, b: _Builder, rng: np.random.Generator, d: float, z: float) -> None:
        trunk_h = rng.uniform(1.8, 4.0)
        r = rng.uniform(1.2, 3.2)
        b.begin(d, z)
        if self._shade:
            b.shadow(d - r * 0.8, d + r * 0.8, z - r * 0.8, z + r * 0.8, trunk_h + r,
                     self._sun)
        bark = _pick(rng, [(90, 70, 50), (70, 60, 55), (110, 95, 80)], 0.15)
        tw = rng.uniform(0.12, 0.25)
        b.box(d - tw, d + tw, 0, trunk_h + r * 0.5, z - tw, z + tw, bark, VEGETATION)
        leaf = _pick(rng, _FOLIAGE, 0.2)
        b.ellipse(d, trunk_h + r * 0.8, z, r, r * rng.uniform(0.8, 1.3), leaf, VEGETATION)
        # a few darker / lighter clumps for texture
        for _ in range(3):
            b.ellipse(d + rng.uniform(-r, r) * 0.5, trunk_h + r * rng.uniform(0.5, 1.2), z,
                      r * 0.4, r * 0.35, np.clip(leaf.astype(np.int16) + rng.integers(-30, 30),
                                                0, 255).astype(np.uint8),
                      VEGETATION, label=False, detail=True)

    def _street_light(self, b: _Builder, rng: np.random.Generator, d: float, z: float,
                      side: float) -> None:
        hgt = rng.uniform(6.0, 9.0)
        pw = rng.uniform(0.07, 0.13)
        col = _pick(rng, _GREY + [(50, 60, 50)], 0.15)
        b.begin(d, z)
        b.box(d - pw, d + pw, 0, hgt, z - pw, z + pw, col, POLE)
        arm = rng.uniform(1.0, 2.5)
        b.box(min(d, d - side * arm), max(d, d - side * arm), hgt - 0.12, hgt, z - 0.06,
              z + 0.06, col, POLE)
        head = d - side * arm
        b.box(head - 0.3, head + 0.3, hgt - 0.25, hgt - 0.05, z - 0.15, z + 0.15, col, POLE)

    def _sign_post(self, b: _Builder, rng: np.random.Generator, d: float, z: float) -> None:
        hgt = rng.uniform(2.0, 3.2)
        b.begin(d, z)
        pole = _pick(rng, _GREY, 0.15)
        b.box(d - 0.04, d + 0.04, 0, hgt, z - 0.04, z + 0.04, pole, POLE)
        size = rng.uniform(0.5, 0.9)
        y = hgt + size * 0.4
        shape = int(rng.integers(4))
        face = _pick(rng, [(200, 30, 30), (30, 70, 170), (230, 200, 40), (240, 240, 240),
                           (40, 120, 60)], 0.1)
        z_face = z - 0.06
        if shape == 0:
            b.ellipse(d, y, z_face, size / 2, size / 2, face, SIGN)
            b.ellipse(d, y, z_face, size / 3, size / 3, _pick(rng, [(240, 240, 240)], 0.05),
                      SIGN, label=False, detail=True)
        elif shape == 1:
            b.tri_z(d, y, z_face, size, face, SIGN, up=bool(rng.random() < 0.6))
        elif shape == 2:
            b.quad_z(d - size / 2, d + size / 2, y - size / 3, y + size / 3, z_face, face, SIGN)
        else:
            b.quad_z(d - size / 2, d + size / 2, y - size / 2, y + size / 2, z_face, face, SIGN)
            b.quad_z(d - size / 4, d + size / 4, y - size / 4, y + size / 4, z_face,
                     _pick(rng, [(240, 240, 240), (20, 20, 20)], 0.05), SIGN, label=False,
                     detail=True)

    def _traffic_light(self, b: _Builder, rng: np.random.Generator, z: float) -> None:
        col = _pick(rng, _GREY + [(40, 40, 40)], 0.1)
        state = int(rng.integers(3))
        for side in (-1.0, 1.0):
            d = side * (self._road_half + 0.6)
            hgt = rng.uniform(5.5, 6.5)
            b.begin(d, z)
            b.box(d - 0.1, d + 0.1, 0, hgt, z - 0.1, z + 0.1, col, POLE)
            if side > 0:  # mast arm over our lanes with a hanging light
                b.box(1.0, d, hgt - 0.15, hgt, z - 0.07, z + 0.07, col, POLE)
                self._light_box(b, rng, 3.5 if self._wide else EGO_LANE, hgt - 1.2, z, state)
            self._light_box(b, rng, d, 2.6, z, state)

    def _light_box(self, b: _Builder, rng: np.random.Generator, d: float, y: float, z: float,
                   state: int) -> None:
        housing = _pick(rng, [(30, 30, 30), (200, 170, 30), (60, 60, 60)], 0.1)
        b.box(d - 0.2, d + 0.2, y, y + 1.0, z - 0.25, z - 0.1, housing, LIGHT)
        lamps = [(255, 40, 30), (255, 190, 40), (60, 255, 120)]
        for k in range(3):
            on = k == state
            c = np.array(lamps[k] if on else (50, 50, 45), np.uint8)
            b.ellipse(d, y + 0.82 - k * 0.32, z - 0.26, 0.1, 0.1, c, LIGHT, label=False,
                      detail=True)

    def _person(self, b: _Builder, rng: np.random.Generator, d: float, z: float) -> None:
        hgt = rng.uniform(1.5, 1.95)
        wid = hgt * 0.26
        b.begin(d, z)
        pants = _pick(rng, _CLOTHES, 0.2)
        top = _pick(rng, _CLOTHES, 0.2)
        skin = _pick(rng, _SKIN, 0.1)
        leg = 0.45 * hgt
        stride = rng.uniform(-0.15, 0.15)
        b.box(d - wid / 2, d - 0.02, 0, leg, z - 0.1 + stride, z + 0.1 + stride, pants, PERSON)
        b.box(d + 0.02, d + wid / 2, 0, leg, z - 0.1 - stride, z + 0.1 - stride, pants, PERSON)
        b.box(d - wid / 2, d + wid / 2, leg, 0.85 * hgt, z - 0.15, z + 0.15, top, PERSON)
        b.box(d - wid / 2 - 0.09, d - wid / 2, leg + 0.1, 0.83 * hgt, z - 0.05, z + 0.05, top,
              PERSON)
        b.box(d + wid / 2, d + wid / 2 + 0.09, leg + 0.1, 0.83 * hgt, z - 0.05, z + 0.05, top,
              PERSON)
        b.ellipse(d, 0.93 * hgt, z - 0.1, 0.11, 0.13, skin, PERSON)
        if rng.random() < 0.3:  # bag / backpack
            b.box(d - 0.15, d + 0.15, leg, leg + 0.3, z - 0.25, z - 0.15, _pick(rng, _CLOTHES),
                  PERSON)

    def _vehicle(self, b: _Builder, rng: np.random.Generator, d: float, z: float,
                 parked: bool) -> None:
        u = rng.random()
        kind = CAR if (parked or u < 0.8) else (TRUCK if u < 0.9 else BUS)
        if kind == CAR:
            w, h, length = rng.uniform(1.65, 1.95), rng.uniform(1.35, 1.7), rng.uniform(3.8, 4.9)
        elif kind == TRUCK:
            w, h, length = rng.uniform(2.2, 2.5), rng.uniform(2.8, 3.8), rng.uniform(6.0, 9.0)
        else:
            w, h, length = 2.5, rng.uniform(2.9, 3.3), rng.uniform(10.0, 13.0)
        body = _pick(rng, _CAR, 0.15)
        if kind == BUS:
            body = _pick(rng, [(200, 40, 40), (240, 200, 40), (230, 230, 230), (40, 90, 160)],
                         0.1)
        dark = np.array([25, 25, 28], np.uint8)
        glass = _pick(rng, [(60, 70, 85), (30, 35, 40), (110, 120, 135)], 0.1)
        d0, d1 = d - w / 2, d + w / 2
        z1 = z + length
        b.begin(d, z)
        if self._shade:
            b.shadow(d0, d1, z, z1, h, self._sun)
        if kind == CAR:
            belt = h * 0.55
            b.box(d0, d1, 0.25, belt, z, z1, body, CAR)
            inset = w * 0.1
            b.box(d0 + inset, d1 - inset, belt, h, z + length * 0.25, z1 - length * 0.2,
                  (body * 0.9).astype(np.uint8), CAR)
            for zz in (z + 0.7, z1 - 0.7):  # axles: wheels and the dark underbody
                b.box(d0 + 0.05, d1 - 0.05, 0, 0.55, zz - 0.33, zz + 0.33, dark, CAR)
            # only the window on the near end (seen from behind or, oncoming, the front)
            b.quad_z(d0 + inset + 0.05, d1 - inset - 0.05, belt + 0.05, h - 0.07,
                     z + length * 0.25, glass, CAR, label=False, detail=True)
            lamp = np.array([200, 20, 20], np.uint8)
            b.quad_z(d0 + 0.05, d0 + 0.35, belt - 0.3, belt - 0.1, z, lamp, CAR, label=False,
                     detail=True)
            b.quad_z(d1 - 0.35, d1 - 0.05, belt - 0.3, belt - 0.1, z, lamp, CAR, label=False,
                     detail=True)
            b.quad_z(d0 + 0.4, d1 - 0.4, 0.3, 0.5, z, dark, CAR, label=False, detail=True)
        else:
            b.box(d0, d1, 0.4, h, z, z1, body, kind)
            for zz in (z + 1.2, z1 - 1.5):
                b.box(d0 + 0.05, d1 - 0.05, 0, 1.0, zz - 0.5, zz + 0.5, dark, kind)
            if kind == TRUCK:  # cargo box in a different colour than the cab
                b.box(d0, d1, 0.9, h + 0.2, z, z + length * 0.72,
                      _pick(rng, _FACADE + _GREY, 0.15), TRUCK)
            else:  # bus window band along the sides and at the back
                b.box(d0 - 0.01, d1 + 0.01, h * 0.55, h * 0.88, z + 0.5, z1 - 0.5, glass, BUS,
                      label=False, detail=True)
            b.quad_z(d0 + 0.15, d1 - 0.15, h * 0.6, h * 0.9, z, glass, kind, label=False,
                     detail=True)

    # ------------------------------------------------------------------ rendering
    def _visible(self, cam_z: float, i: int) -> _Prims:
        parts = []
        lo, hi = cam_z - 40.0, cam_z + DRAW_DIST
        for k in range(int(math.floor(lo / SEGMENT_LEN)), int(math.floor(hi / SEGMENT_LEN)) + 1):
            parts.append(self._segment(0, k))
        # traffic streams: segment coordinates move with the lane speed
        for s, (_, v) in enumerate(self._lanes, start=1):
            shift = v * i
            moved = []
            ka = int(math.floor((lo - shift) / SEGMENT_LEN))
            kb = int(math.floor((hi - shift) / SEGMENT_LEN))
            for k in range(ka, kb + 1):
                if s == 1:  # ego lane: lead cars are placed relative to the mean camera path
                    if k < 0:
                        continue
                p = self._segment(s, k)
                if len(p.cls):
                    moved.append(p)
            if moved:
                p = _Prims.concat(moved)
                corners = p.corners.copy()
                corners[:, :, 2] += shift
                ref = p.ref.copy()
                ref[:, 1] += shift
                parts.append(_Prims(corners, p.kind, p.radius, p.color, p.cls, p.label, ref,
                                    p.far, p.order, p.detail))
        return _Prims.concat(parts)

    def frame(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Render frame ``i`` of the drive.

        Args:
            i: frame index (>= 0); consecutive indices are consecutive camera positions.

        Returns:
            ``(rgb, label)``: ``(H, W, 3)`` uint8 RGB and ``(H, W)`` uint8 trainIds
            (255 = ignore, on the ego hood).
        """
        if i < 0:
            raise SegRosError(f'frame index must be >= 0, got {i}')
        i = int(i)
        h, w = self.size
        cam_x, cam_z, heading, horizon = self.camera(i)
        ch, sh = math.cos(heading), math.sin(heading)
        rgb = np.empty((h, w, 3), np.uint8)
        label = np.empty((h, w), np.uint8)
        hz = int(min(max(math.ceil(horizon - 0.5), 0), h))   # first ground row

        # exposure / white balance drift (clouds passing, auto exposure hunting): applied to
        # every colour source, so no per-pixel pass over the finished image is needed
        p = self._path
        gain = self._exposure * (1.0 + 0.18 * math.sin(i / 37.0 + p[7])
                                 + 0.07 * math.sin(i / 11.0 + p[0]))
        light = (gain * self._tint).astype(np.float32)

        if hz > 0:   # sky window of the panorama
            pan = int(round(heading * self._pano_px_per_rad)) % self._pano_w
            off = int(round(self._pano_h0 - horizon))
            off = min(max(off, 0), self._pano_rgb.shape[0] - hz)
            rgb[:hz] = self._pano_rgb[off:off + hz, pan:pan + w]
            label[:hz] = self._pano_lab[off:off + hz, pan:pan + w]
            sky_lut = np.clip(np.arange(256, dtype=np.float32)[:, None] * light, 0, 255)
            cv2.LUT(rgb[:hz], sky_lut.astype(np.uint8).reshape(256, 1, 3), dst=rgb[:hz])
        if hz < h:
            self._ground(rgb, label, hz, horizon, cam_x, cam_z, ch, sh, light)
        prims = self._visible(cam_z, i)
        if len(prims.cls):
            self._draw(rgb, label, prims, cam_x, cam_z, ch, sh, horizon, light)
        if self._hood:
            self._draw_hood(rgb, label, light)
        # sensor noise and blotches at a per-frame offset (deterministic in i)
        r = (i * 7919 + self.seed * 104729) % (self._pad * self._pad)
        oy, ox = divmod(r, self._pad)
        cv2.add(rgb, self._noise_pos[oy:oy + h, ox:ox + w], dst=rgb)
        cv2.subtract(rgb, self._noise_neg[oy:oy + h, ox:ox + w], dst=rgb)
        by, bx = (self._pad - 1 - oy), (self._pad - 1 - ox)
        cv2.add(rgb, self._blot_pos[by:by + h, bx:bx + w], dst=rgb)
        cv2.subtract(rgb, self._blot_neg[by:by + h, bx:bx + w], dst=rgb)
        return rgb, label

    def _ground(self, rgb: np.ndarray, label: np.ndarray, hz: int, horizon: float,
                cam_x: float, cam_z: float, ch: float, sh: float, light: np.ndarray) -> None:
        """Road, markings, sidewalk and terrain by inverse perspective of each pixel.

        The lateral road coordinate ``d`` and world ``z`` are smooth in the column, so they are
        computed on every 8th column and linearly interpolated (cv2.resize, exact sample
        alignment). ``|d|`` is then quantised to 1/16 m (one uint8 per pixel) and lookup tables
        turn it into appearance and class: the whole full-resolution work is a handful of
        OpenCV passes.
        """
        h, w = self.size
        f = self.focal
        cs = 8
        nc = (w + cs - 1) // cs
        rows = np.arange(hz, h, dtype=np.float32) + 0.5 - np.float32(horizon)
        zc = (f * CAM_HEIGHT) / np.maximum(rows, 0.25)                 # camera depth per row
        # sample columns sit at the centres of 8-pixel blocks, where resize reads them
        ucoef = ((np.arange(nc, dtype=np.float32) * cs + (cs - 1) / 2.0 - self.cx) / f)
        xc = zc[:, None] * ucoef[None, :]
        zw = (cam_z + zc * ch)[:, None] - xc * np.float32(sh)
        xw = (cam_x + zc * sh)[:, None] + xc * np.float32(ch)
        d = (xw - self.road_center(zw)).astype(np.float32)
        n = h - hz
        q = cv2.convertScaleAbs(
            cv2.resize(d, (nc * cs, n), interpolation=cv2.INTER_LINEAR)[:, :w], alpha=16.0)
        app = cv2.LUT(q, self._ground_lut)
        # dashes of the lane lines (8) and paving joints (16) vary along z only: coarse flags
        zq = zw + 9000.0
        flags = ((((zq * (1 / 3.0)).astype(np.int32) % 3) == 0).astype(np.uint8) * 8
                 + (((zq * (1 / 1.5)) % 1.0) < 0.04).astype(np.uint8) * 16)
        flags = cv2.resize(flags, (nc * cs, n), interpolation=cv2.INTER_NEAREST)[:, :w]
        cv2.bitwise_or(app, flags, dst=app)
        colors = np.clip(self._ground_colors * light, 0, 255).astype(np.uint8)
        cv2.LUT(cv2.merge([app, app, app]), colors.reshape(256, 1, 3), dst=rgb[hz:])
        cv2.LUT(app, self._ground_cls, dst=label[hz:])
        # aerial perspective: only the rows farther than 40 m (a few rows under the horizon)
        nh = int(np.count_nonzero(zc > 40.0))
        if nh:
            a = np.clip((zc[:nh] - 40.0) / 400.0, 0, 0.6)[:, None, None]
            band = rgb[hz:hz + nh].astype(np.float32)
            haze = self._sky_bottom * light
            rgb[hz:hz + nh] = (band * (1 - a) + haze * a).astype(np.uint8)

    def _build_ground_luts(self) -> None:
        """Tables from quantised ``|d|`` (1/16 m) and z flags to appearance, colour and class.

        Appearance ids (low 3 bits): 0 road, 1 sidewalk, 2 terrain, 3 dashed lane line,
        4 solid line, 5 curb; bit 8: inside a lane-line dash; bit 16: on a paving joint.
        """
        ad = np.arange(256, dtype=np.float32) / 16.0
        rh = self._road_half
        base = np.where(ad < rh, 0, np.where(ad < self._walk_in, 2,
                                             np.where(ad < self._walk_out, 1, 2)))
        base = np.where((ad >= rh) & (ad < rh + 0.25), 5, base)     # curb stones
        for x in self._dashed:
            base = np.where(np.abs(ad - x) < 0.07, 3, base)
        for x in self._solid:
            base = np.where(np.abs(ad - x) < 0.07, 4, base)
        self._ground_lut = base.astype(np.uint8)
        colors = np.zeros((256, 3), np.float32)
        cls = np.zeros(256, np.uint8)
        walk = self._walk_rgb.astype(np.float32)
        for idx in range(256):
            a, dash, joint = idx & 7, bool(idx & 8), bool(idx & 16)
            if a == 3 and not dash:
                a = 0                                   # gap between lane-line dashes
            if a in (0, 3, 4):
                cls[idx] = ROAD
                colors[idx] = self._mark_rgb if a in (3, 4) else self._road_rgb
            elif a in (1, 5):
                cls[idx] = SIDEWALK
                colors[idx] = walk * (0.75 if a == 5 else (0.7 if joint else 1.0))
            else:
                cls[idx] = TERRAIN
                colors[idx] = self._terrain_rgb
        self._ground_colors = colors
        self._ground_cls = cls

    def _draw(self, rgb: np.ndarray, label: np.ndarray, p: _Prims, cam_x: float,
              cam_z: float, ch: float, sh: float, horizon: float, light: np.ndarray) -> None:
        """Painter's algorithm: primitives far to near, each into the image and the label."""
        f = self.focal
        w = self.size[1]
        c = p.corners
        # road coordinates -> world -> camera
        zw = c[..., 2]
        xw = self.road_center(zw) + c[..., 0]
        dx = xw - cam_x
        dz = zw - cam_z
        xc = dx * ch - dz * sh
        zc = dx * sh + dz * ch
        yc = CAM_HEIGHT - c[..., 1]
        # object depth keys
        rz = p.ref[:, 1]
        rx = self.road_center(rz) + p.ref[:, 0] - cam_x
        depth = np.hypot(rx * ch - (rz - cam_z) * sh, rx * sh + (rz - cam_z) * ch)
        # buildings / fences / walls are long: key them by their far end so that the
        # street furniture in front of them is drawn after them
        zmax = zc.max(axis=1)
        key = np.where(p.far, zmax, depth)
        visible = (zmax > NEAR) & (depth < DRAW_DIST + 20)
        visible &= ~(p.detail & (depth > DETAIL_DIST))
        zs = np.maximum(zc, NEAR)
        u = self.cx + f * xc / zs
        v = horizon + f * yc / zs
        umin, umax = u.min(axis=1), u.max(axis=1)
        vmin, vmax = v.min(axis=1), v.max(axis=1)
        visible &= (umax >= 0) & (umin < w) & (vmax >= 0) & (vmin < self.size[0])
        # sub-pixel primitives vanish (in the image and the label alike)
        width = np.where(p.kind == _ELLIPSE, 2 * f * p.radius[:, 0] / zs[:, 0], umax - umin)
        visible &= width >= self.min_width_px
        shadow = p.kind == _SHADOW
        if shadow.any():
            self._draw_shadows(rgb, np.nonzero(visible & shadow)[0], xc, yc, zc, u, v,
                               horizon)
            visible &= ~shadow
        idx = np.nonzero(visible)[0]
        if len(idx) == 0:
            return
        idx = idx[np.lexsort((p.order[idx], -key[idx]))]
        behind = np.asarray((zc < NEAR).any(axis=1))
        colors = np.clip(p.color[idx] * light, 0, 255).astype(np.uint8).tolist()
        pts_i = np.round(np.stack([u, v], axis=-1)[idx]).astype(np.int32)
        kinds = p.kind[idx].tolist()
        clss = p.cls[idx].tolist()
        lbl = p.label[idx].tolist()
        beh = behind[idx].tolist()
        zc0 = zc[idx, 0].tolist()
        radius = p.radius[idx]
        for n, j in enumerate(idx.tolist()):
            kind = kinds[n]
            color = colors[n]
            if kind == _ELLIPSE:
                z = zc0[n]
                if z <= NEAR:
                    continue
                center = (int(pts_i[n, 0, 0]), int(pts_i[n, 0, 1]))
                axes = (max(int(f * radius[n, 0] / z + 0.5), 1),
                        max(int(f * radius[n, 1] / z + 0.5), 1))
                cv2.ellipse(rgb, center, axes, 0, 0, 360, color, -1)
                if lbl[n]:
                    cv2.ellipse(label, center, axes, 0, 0, 360, clss[n], -1)
                continue
            if beh[n]:
                clipped = self._clip(np.stack([xc[j], yc[j], zc[j]], axis=1), horizon)
                if clipped is None:
                    continue
                poly = cv2.convexHull(np.round(clipped).astype(np.int32))
            elif kind == _HULL:
                poly = cv2.convexHull(pts_i[n])
            else:
                poly = pts_i[n, _RINGS[kind]]
            cv2.fillConvexPoly(rgb, poly, color)
            if lbl[n]:
                cv2.fillConvexPoly(label, poly, clss[n])

    def _draw_shadows(self, rgb: np.ndarray, idx: np.ndarray, xc: np.ndarray, yc: np.ndarray,
                      zc: np.ndarray, u: np.ndarray, v: np.ndarray, horizon: float) -> None:
        """Darken the ground under the objects' shadows (image only: shadows have no class)."""
        if not len(idx):
            return
        h, w = self.size
        hz = int(min(max(math.ceil(horizon - 0.5), 0), h))
        mask = np.zeros((h - hz, w), np.uint8)
        behind = (zc[idx] < NEAR).any(axis=1)
        pts_i = np.round(np.stack([u[idx], v[idx] - hz], axis=-1)).astype(np.int32)
        for n, j in enumerate(idx.tolist()):
            if behind[n]:
                clipped = self._clip(np.stack([xc[j], yc[j], zc[j]], axis=1), horizon - hz)
                if clipped is None:
                    continue
                poly = cv2.convexHull(np.round(clipped).astype(np.int32))
            else:
                poly = cv2.convexHull(pts_i[n])
            cv2.fillConvexPoly(mask, poly, 255)
        ground = rgb[hz:]
        shade = (self._shade, self._shade, self._shade, 0)
        cv2.subtract(ground, shade, dst=ground, mask=mask)  # type: ignore[call-overload]

    def _clip(self, cam: np.ndarray, horizon: float) -> np.ndarray | None:
        """Project a box (8 camera-space corners) clipped by the near plane."""
        front = cam[:, 2] >= NEAR
        pts = [cam[k] for k in range(8) if front[k]]
        for a in range(8):
            for bit in (1, 2, 4):
                if a & bit:
                    continue
                bb = a | bit
                if front[a] != front[bb]:
                    t = (NEAR - cam[a, 2]) / (cam[bb, 2] - cam[a, 2])
                    pts.append(cam[a] + t * (cam[bb] - cam[a]))
        if len(pts) < 3:
            return None
        arr = np.array(pts, np.float32)
        u = self.cx + self.focal * arr[:, 0] / arr[:, 2]
        v = horizon + self.focal * arr[:, 1] / arr[:, 2]
        return np.stack([u, v], axis=1)

    def _draw_hood(self, rgb: np.ndarray, label: np.ndarray, light: np.ndarray) -> None:
        """The ego vehicle's bonnet at the bottom: ignore (255) as in Cityscapes."""
        h, w = self.size
        top = int(h * (1 - self._hood_height))
        pts = np.array([[0, h], [0, top + int(h * 0.03)], [w // 4, top], [3 * w // 4, top],
                        [w - 1, top + int(h * 0.03)], [w - 1, h]], np.int32)
        color = np.clip(np.array([35, 35, 40], np.float32) * light, 0, 255).astype(int).tolist()
        cv2.fillConvexPoly(rgb, pts, color)
        cv2.fillConvexPoly(label, pts, IGNORE_INDEX)


def classes_yaml_dict() -> dict:
    """The ``classes.yaml`` content for synthetic data: the 19 Cityscapes classes.

    Same schema as ``seg_ros.metadata.load_palette`` reads
    (``classes: [{name, color}, ...]``) plus ``ignore_index``.
    """
    return {'classes': [{'name': n, 'color': list(c)}
                        for n, c in zip(CITYSCAPES_CLASSES, CITYSCAPES_PALETTE)],
            'ignore_index': IGNORE_INDEX}


def write_dataset(out_dir: str | Path, n: int, size: tuple[int, int] = (512, 1024),
                  seed: int = 0, start: int = 0, stride: int = 1,
                  progress: bool = False, overwrite: bool = False) -> Path:
    """Write ``n`` frames of a drive (every ``stride``-th) in the generic folder format.

    Layout: ``images/000000.png`` (RGB), ``masks/000000.png`` (uint8 trainIds, 255 ignore),
    ``classes.yaml`` (names and colours of the 19 Cityscapes classes).

    Args:
        out_dir: folder to create (or an empty one).
        n: number of frames.
        size: ``(height, width)``.
        seed: drive seed.
        start: index of the first frame.
        stride: drive frames between written frames (1: a video sequence).
        progress: show a tqdm progress bar.
        overwrite: replace a dataset already in ``out_dir`` (its old PNGs are deleted first, so
            no stale frames of a longer earlier run remain).

    Returns:
        The output folder.
    """
    import yaml

    if n < 1:
        raise SegRosError(f'number of frames must be >= 1, got {n}')
    if stride < 1 or start < 0:
        raise SegRosError(f'stride must be >= 1 and start >= 0, got {stride}, {start}')
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SegRosError(f'{out} exists and is not a folder')
    old = [p for sub in ('images', 'masks') if (out / sub).is_dir()
           for p in (out / sub).glob('*.png')]
    if old and not overwrite:
        raise SegRosError(f'{out} already holds a dataset ({len(old)} PNGs); choose another '
                          f'folder or overwrite it (--overwrite)')
    for p in old:
        p.unlink()
    (out / 'images').mkdir(parents=True, exist_ok=True)
    (out / 'masks').mkdir(parents=True, exist_ok=True)
    drive = SyntheticDrive(size=size, seed=seed)
    it = range(start, start + n * stride, stride)
    if progress:
        from seg_ros.progress import progress_bar
        it = progress_bar(it, desc='synth', unit='frame')
    # PNG encoding costs more than rendering: encode on worker threads (cv2 releases the
    # GIL) with fast compression, rendering stays on this thread
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1]

    def _write(path: Path, arr: np.ndarray) -> None:
        if not cv2.imwrite(str(path), arr, params):
            raise SegRosError(f'could not write {path}')

    pending: list[Future[None]] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for k, i in enumerate(it):
            rgb, label = drive.frame(i)
            name = f'{k:06d}.png'
            pending.append(pool.submit(_write, out / 'images' / name,
                                       cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)))
            pending.append(pool.submit(_write, out / 'masks' / name, label))
            if len(pending) > 16:  # bounded memory; surfaces write errors early
                for f in pending[:8]:
                    f.result()
                pending = pending[8:]
        for f in pending:
            f.result()
    with open(out / 'classes.yaml', 'w') as fh:
        yaml.safe_dump(classes_yaml_dict(), fh, sort_keys=False)
    return out
