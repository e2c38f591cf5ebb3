"""TensorRT backend and engine builder: the ONLY module that calls the TensorRT API.

Written against the TensorRT 8.5, 8.6 and 10.x Python APIs (named-tensor API:
``num_io_tensors``, ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``, which
all of them have) and type-checked with mypy against ``tensorrt-stubs``
(``python -m seg_ros.runtime.typecheck``). Branches for older or newer APIs are guarded by
explicit version checks (:func:`trt_version`). IO goes through torch CUDA tensors on a
dedicated CUDA stream (no pycuda). The cache key, sidecar, timing-cache and calibration logic
live in TensorRT-free modules (:mod:`seg_ros.runtime.engine_cache`,
:mod:`seg_ros.runtime.calibration`) that are tested on machines without a GPU; this file itself
has only been type-checked (see docs/runtime.md).

Precision:
  - ``fp32``: plain build, TF32 off (``allow_tf32`` turns it back on).
  - ``fp16``: on TensorRT >= 10.12 (where ``BuilderFlag.FP16`` is deprecated) a strongly typed
    network from an fp16 ONNX (``seg-ros export --fp16``); before, the FP16 builder flag.
  - ``int8``: implicit quantization with an entropy calibrator over real frames and a
    calibration cache (``BuilderFlag.INT8``; deprecated since 10.1, gone in 11).

Devices: ``cuda`` / ``auto`` mean the current CUDA device, ``cuda:N`` device N; engines are
built and run on that device (``torch.cuda.device`` around the build: TensorRT uses the
current CUDA device).
"""
from __future__ import annotations

from dataclasses import dataclass
import logging
import os
from pathlib import Path
import shlex
import time
from typing import Any

import numpy as np
import torch

from seg_ros.errors import SegRosError
from seg_ros.metadata import ModelMeta
from seg_ros.runtime.backends import Backend, read_onnx_meta, resolve_cuda_device
from seg_ros.runtime.calibration import CalibrationData, CalibrationRun
from seg_ros.runtime.engine_cache import (
    EngineKey,
    GpuInfo,
    Sidecar,
    cached_engine_path,
    calibration_batch,
    default_cache_dir,
    file_sha256,
    foreign_reason,
    make_engine_key,
    onnx_input_shape,
    onnx_precision,
    profile_shapes,
    read_sidecar,
    save_timing_cache,
    stale_reason,
    timing_cache_path,
    write_engine,
)
from seg_ros.runtime.trt_rules import check_for_installed_trt

try:
    import tensorrt as trt

    # The tensorrt-stubs package installs a bare `tensorrt/` folder of .pyi files, which
    # imports as an empty namespace package: only a real install has Builder.
    _TRT_OK = hasattr(trt, 'Builder')
except ImportError:
    _TRT_OK = False

log = logging.getLogger(__name__)

STRONGLY_TYPED_FP16_FROM = (10, 12)   # BuilderFlag.FP16 deprecated from here on
DEVICE_MEMORY_V2_FROM = (10, 1)       # ICudaEngine.device_memory_size_v2 (weight streaming)


def available() -> bool:
    """True when a real TensorRT Python package is importable."""
    return _TRT_OK


def _require_trt() -> None:
    if not _TRT_OK:
        raise SegRosError('TensorRT is not installed (pip/apt package `tensorrt`, or JetPack '
                          'on Jetson); use backend onnxruntime or torch')


def trt_version() -> tuple[int, int, int]:
    """Installed TensorRT version as (major, minor, patch)."""
    _require_trt()
    parts = [int(p) for p in trt.__version__.split('.')[:3] if p.isdigit()]
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


def gpu_info(device: str = 'cuda') -> GpuInfo:
    """Name, compute capability, SM count and memory of ``device`` (``cuda``, ``cuda:N``)."""
    dev = resolve_cuda_device(device)
    props = torch.cuda.get_device_properties(dev)
    return GpuInfo(name=str(props.name), compute_capability=f'{props.major}.{props.minor}',
                   sm_count=int(props.multi_processor_count),
                   total_memory_mb=int(props.total_memory) >> 20)


def gpu_identity(device: str = 'cuda') -> tuple[str, str]:
    """(GPU name, compute capability ``major.minor``) of ``device``."""
    info = gpu_info(device)
    return info.name, info.compute_capability


def build_engine_command(onnx_path: str | os.PathLike[str], precision: str,
                         cache_dir: str | os.PathLike[str] | None = None, max_batch: int = 1,
                         device: str = 'cuda', calib: str | os.PathLike[str] | None = None,
                         calib_topic: str | None = None, resize_mode: str = 'stretch',
                         opt_batch: int | None = None, allow_tf32: bool = False,
                         out: str | os.PathLike[str] | None = None) -> str:
    """The ``seg-ros build-engine ...`` line that builds the engine a loader looks for."""
    args = ['seg-ros', 'build-engine', str(onnx_path), '--precision', precision]
    if out is not None:
        args += ['--out', str(out)]
    elif cache_dir is not None:
        args += ['--cache-dir', str(cache_dir)]
    if max_batch != 1:
        args += ['--max-batch', str(max_batch)]
    if opt_batch is not None:
        args += ['--opt-batch', str(opt_batch)]
    if device not in ('cuda', 'auto'):
        args += ['--device', device]
    if allow_tf32:
        args.append('--allow-tf32')
    if precision == 'int8':
        args += ['--calib', str(calib) if calib else 'DIR_OR_BAG']
        if calib_topic:
            args += ['--calib-topic', calib_topic]
        if resize_mode != 'stretch':
            args += ['--resize-mode', resize_mode]
    return ' '.join(shlex.quote(a) for a in args)


# ---------------------------------------------------------------------------- TensorRT glue
def _make_logger() -> trt.ILogger:
    """A TensorRT logger that forwards to Python logging."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                log.error('TensorRT: %s', msg)
            elif severity == trt.ILogger.WARNING:
                log.warning('TensorRT: %s', msg)
            elif severity == trt.ILogger.INFO:
                log.debug('TensorRT: %s', msg)

    return _Logger()


_LOGGER: trt.ILogger | None = None


def _logger() -> trt.ILogger:
    # One logger per process: TensorRT keeps a reference to the first one it sees.
    global _LOGGER
    if _LOGGER is None:
        _LOGGER = _make_logger()
    return _LOGGER


def _make_progress_monitor() -> trt.IProgressMonitor:
    """Builder progress to the log (TensorRT >= 10 only): builds take minutes on a Jetson."""

    class _Progress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._steps: dict[str, int] = {}
            self._last = 0.0

        def phase_start(self, phase_name: str, parent_phase: str, num_steps: int) -> None:
            self._steps[phase_name] = num_steps
            if not parent_phase:
                log.info('build: %s (%d steps)', phase_name, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            now = time.monotonic()
            if now - self._last > 5.0:  # at most one line every 5 s
                self._last = now
                log.info('build: %s %d/%d', phase_name, step + 1,
                         self._steps.get(phase_name, 0))
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            self._steps.pop(phase_name, None)

    return _Progress()


def _make_calibrator(run: CalibrationRun) -> trt.IInt8EntropyCalibrator2:
    """TensorRT's entropy calibrator, each callback handed to :class:`CalibrationRun`."""

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            return run.get_batch_size()

        def get_batch(self, names: list[str]) -> list[int]:
            return run.get_batch(names)

        def read_calibration_cache(self) -> bytes | None:
            return run.read_calibration_cache()

        def write_calibration_cache(self, cache: Any) -> None:
            run.write_calibration_cache(cache)

    return _Calibrator()


def _device_uploader(data: CalibrationData, device: torch.device) -> Any:
    """``upload(batch) -> address``: copies a calibration batch into one CUDA buffer."""
    buf = torch.empty((data.batch_size, *data.input_size, 3), dtype=torch.uint8, device=device)

    def upload(batch: np.ndarray) -> int:
        buf.copy_(torch.from_numpy(batch))
        torch.cuda.synchronize(device)  # TensorRT reads it on its own stream
        return int(buf.data_ptr())

    upload.buffer = buf  # type: ignore[attr-defined]  # keeps the buffer alive with the run
    return upload


_TORCH_DTYPES: dict[str, torch.dtype] = {
    'UINT8': torch.uint8, 'INT8': torch.int8, 'INT32': torch.int32, 'INT64': torch.int64,
    'FLOAT': torch.float32, 'HALF': torch.float16, 'BF16': torch.bfloat16, 'BOOL': torch.bool,
}


def _torch_dtype(dtype: trt.DataType) -> torch.dtype:
    name = dtype.name
    if name not in _TORCH_DTYPES:
        raise SegRosError(f'TensorRT tensor type {name} is not supported for IO')
    return _TORCH_DTYPES[name]


def _dims(dims: trt.Dims) -> tuple[int, ...]:
    return tuple(int(dims[i]) for i in range(len(dims)))


@dataclass
class BuildResult:
    """What a build gives back: the engine, the timing cache to keep, calibration facts."""

    engine: bytes
    timing_cache: bytes | None = None
    calib_frames: int = 0
    calib_cache_used: bool = False


def build_engine(onnx_path: Path, key: EngineKey, calib: CalibrationData | None = None,
                 calib_cache: Path | None = None, timing_cache: Path | None = None,
                 workspace_mb: int = 2048, device: str = 'cuda') -> BuildResult:
    """Parse an exported ONNX file and build a serialized engine for ``key`` on ``device``.

    Nothing is written here: the caller writes the engine first and then (best effort) the
    returned timing cache. An int8 calibration that failed while reading frames raises after
    the build, with the original exception as the cause, and leaves no calibration cache.

    Raises:
        SegRosError: parse or build failure, precision not possible with this TensorRT,
            failed calibration.
    """
    _require_trt()
    dev = resolve_cuda_device(device)
    with torch.cuda.device(dev):  # TensorRT builds on the current CUDA device
        return _build_engine(onnx_path, key, calib, calib_cache, timing_cache, workspace_mb,
                             dev)


def _build_engine(onnx_path: Path, key: EngineKey, calib: CalibrationData | None,
                  calib_cache: Path | None, timing_cache: Path | None, workspace_mb: int,
                  dev: torch.device) -> BuildResult:
    version = trt_version()
    logger = _logger()
    builder = trt.Builder(logger)
    flags = 0
    if version[0] < 10:
        # TensorRT 8.x: explicit-batch networks must be requested (the default in 10.x).
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    onnx_fp16 = onnx_precision(onnx_path) == 'fp16'
    strongly_typed = False
    if key.precision == 'fp16' and version[:2] >= STRONGLY_TYPED_FP16_FROM:
        if onnx_fp16:
            strongly_typed = True
        elif version[0] >= 11 or not hasattr(trt.BuilderFlag, 'FP16'):
            raise SegRosError(f'TensorRT {trt.__version__} builds fp16 only from an fp16 ONNX '
                              f'(strongly typed): re-export with `seg-ros export --fp16`')
        else:
            log.warning('fp32 ONNX with the deprecated FP16 builder flag on TensorRT %s; '
                        'export with --fp16 for a strongly typed fp16 engine', trt.__version__)
    elif key.precision == 'fp16' and onnx_fp16 and version[0] >= 10:
        strongly_typed = True  # 10.0-10.11 support strong typing too; types come from ONNX
    if key.precision == 'int8' and onnx_fp16:
        raise SegRosError('int8 calibration needs the fp32 ONNX export (without --fp16)')
    if strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    log.info('parsing %s', onnx_path)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise SegRosError(f'TensorRT could not parse {onnx_path}: {"; ".join(errors[:3])}')

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if version[0] >= 10:
        config.progress_monitor = _make_progress_monitor()
    if key.precision == 'fp32' and not key.tf32:
        # TF32 is on by default in every TensorRT since 7.1: without this "fp32" convolutions
        # round their inputs to 10-bit mantissas on Ampere and later (Orin included).
        config.clear_flag(trt.BuilderFlag.TF32)
    if key.precision == 'fp16' and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)

    inp = network.get_input(0)
    if inp.name != 'images' or len(inp.shape) != 4:
        raise SegRosError(f'{onnx_path}: expected input "images" (N, H, W, 3), got '
                          f'{inp.name} {_dims(inp.shape)}')
    if inp.dtype != trt.DataType.UINT8:
        raise SegRosError(f'{onnx_path}: input "images" is {inp.dtype.name}, a `seg-ros export` '
                          f'file has UINT8')
    dynamic = inp.shape[0] == -1
    run: CalibrationRun | None = None
    if key.precision == 'int8':
        if version[0] >= 11 or not hasattr(trt.BuilderFlag, 'INT8'):
            raise SegRosError(f'TensorRT {trt.__version__} has no implicit int8 calibration; '
                              f'quantize the ONNX explicitly (Q/DQ) instead')
        if calib is None:
            raise SegRosError('int8 needs calibration frames (--calib DIR_OR_BAG)')
        if not dynamic and calib.batch_size != int(inp.shape[0]):
            # TensorRT would read inp.shape[0] frames per call from a bigger buffer.
            raise SegRosError(f'calibration batch {calib.batch_size} != the network batch '
                              f'{int(inp.shape[0])}')
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)  # layers that stay out of int8 may use fp16
        run = CalibrationRun(calib, calib_cache or Path(str(onnx_path) + '.calib'),
                             _device_uploader(calib, dev))
        config.int8_calibrator = _make_calibrator(run)

    # Input profile: a dynamic batch axis needs an optimisation profile (also for calibration).
    if dynamic:
        lo, opt, hi = profile_shapes(key.input_shape, key.min_batch, key.max_batch,
                                     key.opt_batch or None)
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, trt.Dims(list(lo)), trt.Dims(list(opt)), trt.Dims(list(hi)))
        config.add_optimization_profile(profile)
        if calib is not None and key.precision == 'int8':
            calib_profile = builder.create_optimization_profile()
            one = trt.Dims([calib.batch_size, *key.input_shape])
            calib_profile.set_shape(inp.name, one, one, one)
            if not config.set_calibration_profile(calib_profile):
                raise SegRosError('TensorRT refused the calibration profile')

    # Timing cache: per GPU and TensorRT version; makes rebuilds much faster.
    cache_obj: trt.ITimingCache | None = None
    if timing_cache is not None:
        try:
            blob = timing_cache.read_bytes() if timing_cache.is_file() else b''
        except OSError as exc:
            log.warning('timing cache %s unreadable (%s); starting fresh', timing_cache, exc)
            blob = b''
        cache_obj = config.create_timing_cache(blob)
        if not config.set_timing_cache(cache_obj, False):
            log.warning('timing cache %s does not match this GPU/TensorRT; starting fresh',
                        timing_cache)
            cache_obj = config.create_timing_cache(b'')
            config.set_timing_cache(cache_obj, True)

    log.info('building %s engine for %s (sm %s, %d SMs) on %s, TensorRT %s: this can take '
             'minutes', key.precision, key.gpu_name, key.compute_capability, key.sm_count, dev,
             trt.__version__)
    t0 = time.monotonic()
    serialized = builder.build_serialized_network(network, config)
    if run is not None:
        run.raise_if_failed()  # before a failed build's message: it is the cause
    if serialized is None:
        raise SegRosError('TensorRT engine build failed (see the TensorRT errors above)')
    log.info('engine built in %.0f s', time.monotonic() - t0)
    timing = None
    if timing_cache is not None:
        timing = bytes(config.get_timing_cache().serialize())
    return BuildResult(engine=bytes(serialized), timing_cache=timing,
                       calib_frames=run.frames_consumed if run else 0,
                       calib_cache_used=bool(run and run.used_cache))


def build_or_load(onnx_path: Path, precision: str = 'fp16', cache_dir: Path | None = None,
                  out: Path | None = None, calib: str | os.PathLike[str] | None = None,
                  calib_topic: str | None = None, calib_frames: int = 256,
                  max_batch: int = 1, workspace_mb: int = 2048, rebuild: bool = False,
                  device: str = 'cuda', resize_mode: str = 'stretch',
                  opt_batch: int | None = None, allow_tf32: bool = False,
                  calib_batch: int | None = None, build: bool = True) -> Path:
    """Return a valid engine for ``onnx_path`` on this GPU, building it if needed.

    A cached (or ``out``) engine is reused only when its sidecar key matches exactly; any
    difference (ONNX content, TensorRT version, GPU, precision, shape, calibration data) or a
    damaged file is logged with the reason and the engine is rebuilt.

    Args:
        onnx_path: ONNX file from ``seg-ros export``.
        precision: ``fp32``, ``fp16`` or ``int8``.
        cache_dir: engine cache (engines, timing and calibration caches); default
            :func:`~seg_ros.runtime.engine_cache.default_cache_dir`, never the ONNX folder.
        out: engine file instead of the cache.
        calib: int8 calibration frames (image folder or rosbag2).
        calib_topic: image topic of a calibration bag.
        calib_frames: frames used for calibration.
        max_batch: largest batch (dynamic-batch ONNX).
        workspace_mb: builder workspace limit.
        rebuild: build even when a valid engine exists.
        device: ``cuda``, ``auto`` (the current device) or ``cuda:N``.
        resize_mode: how calibration frames are fitted, as at run time.
        opt_batch: batch the profile is tuned for (default ``max_batch``).
        allow_tf32: let fp32 engines use TF32.
        calib_batch: calibration batch of a dynamic-batch ONNX (default 8; a static ONNX
            calibrates with its own batch).
        build: False turns a missing or stale engine into an error naming the
            ``seg-ros build-engine`` command instead of a build.
    """
    _require_trt()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise SegRosError(f'ONNX file not found: {onnx_path}')
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    dev = resolve_cuda_device(device)
    meta = read_onnx_meta(onnx_path)
    gpu = gpu_info(str(dev))
    calib_data = None
    if precision == 'int8':
        if calib is None:
            raise SegRosError('int8 needs calibration frames (--calib DIR_OR_BAG)')
        static_batch, _frame = onnx_input_shape(onnx_path)
        calib_data = CalibrationData(calib, tuple(meta.input_size),  # type: ignore[arg-type]
                                     num_frames=calib_frames,
                                     batch_size=calibration_batch(static_batch, calib_batch),
                                     topic=calib_topic, resize_mode=resize_mode,
                                     mean=tuple(meta.mean))  # type: ignore[arg-type]
    key = make_engine_key(onnx_path, precision, trt.__version__, gpu, max_batch=max_batch,
                          calib_id=calib_data.identity() if calib_data else '',
                          opt_batch=opt_batch, tf32=allow_tf32)
    path = Path(out) if out else cached_engine_path(cache_dir, onnx_path, key)
    reason = 'rebuild requested' if rebuild else stale_reason(path, key)
    if reason is None:
        log.info('engine cache hit: %s', path)
        return path
    if not build:
        command = build_engine_command(onnx_path, precision, cache_dir, key.max_batch, device,
                                       calib, calib_topic, resize_mode, opt_batch, allow_tf32,
                                       out)
        raise SegRosError(f'no usable {precision} engine for {onnx_path.name} ({reason}) and '
                          f'build_engine_on_start is false: build it with `{command}`')
    if path.exists():
        log.warning('not using %s: %s; rebuilding', path, reason)
    # The parser rules of this TensorRT, before minutes of parsing (one line naming the node
    # and the `seg-ros export --trt-version` that fixes it).
    check_for_installed_trt(onnx_path, trt.__version__)
    if calib_data is not None:
        calib_data.check()  # topic, decoding, first frame: now, not after minutes of parsing
    t0 = time.monotonic()
    calib_cache = calib_data.cache_path(cache_dir, key.onnx_sha256) if calib_data else None
    timing = timing_cache_path(cache_dir, gpu, trt.__version__)
    result = build_engine(onnx_path, key, calib_data, calib_cache, timing, workspace_mb,
                          str(dev))
    extra: dict[str, Any] = {}
    if calib_data is not None:
        extra = {'calib_frames_consumed': result.calib_frames,
                 'calib_cache_used': result.calib_cache_used,
                 'calib_batch': calib_data.batch_size, 'resize_mode': resize_mode}
    write_engine(path, result.engine, Sidecar(key=key, meta=meta, engine_sha256='',
                                              onnx_path=str(onnx_path.resolve()),
                                              build_seconds=time.monotonic() - t0,
                                              extra=extra))
    log.info('wrote %s', path)
    if result.timing_cache is not None:  # after the engine, and never at its expense
        save_timing_cache(timing, result.timing_cache)
    return path


# ---------------------------------------------------------------------------- runtime
class TrtBackend(Backend):
    """A TensorRT engine run through torch CUDA tensors on its own stream.

    Build with :meth:`from_onnx` (cached build) or :meth:`from_engine` (a built engine with
    its sidecar).
    """

    name = 'tensorrt'

    def __init__(self, engine_path: Path, sidecar: Sidecar, device: str = 'cuda') -> None:
        _require_trt()
        if device == 'cpu':
            raise SegRosError('the tensorrt backend runs on a CUDA device, not cpu')
        self.meta: ModelMeta = sidecar.meta
        self._dev = resolve_cuda_device(device)  # `cuda` has no index: set_device needs one
        torch.cuda.set_device(self._dev)
        self.device = f'{self._dev} ({torch.cuda.get_device_name(self._dev)})'
        free_before = torch.cuda.mem_get_info(self._dev)[0]
        self._runtime = trt.Runtime(_logger())
        engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if engine is None:
            raise SegRosError(f'{engine_path}: TensorRT could not deserialize the engine')
        self._engine = engine
        self._context = engine.create_execution_context()
        if self._context is None:
            raise SegRosError(f'{engine_path}: could not create an execution context (GPU '
                              f'memory?)')
        # TensorRT allocates weights and activations itself, outside torch's allocator.
        self.trt_activation_mb = self._engine_device_memory(engine) / 2**20
        self.trt_load_mb = max(0, free_before - torch.cuda.mem_get_info(self._dev)[0]) / 2**20
        self._stream = torch.cuda.Stream(self._dev)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or 'ids' not in self._outputs:
            raise SegRosError(f'{engine_path}: expected one input and an "ids" output, got '
                              f'inputs {inputs}, outputs {self._outputs}')
        self._input = inputs[0]
        self.has_confidence = 'confidence' in self._outputs
        shape = _dims(engine.get_tensor_shape(self._input))
        in_dtype = engine.get_tensor_dtype(self._input)
        if len(shape) != 4 or shape[3] != 3 or in_dtype != trt.DataType.UINT8:
            raise SegRosError(f'{engine_path}: input {self._input!r} is {in_dtype.name} '
                              f'{shape}; seg_ros engines take UINT8 (N, H, W, 3) frames')
        self.input_size = (int(shape[1]), int(shape[2]))
        if shape[0] == -1:
            lo, _opt, hi = engine.get_tensor_profile_shape(self._input, 0)
            self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
        else:
            self.min_batch = self.max_batch = int(shape[0])
        self._dynamic = shape[0] == -1
        self._in_dtype = _torch_dtype(in_dtype)
        h, w = self.input_size
        # Device buffers sized for the largest batch; pinned host buffers for async copies.
        self._d_in = torch.empty((self.max_batch, h, w, 3), dtype=torch.uint8, device=self._dev)
        self._h_in = torch.empty((self.max_batch, h, w, 3), dtype=torch.uint8).pin_memory()
        self._d_out: dict[str, torch.Tensor] = {}
        self._h_out: dict[str, torch.Tensor] = {}
        for name in self._outputs:
            dtype = _torch_dtype(engine.get_tensor_dtype(name))
            self._d_out[name] = torch.empty((self.max_batch, h, w), dtype=dtype,
                                            device=self._dev)
            self._h_out[name] = torch.empty((self.max_batch, h, w),
                                            dtype=torch.uint8).pin_memory()
        self._bound_batch = -1

    @staticmethod
    def _engine_device_memory(engine: trt.ICudaEngine) -> int:
        """Activation memory of one execution context, in bytes."""
        # v2 (weight-streaming aware) exists from 10.1, where v1 is deprecated; 8.5-10.0
        # have only v1. hasattr as well: the exact release is from the bindings' docs.
        if trt_version()[:2] >= DEVICE_MEMORY_V2_FROM and hasattr(engine,
                                                                  'device_memory_size_v2'):
            return int(engine.device_memory_size_v2)
        return int(engine.device_memory_size)

    @classmethod
    def from_engine(cls, engine_path: Path, device: str = 'cuda',
                    expected: EngineKey | None = None) -> TrtBackend:
        """Load a built engine after checking it belongs to this GPU and TensorRT.

        A foreign engine (other TensorRT version or GPU) is rebuilt from the ONNX file named
        in its sidecar when that file still exists unchanged; otherwise it is an error.
        """
        _require_trt()
        if device == 'cpu':
            raise SegRosError('the tensorrt backend runs on a CUDA device, not cpu')
        engine_path = Path(engine_path)
        side = read_sidecar(engine_path)
        gpu = gpu_info(device)
        foreign = foreign_reason(side, trt.__version__, gpu)
        if foreign:
            onnx_path = Path(side.onnx_path) if side.onnx_path else None
            if onnx_path and onnx_path.is_file() and \
                    file_sha256(onnx_path) == side.key.onnx_sha256 and \
                    side.key.precision != 'int8':
                log.warning('%s: %s; rebuilding from %s', engine_path, foreign, onnx_path)
                build_or_load(onnx_path, side.key.precision, out=engine_path,
                              max_batch=side.key.max_batch, device=device,
                              opt_batch=side.key.opt_batch or None,
                              allow_tf32=side.key.tf32)
                side = read_sidecar(engine_path)
            else:
                raise SegRosError(f'{engine_path}: {foreign}; rebuild it here with `seg-ros '
                                  f'build-engine MODEL.onnx`')
        reason = stale_reason(engine_path, expected or side.key)
        if reason:
            raise SegRosError(f'{engine_path}: {reason}')
        return cls(engine_path, side, device)

    @classmethod
    def from_onnx(cls, onnx_path: Path, precision: str = 'fp16', cache_dir: Path | None = None,
                  device: str = 'cuda', max_batch: int = 1, rebuild: bool = False,
                  calib: str | None = None, calib_topic: str | None = None,
                  calib_frames: int = 256, resize_mode: str = 'stretch',
                  opt_batch: int | None = None, allow_tf32: bool = False,
                  calib_batch: int | None = None, workspace_mb: int = 2048,
                  build: bool = True) -> TrtBackend:
        """Build (or reuse from the cache) the engine for ``onnx_path`` and load it.

        ``build=False`` (the node's ``build_engine_on_start:=false``) never builds: a missing
        or stale engine is a one-line error naming the ``seg-ros build-engine`` command.
        ``resize_mode`` is the deployment's, so int8 calibration sees frames fitted the same
        way. The other arguments are those of :func:`build_or_load`.
        """
        _require_trt()
        if device == 'cpu':
            raise SegRosError('the tensorrt backend runs on a CUDA device, not cpu')
        path = build_or_load(Path(onnx_path), precision, cache_dir, calib=calib,
                             calib_topic=calib_topic, calib_frames=calib_frames,
                             max_batch=max_batch, workspace_mb=workspace_mb, rebuild=rebuild,
                             device=device, resize_mode=resize_mode, opt_batch=opt_batch,
                             allow_tf32=allow_tf32, calib_batch=calib_batch, build=build)
        return cls.from_engine(path, device)

    def _bind(self, n: int) -> None:
        if n == self._bound_batch:
            return
        h, w = self.input_size
        if self._dynamic and not self._context.set_input_shape(self._input, (n, h, w, 3)):
            raise SegRosError(f'batch {n} outside the engine profile '
                              f'{self.min_batch}..{self.max_batch}')
        self._context.set_tensor_address(self._input, int(self._d_in.data_ptr()))
        for name, buf in self._d_out.items():
            self._context.set_tensor_address(name, int(buf.data_ptr()))
        self._bound_batch = n

    def infer(self, batch: np.ndarray,
              confidence: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        if not isinstance(batch, np.ndarray) or batch.dtype != np.uint8:
            # The engine reads raw bytes: a float or int batch would be garbage, not an error.
            got = batch.dtype if isinstance(batch, np.ndarray) else type(batch).__name__
            raise SegRosError(f'tensorrt: the engine input is uint8 (N, H, W, 3) RGB, got '
                              f'{got}')
        self._check_batch(batch)
        n = int(batch.shape[0])
        if n < self.min_batch:
            raise SegRosError(f'engine needs batches of {self.min_batch}..{self.max_batch}')
        if confidence and not self.has_confidence:
            raise SegRosError('this engine has no confidence output')
        self._h_in[:n].numpy()[...] = batch
        with torch.cuda.stream(self._stream):
            self._d_in[:n].copy_(self._h_in[:n], non_blocking=True)
            self._bind(n)
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise SegRosError('TensorRT execution failed')
            wanted = ['ids', 'confidence'] if confidence else ['ids']
            for name in wanted:
                out = self._d_out[name][:n]
                if out.dtype != torch.uint8:  # engines that kept int32 / float outputs
                    out = out.to(torch.uint8)
                self._h_out[name][:n].copy_(out, non_blocking=True)
        self._stream.synchronize()
        ids = self._h_out['ids'][:n].numpy().copy()
        conf = self._h_out['confidence'][:n].numpy().copy() if confidence else None
        return ids, conf

    def close(self) -> None:
        # Context before engine before runtime: TensorRT's required destruction order.
        self._stream.synchronize()
        self._context = None  # type: ignore[assignment]
        self._engine = None  # type: ignore[assignment]
        self._runtime = None  # type: ignore[assignment]
        self._d_in = self._h_in = None  # type: ignore[assignment]
        self._d_out.clear()
        self._h_out.clear()
        torch.cuda.empty_cache()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d['tensorrt'] = trt.__version__
        # TensorRT's own allocations (not in torch.cuda.max_memory_allocated): the context's
        # activation memory from the engine, and the measured drop of free memory at load.
        d['tensorrt_activation_mb'] = round(self.trt_activation_mb, 1)
        d['tensorrt_memory_mb'] = round(max(self.trt_load_mb, self.trt_activation_mb), 1)
        return d
