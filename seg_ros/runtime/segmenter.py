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
import importlib.util
import json
import logging
import os
from pathlib import Path
import re
import shutil
import tempfile
import time
from typing import Any

import cv2
import numpy as np

from seg_ros.errors import SegRosError
from seg_ros.fileio import atomic_write_text
from seg_ros.metadata import ModelMeta, load_palette
from seg_ros.runtime import colorize as _colorize
from seg_ros.runtime.auto import choose_precision
from seg_ros.runtime.backends import (
    PRECISIONS,
    Backend,
    OrtBackend,
    TorchBackend,
    cuda_available,
    resolve_backend,
)
from seg_ros.runtime.engine_cache import default_cache_dir
from seg_ros.runtime.preprocess import (
    COLOR_ORDERS,
    Geometry,
    check_image,
    compute_geometry,
    pad_value,
    prepare,
    restore,
)
from seg_ros.runtime.trt_rules import target_for_version

log = logging.getLogger(__name__)

ENGINE_SUFFIXES = ('.engine', '.plan', '.trt')
CHECKPOINT_SUFFIXES = ('.pt', '.pth', '.ckpt')
EXPORT_VERSION = 2  # bump when the exported graph changes; invalidates cached ONNX files


@dataclass(frozen=True)
class PreparedFrame:
    """A frame already fitted into the network input (:meth:`Segmenter.prepare_frame`).

    Attributes:
        net: (H, W, 3) uint8 RGB at the network input size.
        geometry: how the original frame maps into it (undone on the way back).
    """

    net: np.ndarray
    geometry: Geometry


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
        # what from_file chose and why (logged, shown in /diagnostics)
        self.precision: str = getattr(backend, 'precision', 'fp32')
        self.precision_reason: str = 'requested'
        self._fill = pad_value(self.meta.mean)
        self._geometry: dict[tuple[int, int], Geometry] = {}
        self.lut = _colorize.palette_lut(self.meta.palette)
        if palette is not None:
            self.set_palette(palette)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_file(cls, model: str | os.PathLike[str], backend: str = 'auto',
                  device: str = 'auto', precision: str = 'auto',
                  input_size: Sequence[int] | None = None, resize_mode: str = 'stretch',
                  weights: str | os.PathLike[str] | None = None,
                  engine_cache_dir: str | os.PathLike[str] | None = None,
                  threads: int | None = None, **backend_options: Any) -> Segmenter:
        """Load a model file or a registered model name on a backend.

        Args:
            model: ``.onnx`` (from ``seg-ros export``), TensorRT ``.engine`` (with its
                ``.json`` sidecar), seg_ros checkpoint ``.pt``, or a registered model name.
            backend: ``auto`` (TensorRT if importable and a GPU is present, else CUDA torch,
                else OpenVINO on the CPU when installed, else ONNX Runtime), ``tensorrt``,
                ``onnxruntime``, ``openvino`` or ``torch``.
            device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
            precision: ``auto`` (:func:`seg_ros.runtime.auto.choose_precision`: fp16 on CUDA,
                bf16 under OpenVINO on CPUs with native bf16, else fp32; int8 for a file from
                ``seg-ros quantize``), ``fp32``, ``fp16`` (GPU), ``bf16`` (OpenVINO) or
                ``int8`` (TensorRT; onnxruntime/openvino with a quantized file).
            input_size: (height, width) network input; defaults to the model metadata. An
                ONNX file / engine has a fixed size, which this must match if given.
            resize_mode: ``stretch`` or ``letterbox``.
            weights: checkpoint for a registered model name.
            engine_cache_dir: where ONNX exports and TensorRT engines are cached
                (default ``~/.cache/seg_ros``).
            threads: CPU intra-op threads (ONNX Runtime / torch).
            **backend_options: passed to the backend (torch: ``cuda_graph``,
                ``channels_last``; tensorrt: ``calib``, ``calib_topic``, ``rebuild``,
                ``max_batch``, ``opt_batch``, ``allow_tf32``, ``build``; onnxruntime:
                ``providers``, ``tensorrt_ep``, ``memory_pattern``; openvino: ``streams``).
                The TensorRT backend calibrates int8 with this ``resize_mode``; ONNX
                Runtime's TensorRT execution provider keeps its engines under
                ``engine_cache_dir``.

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
        requested_device = device
        if device == 'auto':
            device = 'cuda' if _gpu_for_auto() else 'cpu'
        name = resolve_backend(backend, kind, device)
        if name == 'openvino' and requested_device == 'auto':
            device = 'cpu'  # OpenVINO runs on the CPU (or an Intel GPU named explicitly)
        requested_precision = precision
        precision, precision_reason = choose_precision(precision, name, device)
        size = (int(input_size[0]), int(input_size[1])) if input_size else None
        if size is not None and min(size) < 1:
            raise SegRosError(f'input_size must be positive, got {size}')
        if name == 'torch' and precision == 'int8':
            raise SegRosError('int8 runs on tensorrt, or on onnxruntime/openvino with a file '
                              'from `seg-ros quantize`; not on torch')
        if name != 'openvino' and precision == 'bf16':
            raise SegRosError('bf16 runs on the openvino backend (CPUs with AVX512_BF16 or '
                              f'AMX), not on {name}')
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
            impl = OrtBackend(onnx_path, device=device, threads=threads,
                              engine_cache_dir=cache, fp16=precision == 'fp16',
                              **backend_options)
        elif name == 'openvino':
            from seg_ros.runtime.openvino_backend import OpenVinoBackend

            onnx_path = Path(model) if kind == 'onnx' else _export_cached(
                str(model), weights, size, False, cache)
            impl = OpenVinoBackend(onnx_path, device=device, precision=precision,
                                   threads=threads, cache_dir=cache / 'openvino',
                                   **backend_options)
        else:
            from seg_ros.runtime import trt_backend

            if kind == 'engine':
                impl = trt_backend.TrtBackend.from_engine(Path(model), device=device)
            else:
                onnx_path = Path(model) if kind == 'onnx' else _export_cached(
                    str(model), weights, size, precision == 'fp16', cache, tensorrt=True,
                    trt_target=target_for_version(trt_backend.trt_version()))
                impl = trt_backend.TrtBackend.from_onnx(onnx_path, precision=precision,
                                                        cache_dir=cache, device=device,
                                                        resize_mode=resize_mode,
                                                        **backend_options)
        if size is not None and tuple(impl.input_size) != size:
            impl.close()
            raise SegRosError(f'{model} runs at {impl.input_size[0]}x{impl.input_size[1]}, '
                              f'input_size {size[0]}x{size[1]} was requested (re-export with '
                              f'`seg-ros export --size {size[0]}x{size[1]}`)')
        try:
            precision, precision_reason = _file_precision(impl, requested_precision,
                                                          precision, precision_reason)
        except SegRosError:
            impl.close()
            raise
        log.info('segmenter: %s on %s (%s, %s: %s), input %dx%d, %s', impl.meta.model,
                 impl.name, impl.device, precision, precision_reason, impl.input_size[0],
                 impl.input_size[1], resize_mode)
        seg = cls(impl, resize_mode=resize_mode)
        seg.precision, seg.precision_reason = precision, precision_reason
        return seg

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
        results = self._infer_and_restore(batch, geos, confidence)
        for r, image in zip(results, images):
            if color or overlay:
                col = _colorize.colorize(r.ids, self.lut)
                if overlay:
                    rgb = (cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if color_order == 'bgr'
                           else image)
                    r.overlay = _colorize.overlay(rgb, col, overlay_alpha)
                r.color = col if color else None
        t4 = time.perf_counter()
        infer_ms = results[0].timings['inference_ms'] if results else 0.0
        timings = {'preprocess_ms': (t1 - t0) * 1e3 / n, 'inference_ms': infer_ms,
                   'postprocess_ms': ((t4 - t1) * 1e3 / n) - infer_ms}
        for r in results:
            r.timings = dict(timings)
        return results

    def prepare_frame(self, image: np.ndarray, color_order: str = 'rgb') -> PreparedFrame:
        """Fit one frame into the network input now, for a later :meth:`segment_prepared`.

        A multi-camera node calls this as each camera's frame arrives (frames of any
        resolution share the one network input size), so the batch later only stacks them.

        Raises:
            SegRosError: wrong dtype, channel count, zero size, unknown colour order.
        """
        if color_order not in COLOR_ORDERS:
            raise SegRosError(f'color_order must be one of {COLOR_ORDERS}, '
                              f'got {color_order!r}')
        check_image(image)
        geo = self.geometry(image.shape[0], image.shape[1])
        h, w = self.input_size
        net = np.empty((h, w, 3), np.uint8)
        prepare(image, geo, color_order, self._fill, out=net)
        return PreparedFrame(net, geo)

    def segment_prepared(self, frames: Sequence[PreparedFrame],
                         confidence: bool = False) -> list[SegmentationResult]:
        """Segment frames from :meth:`prepare_frame` in as few backend calls as it allows.

        One call for up to the backend's ``max_batch`` frames (a dynamic-batch ONNX, a
        TensorRT profile, torch); a fixed batch-1 model runs them one after another. Ids (and
        confidence) come back at each frame's own resolution. Timings are per frame.

        Raises:
            SegRosError: closed segmenter, a model without confidence output.
        """
        backend = self.backend
        if backend is None:
            raise SegRosError('segmenter is closed')
        if confidence and not backend.has_confidence:
            raise SegRosError('this model file has no confidence output (re-export it '
                              'without --no-confidence)')
        out: list[SegmentationResult] = []
        for i in range(0, len(frames), backend.max_batch):
            chunk = frames[i:i + backend.max_batch]
            batch = np.stack([f.net for f in chunk])
            out += self._infer_and_restore(batch, [f.geometry for f in chunk], confidence)
        return out

    def _infer_and_restore(self, batch: np.ndarray, geos: Sequence[Geometry],
                           confidence: bool) -> list[SegmentationResult]:
        """One backend call; ids/confidence mapped back to each frame (timings per frame)."""
        assert self.backend is not None
        n = len(geos)
        t0 = time.perf_counter()
        ids_net, conf_net = self.backend.infer(batch, confidence)
        t1 = time.perf_counter()
        results = []
        for i, geo in enumerate(geos):
            ids = restore(ids_net[i], geo)
            conf = restore(conf_net[i], geo, cv2.INTER_LINEAR) if conf_net is not None else None
            results.append(SegmentationResult(ids, conf))
        t2 = time.perf_counter()
        timings = {'inference_ms': (t1 - t0) * 1e3 / n, 'postprocess_ms': (t2 - t1) * 1e3 / n}
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


def _file_precision(impl: Backend, requested: str, precision: str,
                    reason: str) -> tuple[str, str]:
    """Reconcile the precision with an int8 ONNX file (from ``seg-ros quantize``).

    ONNX Runtime and OpenVINO run a quantized file as it is: ``auto`` becomes int8, and an
    explicit precision that contradicts the file is refused rather than silently ignored.
    """
    file_precision = getattr(impl, 'file_precision', None)
    if impl.name not in ('onnxruntime', 'openvino') or file_precision is None:
        return precision, reason
    if file_precision == 'int8':
        if requested in ('auto', 'int8'):
            return 'int8', ('requested' if requested == 'int8'
                            else 'auto: the file is int8 (seg-ros quantize)')
        raise SegRosError(f'the model file is int8-quantized; precision {requested} cannot be '
                          'honoured (use auto or int8, or the fp32 export)')
    if precision == 'int8':
        raise SegRosError(f'the model file is {file_precision}: int8 on {impl.name} runs a '
                          'file from `seg-ros quantize`')
    return precision, reason


def _gpu_for_auto() -> bool:
    """Whether ``device: auto`` means CUDA, without importing torch where it is not installed.

    Every CUDA route but ONNX Runtime's needs torch (the TensorRT backend keeps its buffers in
    torch tensors), so on a robot-minimal install (no torch) the answer is ONNX Runtime's
    CUDA provider; importing torch only to learn there is no GPU costs start-up and shutdown
    time (seconds) on such a node.
    """
    if importlib.util.find_spec('torch') is None:
        return importlib.util.find_spec('onnxruntime') is not None and _ort_has_cuda()
    return cuda_available()


def _ort_has_cuda() -> bool:
    import onnxruntime as ort

    return 'CUDAExecutionProvider' in ort.get_available_providers()


EXPORT_SIDECAR_FORMAT = 'seg_ros.export/1'
STALE_TEMP_AGE_S = 3600.0  # leftovers of killed runs older than this are removed
_PID_TEMP = re.compile(r'^\..+\.pid(\d+)\.tmp')
_LEGACY_TEMP_DIR = re.compile(r'^seg_ros_[A-Za-z0-9_]{8}$')


def _export_sidecar(path: Path) -> Path:
    return path.with_name(path.name + '.json')


def cached_export_problem(path: Path) -> str | None:
    """Why a cached export must not be used (None when its size and sha256 match its sidecar).

    The sidecar is written after the export (which is atomic itself): an export without one
    was interrupted, one whose bytes differ was truncated or replaced.
    """
    side = _export_sidecar(path)
    if not path.is_file():
        return 'missing'
    try:
        record = json.loads(side.read_text())
        size, sha = int(record['size']), str(record['sha256'])
        if record.get('format') != EXPORT_SIDECAR_FORMAT:
            raise ValueError('not an export sidecar')
    except FileNotFoundError:
        return f'no sidecar {side.name} (interrupted export)'
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f'unreadable sidecar {side.name} ({exc})'
    if path.stat().st_size != size:
        return f'{path.stat().st_size} bytes, the export had {size} (truncated?)'
    if _file_sha256(path) != sha:
        return 'content differs from the export (sha256)'
    return None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def clean_stale_temps(folder: Path, max_age_s: float = STALE_TEMP_AGE_S) -> list[Path]:
    """Remove what killed runs left in an export cache folder.

    Removed: pid-tagged temp files (``.NAME.pid<PID>.tmp...``) of processes that are gone;
    other hidden ``*.tmp`` files and ``tmp*`` folders (an interrupted atomic write or export)
    older than ``max_age_s``, so that a write in progress in another process is left alone.

    Returns:
        The removed paths.
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for entry in folder.iterdir():
        try:
            m = _PID_TEMP.match(entry.name)
            old = now - entry.lstat().st_mtime > max_age_s
            if m:
                stale = not _pid_alive(int(m.group(1))) or old
            else:
                stale = old and ((entry.name.startswith('.') and '.tmp' in entry.name)
                                 or (entry.is_dir() and entry.name.startswith('tmp')))
            if not stale:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError as exc:  # another process cleaning at the same time, permissions
            log.debug('could not remove %s: %s', entry, exc)
    if removed:
        log.info('removed %d leftover temp file(s) of killed runs in %s', len(removed), folder)
    return removed


def clean_legacy_temp_exports(max_age_s: float = STALE_TEMP_AGE_S) -> list[Path]:
    """Remove the ``seg_ros_*`` temp exports older versions left per bare-name run.

    Only folders named like ``tempfile.mkdtemp(prefix='seg_ros_')``, owned by this user,
    older than ``max_age_s`` and holding nothing but ``.onnx`` files are removed.
    """
    removed: list[Path] = []
    tmp = Path(tempfile.gettempdir())
    now = time.time()
    try:
        entries = list(tmp.iterdir())
    except OSError:
        return removed
    for entry in entries:
        try:
            if not _LEGACY_TEMP_DIR.match(entry.name) or entry.is_symlink() or \
                    not entry.is_dir():
                continue
            st = entry.stat()
            if st.st_uid != os.getuid() or now - st.st_mtime <= max_age_s:
                continue
            files = list(entry.iterdir())
            if not files or not all(f.is_file() and not f.is_symlink()
                                    and f.suffix == '.onnx' for f in files):
                continue
            shutil.rmtree(entry)
            removed.append(entry)
        except OSError as exc:
            log.debug('could not remove %s: %s', entry, exc)
    return removed


def _export_cached(model: str, weights: str | os.PathLike[str] | None,
                   size: tuple[int, int] | None, fp16: bool, cache: Path,
                   tensorrt: bool = False, trt_target: str = '10') -> Path:
    """Export a checkpoint / model name to ONNX once, reusing the cached export afterwards.

    ``trt_target`` is the TensorRT parser the graph is made for (``10`` is also what ONNX
    Runtime and OpenVINO run; ``8.5``/``8.6`` on JetPack 5.1/6.0).

    The cache name hashes the checkpoint bytes (for a bare model name: the name and its class
    count), size, precision and :data:`EXPORT_VERSION`. Each export gets a sidecar with its
    size and sha256; a cached file that does not match it (truncated, half-written,
    replaced) is exported again. Leftovers of killed runs are removed first.

    Raises:
        SegRosError: a bare model name (random weights) for TensorRT: an engine of random
            weights is minutes of building for nothing.
    """
    from seg_ros.runtime.export import export_onnx, load_model_and_meta

    ckpt = Path(weights) if weights else (Path(model) if model_kind(model) == 'checkpoint'
                                          else None)
    if ckpt is None and tensorrt:
        raise SegRosError(f'{model!r} is a bare model name without weights: TensorRT would '
                          f'build an engine of random weights; give a checkpoint (weights:=, '
                          f'a .pt) or an exported .onnx')
    net, meta = load_model_and_meta(model, str(weights) if weights else None, size)
    h, w = meta.input_size
    if ckpt is None:
        ident, stem = f'name:{model}|classes:{meta.num_classes}', f'{meta.model}-untrained'
    else:
        ident, stem = _file_sha256(ckpt), ckpt.stem
    digest = hashlib.sha256(
        f'{ident}|{h}x{w}|{fp16}|{EXPORT_VERSION}|trt{trt_target}'.encode()).hexdigest()[:16]
    trt_tag = '' if trt_target == '10' else f'-trt{trt_target}'
    out = cache / 'onnx' / f'{stem}-{h}x{w}{"-fp16" if fp16 else ""}{trt_tag}-{digest}.onnx'
    clean_stale_temps(out.parent)
    clean_legacy_temp_exports()
    problem = cached_export_problem(out)
    if problem is None:
        log.info('using cached export %s', out)
        return out
    if problem != 'missing':
        log.warning('cached export %s is unusable (%s); exporting again', out, problem)
    if ckpt is None:
        log.warning('%s has no weights: exporting its untrained network (cached once)', model)
    log.info('exporting %s to %s (once; cached)', ckpt or model, out)
    export_onnx(net, meta, out, size=(h, w), fp16=fp16, dynamic_batch=True,
                trt_version=trt_target)
    atomic_write_text(_export_sidecar(out), json.dumps({
        'format': EXPORT_SIDECAR_FORMAT, 'size': out.stat().st_size,
        'sha256': _file_sha256(out), 'source': str(ckpt or model),
        'export_version': EXPORT_VERSION}))
    return out
