"""TensorRT engine cache: keys, sidecars and stale / foreign engine detection (no TensorRT here).

A serialized TensorRT engine only runs on the TensorRT version and GPU model it was built for,
and it silently encodes the ONNX graph, precision and input shape. So every engine gets a
sidecar ``<engine>.json`` holding

- ``key``: ONNX sha256, TensorRT version, GPU name, compute capability, SM count and total
  memory (Jetson Orin modules share name and compute capability), precision, TF32, input
  shape, batch range and optimisation batch, and the calibration data identity for int8;
- ``engine_sha256``: to detect a truncated or replaced engine file;
- ``meta``: the :class:`~seg_ros.metadata.ModelMeta`, so the engine alone is enough to run.

The cache file name carries a digest of the key; a lookup that finds an engine whose sidecar
does not match (or no sidecar) reports why, and the caller rebuilds it. Nothing here imports
TensorRT, so all of it is tested on machines without a GPU.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, NamedTuple

from seg_ros.errors import SegRosError
from seg_ros.fileio import atomic_write_bytes
from seg_ros.metadata import ModelMeta

SIDECAR_FORMAT = 'seg_ros.engine/1'

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """Where exported ONNX files and TensorRT engines are cached (``$SEG_ROS_CACHE``).

    Never next to the ONNX file: on a robot that is an installed, read-only ``share/``.
    """
    env = os.environ.get('SEG_ROS_CACHE')
    if env:
        return Path(env)
    return Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'seg_ros'


class GpuInfo(NamedTuple):
    """What identifies a GPU for an engine (``torch.cuda.get_device_properties``).

    Jetson Orin modules (NX 8 GB / 16 GB, AGX 32 / 64 GB) report the same name and compute
    capability 8.7; the SM count and the memory tell them apart.
    """

    name: str
    compute_capability: str
    sm_count: int = 0
    total_memory_mb: int = 0


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes (streamed)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized engine depends on.

    Attributes:
        onnx_sha256: sha256 of the ONNX file the engine was built from.
        trt_version: TensorRT version string (``trt.__version__``).
        gpu_name: CUDA device name (``torch.cuda.get_device_name``).
        compute_capability: ``major.minor`` (e.g. ``8.7`` for Orin).
        precision: ``fp32``, ``fp16`` or ``int8``.
        input_shape: (H, W, 3) of one frame (the batch axis is in the batch range).
        min_batch: smallest batch of the optimisation profile.
        max_batch: largest batch of the optimisation profile.
        calib_id: identity of the int8 calibration data ('' otherwise).
        sm_count: streaming multiprocessors of the GPU.
        total_memory_mb: GPU memory (MiB; on a Jetson the shared system memory).
        opt_batch: batch the optimisation profile is tuned for (``max_batch`` by default).
        tf32: TF32 allowed for float32 layers (off by default: ``fp32`` means fp32).
    """

    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    input_shape: tuple[int, ...]
    min_batch: int = 1
    max_batch: int = 1
    calib_id: str = ''
    sm_count: int = 0
    total_memory_mb: int = 0
    opt_batch: int = 0
    tf32: bool = False

    def __post_init__(self) -> None:
        if self.precision not in ('fp32', 'fp16', 'int8'):
            raise SegRosError(f'engine precision must be fp32, fp16 or int8, got '
                              f'{self.precision!r}')
        if not 1 <= self.min_batch <= self.max_batch:
            raise SegRosError(f'bad batch range {self.min_batch}..{self.max_batch}')
        if self.opt_batch and not self.min_batch <= self.opt_batch <= self.max_batch:
            raise SegRosError(f'opt batch {self.opt_batch} outside the batch range '
                              f'{self.min_batch}..{self.max_batch}')
        object.__setattr__(self, 'input_shape', tuple(int(v) for v in self.input_shape))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        d = asdict(self)
        d['input_shape'] = list(self.input_shape)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineKey:
        """Inverse of :meth:`to_dict`; raises :class:`SegRosError` on missing fields."""
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as exc:
            raise SegRosError(f'engine sidecar key is incomplete: {exc}') from exc

    def digest(self) -> str:
        """16 hex characters identifying the key (used in cache file names)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(',', ':'))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def differences(self, other: EngineKey) -> list[str]:
        """Human-readable list of fields where ``other`` (found) differs from ``self``."""
        out = []
        for f in fields(self):
            want, got = getattr(self, f.name), getattr(other, f.name)
            if want != got:
                if f.name == 'onnx_sha256':
                    out.append('built from a different ONNX file')
                else:
                    out.append(f'{f.name}: engine has {got!r}, need {want!r}')
        return out


@dataclass
class Sidecar:
    """The JSON written beside an engine (``model.engine`` -> ``model.json``)."""

    key: EngineKey
    meta: ModelMeta
    engine_sha256: str
    onnx_path: str = ''
    build_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({'format': SIDECAR_FORMAT, 'key': self.key.to_dict(),
                           'meta': self.meta.to_dict(), 'engine_sha256': self.engine_sha256,
                           'onnx_path': self.onnx_path, 'build_seconds': self.build_seconds,
                           'extra': self.extra}, indent=2)

    @classmethod
    def from_json(cls, text: str, where: str = 'sidecar') -> Sidecar:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SegRosError(f'{where}: not valid JSON ({exc})') from exc
        if not isinstance(data, dict) or data.get('format') != SIDECAR_FORMAT:
            raise SegRosError(f'{where}: not a seg_ros engine sidecar')
        try:
            return cls(key=EngineKey.from_dict(data['key']),
                       meta=ModelMeta.from_dict(data['meta']),
                       engine_sha256=str(data['engine_sha256']),
                       onnx_path=str(data.get('onnx_path', '')),
                       build_seconds=float(data.get('build_seconds', 0.0)),
                       extra=dict(data.get('extra', {})))
        except KeyError as exc:
            raise SegRosError(f'{where}: missing field {exc}') from exc


def sidecar_path(engine: str | os.PathLike[str]) -> Path:
    """``x.engine`` -> ``x.json``."""
    return Path(engine).with_suffix('.json')


def cached_engine_path(cache_dir: str | os.PathLike[str], onnx_path: str | os.PathLike[str],
                       key: EngineKey) -> Path:
    """Where the engine for ``key`` lives in the cache."""
    h, w = key.input_shape[:2]
    name = f'{Path(onnx_path).stem}-{h}x{w}-{key.precision}-{key.digest()}.engine'
    return Path(cache_dir) / 'engines' / name


def write_engine(path: str | os.PathLike[str], engine_bytes: bytes | memoryview,
                 sidecar: Sidecar) -> Path:
    """Write an engine and its sidecar atomically (sidecar last, so a half-written pair is
    never taken for valid: without a matching sidecar the engine is stale)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = bytes(engine_bytes)
    sidecar.engine_sha256 = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(path, data)
    atomic_write_bytes(sidecar_path(path), sidecar.to_json().encode())
    return path


def read_sidecar(engine: str | os.PathLike[str]) -> Sidecar:
    """Read the sidecar of an engine; :class:`SegRosError` if missing or invalid."""
    side = sidecar_path(engine)
    if not side.is_file():
        raise SegRosError(f'{engine}: no sidecar {side.name} (engine of unknown origin: '
                          f'rebuild it with `seg-ros build-engine`)')
    return Sidecar.from_json(side.read_text(), str(side))


def stale_reason(engine: str | os.PathLike[str], expected: EngineKey | None,
                 check_hash: bool = True) -> str | None:
    """Why an engine must not be used, or None when it is valid for ``expected``.

    Args:
        engine: engine file path.
        expected: the key the engine must have; None checks only file integrity.
        check_hash: verify the engine bytes against the sidecar's sha256.
    """
    engine = Path(engine)
    if not engine.is_file():
        return 'engine file missing'
    try:
        side = read_sidecar(engine)
    except SegRosError as exc:
        return str(exc)
    if expected is not None:
        diffs = expected.differences(side.key)
        if diffs:
            return '; '.join(diffs)
    if check_hash and file_sha256(engine) != side.engine_sha256:
        return 'engine file does not match its sidecar checksum (truncated or replaced)'
    return None


def foreign_reason(side: Sidecar, trt_version: str, gpu_name: str | GpuInfo,
                   compute_capability: str = '') -> str | None:
    """Why an engine from elsewhere cannot run here (other TensorRT or GPU), or None.

    Args:
        side: the engine's sidecar.
        trt_version: the installed TensorRT version.
        gpu_name: this GPU (a :class:`GpuInfo` also compares SM count and memory) or its name.
        compute_capability: with a plain name, its ``major.minor``.
    """
    gpu = gpu_name if isinstance(gpu_name, GpuInfo) else GpuInfo(gpu_name, compute_capability)
    k = side.key
    diffs = []
    if k.trt_version != trt_version:
        diffs.append(f'built with TensorRT {k.trt_version}, this is {trt_version}')
    if (k.gpu_name, k.compute_capability) != (gpu.name, gpu.compute_capability):
        diffs.append(f'built for {k.gpu_name} (sm {k.compute_capability}), this GPU is '
                     f'{gpu.name} (sm {gpu.compute_capability})')
    elif gpu.sm_count and not k.sm_count:
        diffs.append('the sidecar predates the SM count / memory check (Jetson modules share '
                     'name and compute capability)')
    elif gpu.sm_count and (k.sm_count, k.total_memory_mb) != (gpu.sm_count,
                                                               gpu.total_memory_mb):
        diffs.append(f'built for a {k.gpu_name} with {k.sm_count} SMs and {k.total_memory_mb} '
                     f'MiB, this one has {gpu.sm_count} SMs and {gpu.total_memory_mb} MiB')
    return '; '.join(diffs) or None


def profile_shapes(input_shape: tuple[int, ...], min_batch: int, max_batch: int,
                   opt_batch: int | None = None
                   ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) NHWC shapes of the optimisation profile for a dynamic batch axis.

    ``opt_batch`` defaults to ``max_batch``: TensorRT picks its kernels for the opt shape, and
    a batching node runs full batches whenever it is behind (when speed matters most).
    """
    if not 1 <= min_batch <= max_batch:
        raise SegRosError(f'bad batch range {min_batch}..{max_batch}')
    opt = min(max(opt_batch or max_batch, min_batch), max_batch)
    return ((min_batch, *input_shape), (opt, *input_shape), (max_batch, *input_shape))


def save_timing_cache(path: str | os.PathLike[str], blob: bytes) -> bool:
    """Write TensorRT's timing cache atomically, best effort.

    Called after the engine is safely written: the timing cache only speeds up the next build,
    so a read-only or full disk is a warning, never a lost engine.

    Returns:
        True when written.
    """
    try:
        atomic_write_bytes(path, blob)
    except OSError as exc:
        log.warning('timing cache not saved (%s: %s); the next build will be slower',
                    type(exc).__name__, exc)
        return False
    return True


def timing_cache_path(cache_dir: str | os.PathLike[str], gpu: GpuInfo, trt_version: str) -> Path:
    """The timing cache of this GPU and TensorRT under the engine cache (never beside the
    ONNX file, which may be read-only)."""
    name = (f'{gpu.name}-sm{gpu.compute_capability}-{gpu.sm_count}sm-'
            f'{gpu.total_memory_mb}mb-trt{trt_version}')
    safe = ''.join(c if c.isalnum() or c in '.-_' else '_' for c in name)
    return Path(cache_dir) / 'timing' / f'{safe}.cache'


def calibration_batch(static_batch: int | None, requested: int | None = None) -> int:
    """The batch size int8 calibration runs with.

    A static-batch network takes exactly its batch (TensorRT would read ``static_batch``
    frames per call from a bigger buffer and skip the rest); a dynamic one runs the
    calibration profile at ``requested`` (default 8).
    """
    if static_batch is not None:
        if requested not in (None, static_batch):
            raise SegRosError(f'the ONNX has a fixed batch of {static_batch}: calibration runs '
                              f'with that batch, not {requested}')
        return int(static_batch)
    size = 8 if requested is None else int(requested)
    if size < 1:
        raise SegRosError(f'calibration batch must be >= 1, got {size}')
    return size


def onnx_input_shape(onnx_path: str | os.PathLike[str]) -> tuple[int | None, tuple[int, ...]]:
    """(static batch or None when dynamic, per-frame shape) of an exported ONNX input.

    Raises:
        SegRosError: the input is not (N, H, W, 3) uint8 with fixed H, W.
    """
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    if not model.graph.input:
        raise SegRosError(f'{onnx_path}: graph has no input')
    inp = model.graph.input[0]
    ttype = inp.type.tensor_type
    dims = [d.dim_value if d.HasField('dim_value') else None for d in ttype.shape.dim]
    if ttype.elem_type != onnx.TensorProto.UINT8 or len(dims) != 4 or dims[3] != 3 \
            or dims[1] is None or dims[2] is None:
        raise SegRosError(f'{onnx_path}: expected a uint8 (N, H, W, 3) input with fixed H, W '
                          f'(a `seg-ros export` file), got {dims} elem_type {ttype.elem_type}')
    return dims[0], (int(dims[1]), int(dims[2]), 3)  # type: ignore[arg-type]


def onnx_precision(onnx_path: str | os.PathLike[str]) -> str:
    """``fp16`` for a ``seg-ros export --fp16`` file, else ``fp32`` (from metadata_props)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    return 'fp16' if props.get('seg_ros.precision') == 'fp16' else 'fp32'


def make_engine_key(onnx_path: str | os.PathLike[str], precision: str, trt_version: str,
                    gpu_name: str | GpuInfo, compute_capability: str = '', max_batch: int = 1,
                    calib_id: str = '', opt_batch: int | None = None,
                    tf32: bool = False) -> EngineKey:
    """The cache key of an engine built from ``onnx_path`` here.

    A static-batch ONNX fixes the batch range to its batch; a dynamic one gets 1..max_batch
    with the profile tuned for ``opt_batch`` (default: ``max_batch``).
    """
    gpu = gpu_name if isinstance(gpu_name, GpuInfo) else GpuInfo(gpu_name, compute_capability)
    static_batch, frame_shape = onnx_input_shape(onnx_path)
    if static_batch is not None:
        if max_batch not in (1, static_batch):
            raise SegRosError(f'{onnx_path} has a fixed batch of {static_batch}; re-export with '
                              f'--dynamic-batch for max batch {max_batch}')
        lo = hi = static_batch
    else:
        lo, hi = 1, max(1, int(max_batch))
    if precision != 'int8' and calib_id:
        calib_id = ''  # calibration data only matters for int8 engines
    opt = profile_shapes(frame_shape, lo, hi, opt_batch)[1][0]
    if opt_batch is not None and opt != opt_batch:
        raise SegRosError(f'opt batch {opt_batch} outside the batch range {lo}..{hi}')
    return EngineKey(onnx_sha256=file_sha256(onnx_path), trt_version=trt_version,
                     gpu_name=gpu.name, compute_capability=gpu.compute_capability,
                     precision=precision, input_shape=frame_shape, min_batch=lo,
                     max_batch=hi, calib_id=calib_id, sm_count=gpu.sm_count,
                     total_memory_mb=gpu.total_memory_mb, opt_batch=opt,
                     tf32=bool(tf32) and precision == 'fp32')
