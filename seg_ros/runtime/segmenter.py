"""``Segmenter``: the one segmentation pipeline used by the node, eval, bags and benchmarks.

    seg = Segmenter.from_file('models/regseg48_synthetic.onnx')        # or .engine / .pt / name
    result = seg(frame_bgr, color_order='bgr', color=True)
    result.ids          # (H, W) uint8 class ids at the frame's resolution, 255 = ignore
    result.color        # (H, W, 3) uint8 RGB colour mask
    result.timings      # {'preprocess_ms', 'inference_ms', 'postprocess_ms'}

Host work is uint8 only: resize or letterbox in (:mod:`seg_ros.runtime.preprocess`), the
network does normalisation, argmax and confidence (:mod:`seg_ros.runtime.pipeline`), then the
ids are mapped back with nearest-neighbour and coloured through a LUT
(:mod:`seg_ros.runtime.colorize`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
import hashlib
import logging
import os
from pathlib import Path
import tempfile
import time
from typing import Any

import cv2
import numpy as np

from seg_ros.errors import SegRosError
from seg_ros.metadata import ModelMeta, load_palette
from seg_ros.runtime import colorize as _colorize
from seg_ros.runtime.backends import (
    PRECISIONS,
    Backend,
    OrtBackend,
    TorchBackend,
    cuda_available,
    resolve_backend,
)
from seg_ros.runtime.preprocess import (
    COLOR_ORDERS,
    Geometry,
    check_image,
    compute_geometry,
    pad_value,
    prepare,
    restore,
)

log = logging.getLogger(__name__)

ENGINE_SUFFIXES = ('.engine', '.plan', '.trt')
CHECKPOINT_SUFFIXES = ('.pt', '.pth', '.ckpt')
EXPORT_VERSION = 2  # bump when the exported graph changes; invalidates cached ONNX files


@dataclass
class SegmentationResult:
    """What :class:`Segmenter` returns for one frame.

    Attributes:
        ids: (H, W) uint8 class ids at the input frame's resolution (255 = ignore).
        confidence: (H, W) uint8 max softmax x 255, if requested.
        color: (H, W, 3) uint8 RGB colour mask, if requested.
        overlay: (H, W, 3) uint8 RGB blend of frame and colour mask, if requested.
        timings: ``preprocess_ms``, ``inference_ms``, ``postprocess_ms`` (wall clock).
    """

    ids: np.ndarray
    confidence: np.ndarray | None = None
    color: np.ndarray | None = None
    overlay: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)


def model_kind(model: str | os.PathLike[str]) -> str:
    """``onnx``, ``engine``, ``checkpoint`` or ``name`` (a registered model name)."""
    path = Path(model)
    suffix = path.suffix.lower()
    if suffix == '.onnx':
        return 'onnx'
    if suffix in ENGINE_SUFFIXES:
        return 'engine'
    if suffix in CHECKPOINT_SUFFIXES or path.is_file():
        return 'checkpoint'
    if os.sep in str(model) or '/' in str(model):
        raise SegRosError(f'model file not found: {model}')
    return 'name'


def default_cache_dir() -> Path:
    """Where exported ONNX files and TensorRT engines are cached (``$SEG_ROS_CACHE``)."""
    env = os.environ.get('SEG_ROS_CACHE')
    if env:
        return Path(env)
    return Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'seg_ros'


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


class Segmenter:
    """Frames in, class ids (and confidence, colours, overlay) out, on any backend.

    Build it with :meth:`from_file`. Calls are thread-safe as far as the backend is (ONNX
    Runtime and torch are); the node calls it from one worker thread.

    Args:
        backend: a ready :class:`~seg_ros.runtime.backends.Backend`.
        resize_mode: ``stretch`` or ``letterbox``.
        palette: override of the metadata palette (name, YAML file or colour list).
    """

    def __init__(self, backend: Backend, resize_mode: str = 'stretch',
                 palette: str | Sequence[Sequence[int]] | None = None) -> None:
        compute_geometry((1, 1), (1, 1), resize_mode)  # validates the mode
        self.backend: Backend | None = backend
        self.meta: ModelMeta = backend.meta
        self.backend_name: str = backend.name
        self.input_size: tuple[int, int] = tuple(backend.input_size)  # type: ignore[assignment]
        self.resize_mode = resize_mode
        self._fill = pad_value(self.meta.mean)
        self._geometry: dict[tuple[int, int], Geometry] = {}
        self.lut = _colorize.palette_lut(self.meta.palette)
        if palette is not None:
            self.set_palette(palette)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_file(cls, model: str | os.PathLike[str], backend: str = 'auto',
                  device: str = 'auto', precision: str = 'fp32',
                  input_size: Sequence[int] | None = None, resize_mode: str = 'stretch',
                  weights: str | os.PathLike[str] | None = None,
                  engine_cache_dir: str | os.PathLike[str] | None = None,
                  threads: int | None = None, **backend_options: Any) -> Segmenter:
        """Load a model file or a registered model name on a backend.

        Args:
            model: ``.onnx`` (from ``seg-ros export``), TensorRT ``.engine`` (with its
                ``.json`` sidecar), seg_ros checkpoint ``.pt``, or a registered model name.
            backend: ``auto`` (TensorRT if importable and a GPU is present, else CUDA torch,
                else ONNX Runtime on the CPU), ``tensorrt``, ``onnxruntime`` or ``torch``.
            device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
            precision: ``fp32``, ``fp16`` (GPU) or ``int8`` (TensorRT).
            input_size: (height, width) network input; defaults to the model metadata. An
                ONNX file / engine has a fixed size, which this must match if given.
            resize_mode: ``stretch`` or ``letterbox``.
            weights: checkpoint for a registered model name.
            engine_cache_dir: where ONNX exports and TensorRT engines are cached
                (default ``~/.cache/seg_ros``).
            threads: CPU intra-op threads (ONNX Runtime / torch).
            **backend_options: passed to the backend (torch: ``cuda_graph``,
                ``channels_last``; tensorrt: ``calib``, ``rebuild``; onnxruntime:
                ``providers``).

        Raises:
            SegRosError: missing file, unknown backend, impossible combination, an engine
                built for another GPU / TensorRT, a size mismatch.
        """
        if precision not in PRECISIONS:
            raise SegRosError(f'precision must be one of {PRECISIONS}, got {precision!r}')
        kind = model_kind(model)
        if kind in ('onnx', 'engine') and not Path(model).is_file():
            raise SegRosError(f'model file not found: {model}')
        if weights is not None and kind != 'name':
            raise SegRosError('weights= goes with a registered model name, not a model file')
        if device == 'auto':
            device = 'cuda' if cuda_available() else 'cpu'
        name = resolve_backend(backend, kind, device)
        size = (int(input_size[0]), int(input_size[1])) if input_size else None
        if size is not None and min(size) < 1:
            raise SegRosError(f'input_size must be positive, got {size}')
        if name != 'tensorrt' and precision == 'int8':
            raise SegRosError('int8 needs the tensorrt backend')
        cache = Path(engine_cache_dir) if engine_cache_dir else default_cache_dir()
        impl: Backend
        if name == 'torch':
            from seg_ros.runtime.export import load_model_and_meta

            net, meta = load_model_and_meta(str(model), str(weights) if weights else None,
                                            size)
            impl = TorchBackend(net, meta, tuple(meta.input_size), device=device,  # type: ignore[arg-type]
                                precision=precision, threads=threads, **backend_options)
        elif name == 'onnxruntime':
            if backend == 'auto' and device.startswith('cuda') and not _ort_has_cuda():
                log.warning('onnxruntime has no CUDA provider here; running on the CPU')
                device = 'cpu'
            if precision == 'fp16' and not device.startswith('cuda'):
                raise SegRosError('fp16 on onnxruntime needs device cuda; on the CPU use fp32')
            onnx_path = Path(model) if kind == 'onnx' else _export_cached(
                str(model), weights, size, precision == 'fp16', cache)
            impl = OrtBackend(onnx_path, device=device, threads=threads, **backend_options)
        else:
            from seg_ros.runtime import trt_backend

            if kind == 'engine':
                impl = trt_backend.TrtBackend.from_engine(Path(model), device=device)
            else:
                onnx_path = Path(model) if kind == 'onnx' else _export_cached(
                    str(model), weights, size, precision == 'fp16', cache)
                impl = trt_backend.TrtBackend.from_onnx(onnx_path, precision=precision,
                                                        cache_dir=cache, device=device,
                                                        **backend_options)
        if size is not None and tuple(impl.input_size) != size:
            impl.close()
            raise SegRosError(f'{model} runs at {impl.input_size[0]}x{impl.input_size[1]}, '
                              f'input_size {size[0]}x{size[1]} was requested (re-export with '
                              f'`seg-ros export --size {size[0]}x{size[1]}`)')
        log.info('segmenter: %s on %s (%s), input %dx%d, %s', impl.meta.model, impl.name,
                 impl.device, impl.input_size[0], impl.input_size[1], resize_mode)
        return cls(impl, resize_mode=resize_mode)

    # ------------------------------------------------------------------ settings
    def set_palette(self, palette: str | Sequence[Sequence[int]]) -> None:
        """Change the colours of :attr:`SegmentationResult.color` / ``overlay``.

        Args:
            palette: ``cityscapes``, ``camvid``, a YAML palette file, or RGB colours.
        """
        colours = load_palette(palette)[1] if isinstance(palette, str) else palette
        if len(colours) < self.meta.num_classes:
            raise SegRosError(f'palette has {len(colours)} colours, the model has '
                              f'{self.meta.num_classes} classes')
        self.lut = _colorize.palette_lut(colours)

    def geometry(self, height: int, width: int) -> Geometry:
        """The (cached) mapping of a ``height`` x ``width`` frame into the network input."""
        key = (int(height), int(width))
        geo = self._geometry.get(key)
        if geo is None:
            geo = compute_geometry(key, self.input_size, self.resize_mode)
            if len(self._geometry) > 16:  # camera resolutions rarely change; keep it bounded
                self._geometry.clear()
            self._geometry[key] = geo
        return geo

    # ------------------------------------------------------------------ inference
    def __call__(self, image: np.ndarray, color_order: str = 'rgb', confidence: bool = False,
                 color: bool = False, overlay: bool = False,
                 overlay_alpha: float = 0.5) -> SegmentationResult:
        """Segment one frame.

        Args:
            image: (H, W, 3) uint8 frame.
            color_order: ``rgb`` or ``bgr`` (the order of ``image``'s channels).
            confidence: also return the confidence map.
            color: also return the colour mask (RGB).
            overlay: also return the overlay (RGB, whatever ``color_order`` is).
            overlay_alpha: weight of the colour mask in the overlay, 0..1.

        Raises:
            SegRosError: wrong dtype, channel count, zero size, bad options.
        """
        return self.segment_batch([image], color_order, confidence, color, overlay,
                                  overlay_alpha)[0]

    def segment_batch(self, images: Sequence[np.ndarray], color_order: str = 'rgb',
                      confidence: bool = False, color: bool = False, overlay: bool = False,
                      overlay_alpha: float = 0.5) -> list[SegmentationResult]:
        """Segment several frames in one backend call (sizes may differ).

        Timings in each result are those of the whole batch divided by its size.
        """
        backend = self.backend
        if backend is None:
            raise SegRosError('segmenter is closed')
        if color_order not in COLOR_ORDERS:
            raise SegRosError(f'color_order must be one of {COLOR_ORDERS}, '
                              f'got {color_order!r}')
        if overlay and not 0.0 <= overlay_alpha <= 1.0:
            raise SegRosError(f'overlay_alpha must be in [0, 1], got {overlay_alpha}')
        if confidence and not backend.has_confidence:
            raise SegRosError('this model file has no confidence output (re-export it '
                              'without --no-confidence)')
        if not images:
            return []
        n = len(images)
        if n > backend.max_batch:
            out: list[SegmentationResult] = []
            for i in range(0, n, backend.max_batch):
                out += self.segment_batch(images[i:i + backend.max_batch], color_order,
                                          confidence, color, overlay, overlay_alpha)
            return out
        t0 = time.perf_counter()
        geos = []
        for i, image in enumerate(images):
            check_image(image, 'image' if n == 1 else f'image {i}')
            geos.append(self.geometry(image.shape[0], image.shape[1]))
        h, w = self.input_size
        if n == 1 and geos[0].is_identity and color_order == 'rgb':
            batch = np.ascontiguousarray(images[0])[None]  # zero-copy fast path
        else:
            batch = np.empty((n, h, w, 3), np.uint8)
            for i, (image, geo) in enumerate(zip(images, geos)):
                prepare(image, geo, color_order, self._fill, out=batch[i])
        t1 = time.perf_counter()
        ids_net, conf_net = backend.infer(batch, confidence)
        t2 = time.perf_counter()
        results = []
        for i, (image, geo) in enumerate(zip(images, geos)):
            ids = restore(ids_net[i], geo)
            conf = restore(conf_net[i], geo, cv2.INTER_LINEAR) if conf_net is not None else None
            col = _colorize.colorize(ids, self.lut) if (color or overlay) else None
            blend = None
            if overlay:
                rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if color_order == 'bgr' else image
                blend = _colorize.overlay(rgb, col, overlay_alpha)  # type: ignore[arg-type]
            results.append(SegmentationResult(ids, conf, col if color else None, blend))
        t3 = time.perf_counter()
        timings = {'preprocess_ms': (t1 - t0) * 1e3 / n, 'inference_ms': (t2 - t1) * 1e3 / n,
                   'postprocess_ms': (t3 - t2) * 1e3 / n}
        for r in results:
            r.timings = dict(timings)
        return results

    def close(self) -> None:
        """Free the backend (model, sessions, GPU memory). Further calls raise."""
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ort_has_cuda() -> bool:
    import onnxruntime as ort

    return 'CUDAExecutionProvider' in ort.get_available_providers()


def _export_cached(model: str, weights: str | os.PathLike[str] | None,
                   size: tuple[int, int] | None, fp16: bool, cache: Path) -> Path:
    """Export a checkpoint / model name to ONNX, reusing a cached export of the same weights.

    The cache name hashes the checkpoint bytes, size, precision and :data:`EXPORT_VERSION`.
    A bare model name (random weights) is exported to a fresh temporary file every time.
    """
    from seg_ros.runtime.export import export_onnx, load_model_and_meta

    net, meta = load_model_and_meta(model, str(weights) if weights else None, size)
    h, w = meta.input_size
    ckpt = Path(weights) if weights else (Path(model) if model_kind(model) == 'checkpoint'
                                          else None)
    if ckpt is None:
        out = Path(tempfile.mkdtemp(prefix='seg_ros_')) / f'{meta.model}_{h}x{w}.onnx'
        return export_onnx(net, meta, out, size=(h, w), fp16=fp16, dynamic_batch=True)
    digest = hashlib.sha256(
        f'{_file_sha256(ckpt)}|{h}x{w}|{fp16}|{EXPORT_VERSION}'.encode()).hexdigest()[:16]
    out = cache / 'onnx' / f'{ckpt.stem}-{h}x{w}{"-fp16" if fp16 else ""}-{digest}.onnx'
    if out.is_file():
        log.info('using cached export %s', out)
        return out
    log.info('exporting %s to %s (once; cached)', ckpt, out)
    return export_onnx(net, meta, out, size=(h, w), fp16=fp16, dynamic_batch=True)
