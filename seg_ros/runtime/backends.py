"""Inference backends behind one small interface, and ``auto`` selection.

A backend runs the network-side pipeline (:mod:`seg_ros.runtime.pipeline`) on a batch of
network-size uint8 RGB frames and returns uint8 ids (and confidence). Everything around it
(resize, letterbox, colours) is shared by :class:`seg_ros.runtime.segmenter.Segmenter`.

- ``onnxruntime``: an exported ONNX file; CPU by default, the CUDA execution provider when
  ``device`` is ``cuda[:N]``; ONNX Runtime's own TensorRT execution provider only when asked
  for (``tensorrt_ep=True``), with its engine cache on disk.
- ``torch``: the PyTorch model itself; CPU or CUDA, fp16 + channels_last on CUDA, optional
  CUDA-graph capture.
- ``tensorrt``: a serialized engine (:mod:`seg_ros.runtime.trt_backend`, the only module that
  touches the TensorRT API).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from seg_ros.errors import SegRosError, first_line
from seg_ros.metadata import ModelMeta

log = logging.getLogger(__name__)

BACKENDS = ('auto', 'tensorrt', 'onnxruntime', 'openvino', 'torch')
# auto: seg_ros.runtime.auto.choose_precision picks one per backend and device
PRECISIONS = ('auto', 'fp32', 'fp16', 'bf16', 'int8')
PRECISION_KEY = 'seg_ros.precision'  # ONNX metadata_props key: fp32, fp16 or int8
META_KEY = 'seg_ros.meta'  # ONNX metadata_props key holding ModelMeta JSON


class Backend(ABC):
    """One inference engine running the uint8-in / uint8-out segmentation pipeline.

    Attributes:
        name: backend name (``onnxruntime``, ``torch``, ``tensorrt``).
        meta: weights metadata.
        input_size: (height, width) the network runs at.
        has_confidence: whether :meth:`infer` can return a confidence map.
        max_batch: largest batch :meth:`infer` accepts.
        device: where it runs, for humans (``cpu``, ``cuda:0 (NVIDIA ...)``).
    """

    name: str = ''
    meta: ModelMeta
    input_size: tuple[int, int]
    has_confidence: bool = True
    max_batch: int = 1
    device: str = 'cpu'

    @abstractmethod
    def infer(self, batch: np.ndarray,
              confidence: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Run the network.

        Args:
            batch: (N, H, W, 3) uint8 RGB at :attr:`input_size`, C-contiguous.
            confidence: also return the confidence map.

        Returns:
            (ids, confidence or None), each (N, H, W) uint8 numpy arrays.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release the model and device memory."""

    def describe(self) -> dict[str, Any]:
        """Facts for logs, benchmarks and diagnostics."""
        return {'backend': self.name, 'device': self.device, 'model': self.meta.model,
                'input_size': list(self.input_size)}

    def _check_batch(self, batch: np.ndarray, confidence: bool = False) -> None:
        h, w = self.input_size
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (h, w, 3):
            raise SegRosError(f'{self.name}: expected (N, {h}, {w}, 3) uint8, got '
                              f'{batch.shape} {batch.dtype}')
        if not 1 <= batch.shape[0] <= self.max_batch:
            raise SegRosError(f'{self.name}: batch {batch.shape[0]} outside 1..{self.max_batch}')
        if confidence and not self.has_confidence:
            raise SegRosError('this ONNX file was exported without a confidence output '
                              '(re-export without --no-confidence)')


# ---------------------------------------------------------------------------- availability
def tensorrt_importable() -> bool:
    """True when a real TensorRT Python package can be imported.

    ``tensorrt-stubs`` (installed for the type check) leaves a ``tensorrt/`` folder of .pyi
    files that imports as an empty namespace package, so finding the module is not enough.
    """
    if importlib.util.find_spec('tensorrt') is None:
        return False
    try:
        import tensorrt
    except ImportError:
        return False
    return hasattr(tensorrt, 'Builder')


def cuda_available() -> bool:
    """True when torch sees a CUDA device."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False
    return bool(torch.cuda.is_available())


def openvino_installed() -> bool:
    """True when the ``openvino`` package is installed (found, not imported: that is slow)."""
    return importlib.util.find_spec('openvino') is not None


def resolve_backend(backend: str, model_kind: str, device: str) -> str:
    """Pick the concrete backend for ``auto``.

    On a GPU: TensorRT > CUDA torch (checkpoints) > ONNX Runtime. On a CPU: OpenVINO when
    installed (bf16 where the CPU has it, see :mod:`seg_ros.runtime.auto`), else ONNX Runtime.

    Args:
        backend: requested backend name or ``auto``.
        model_kind: ``onnx``, ``engine``, ``checkpoint`` or ``name``.
        device: requested device (``cpu``, ``cuda``, ``cuda:1``).
    """
    if backend not in BACKENDS:
        raise SegRosError(f'unknown backend {backend!r}; choose one of {", ".join(BACKENDS)}')
    if model_kind == 'engine':
        if backend not in ('auto', 'tensorrt'):
            raise SegRosError(f'a TensorRT .engine file runs only on the tensorrt backend, '
                              f'not {backend}')
        return 'tensorrt'
    if backend != 'auto':
        if backend == 'torch' and model_kind == 'onnx':
            raise SegRosError('the torch backend needs a checkpoint or a model name, not an '
                              '.onnx file (use onnxruntime, openvino or tensorrt)')
        return backend
    gpu = device != 'cpu' and cuda_available()
    if gpu and tensorrt_importable():
        return 'tensorrt'
    if gpu and model_kind in ('checkpoint', 'name'):
        return 'torch'
    if not gpu and openvino_installed():
        return 'openvino'
    return 'onnxruntime'


def cuda_index(device: str) -> int | None:
    """The explicit index of ``cuda:N`` (N), None for ``cuda`` / ``auto``.

    Raises:
        SegRosError: not a CUDA device string (``cpu``, ``cuda:x``, ``gpu``).
    """
    if device in ('cuda', 'auto'):
        return None
    head, sep, tail = device.partition(':')
    if head != 'cuda' or not sep or not tail.isdigit():
        raise SegRosError(f'expected a CUDA device (cuda, cuda:N or auto), got {device!r}')
    return int(tail)


def resolve_cuda_device(device: str) -> Any:
    """``cuda`` / ``auto`` -> ``cuda:<current device>``; ``cuda:N`` checked against the GPUs.

    TensorRT, ``torch.cuda.set_device`` and ONNX Runtime's ``device_id`` all need an index;
    a bare ``torch.device('cuda')`` has none (``set_device`` raises ``ValueError`` on it).

    Returns:
        ``torch.device`` with an index.

    Raises:
        SegRosError: not a CUDA device, no GPU, or an index past the last GPU.
    """
    import torch

    index = cuda_index(device)
    if not torch.cuda.is_available():
        raise SegRosError(f'device {device!r}: torch sees no CUDA GPU')
    count = torch.cuda.device_count()
    if index is None:
        index = int(torch.cuda.current_device())
    if not 0 <= index < count:
        raise SegRosError(f'device {device!r}: only {count} CUDA device(s) (cuda:0..cuda:'
                          f'{count - 1})')
    return torch.device('cuda', index)


# ---------------------------------------------------------------------------- torch
class TorchBackend(Backend):
    """The PyTorch model wrapped in :class:`SegmentationPipeline`.

    Args:
        model: eval-mode network (N, 3, H, W) float -> (N, C, H, W) logits.
        meta: weights metadata.
        input_size: (height, width) to run at.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32`` or (CUDA only) ``fp16``.
        channels_last: NHWC memory format (default on CUDA, where cuDNN prefers it).
        cuda_graph: capture the forward into a CUDA graph (CUDA only, fixed batch size).
        threads: intra-op CPU threads (``torch.set_num_threads``, process-wide); None or 0 on
            a CPU: the free cores at start-up (:func:`~seg_ros.runtime.cpu.free_cores`).
        max_batch: largest batch accepted.
    """

    name = 'torch'

    def __init__(self, model: Any, meta: ModelMeta, input_size: tuple[int, int],
                 device: str = 'cpu', precision: str = 'fp32',
                 channels_last: bool | None = None, cuda_graph: bool = False,
                 threads: int | None = None, max_batch: int = 8) -> None:
        import torch

        from seg_ros.runtime.pipeline import SegmentationPipeline

        self.meta = meta
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.max_batch = max_batch
        dev = torch.device(device)
        if dev.type == 'cuda' and not torch.cuda.is_available():
            raise SegRosError(f'device {device!r} requested but torch sees no CUDA GPU')
        if dev.type not in ('cpu', 'cuda'):
            raise SegRosError(f'torch backend runs on cpu or cuda, not {device!r}')
        if precision not in ('fp32', 'fp16'):
            raise SegRosError(f'torch backend supports fp32 and fp16, not {precision!r}')
        if precision == 'fp16' and dev.type != 'cuda':
            raise SegRosError('fp16 on the torch backend needs CUDA (CPU fp16 convolutions '
                              'are slower than fp32)')
        if cuda_graph and dev.type != 'cuda':
            raise SegRosError('CUDA-graph capture needs a CUDA device')
        if not threads and dev.type == 'cpu':
            from seg_ros.runtime.cpu import free_cores

            threads = free_cores()
            log.info('torch backend: %d intra-op thread(s) (free cores at start-up)', threads)
        if threads:
            torch.set_num_threads(int(threads))
        self.threads = int(threads or torch.get_num_threads())
        self._torch = torch
        self._device = dev
        self.device = str(dev) if dev.type == 'cpu' else \
            f'{dev} ({torch.cuda.get_device_name(dev)})'
        self.channels_last = dev.type == 'cuda' if channels_last is None else channels_last
        pipe = SegmentationPipeline(model, meta, confidence=True).eval().to(dev)
        if precision == 'fp16':
            pipe = pipe.half()
        if self.channels_last:
            pipe = pipe.to(memory_format=torch.channels_last)
        self._pipe = pipe
        self._graphs: dict[int, tuple[Any, Any, tuple[Any, ...]]] = {}
        self._use_graph = cuda_graph

    def _run(self, x: Any) -> tuple[Any, ...]:
        with self._torch.inference_mode():
            return tuple(self._pipe(x))

    def _graph_run(self, x: Any) -> tuple[Any, ...]:
        # One captured graph per batch size; inputs are copied into the static buffer.
        torch = self._torch
        n = int(x.shape[0])
        if n not in self._graphs:
            static_in = x.clone()
            stream = torch.cuda.Stream(self._device)
            stream.wait_stream(torch.cuda.current_stream(self._device))
            with torch.cuda.stream(stream):
                for _ in range(3):  # warm up cuDNN autotuning outside the capture
                    self._run(static_in)
            torch.cuda.current_stream(self._device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._run(static_in)
            self._graphs[n] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[n]
        static_in.copy_(x)
        graph.replay()
        return static_out

    def infer(self, batch: np.ndarray,
              confidence: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        self._check_batch(batch)
        torch = self._torch
        x = torch.from_numpy(batch)
        if self._device.type == 'cuda':
            x = x.pin_memory().to(self._device, non_blocking=True)
        outs = self._graph_run(x) if self._use_graph else self._run(x)
        ids = outs[0].cpu().numpy()
        conf = outs[1].cpu().numpy() if confidence else None
        return ids, conf

    def close(self) -> None:
        self._graphs.clear()
        self._pipe = None  # type: ignore[assignment]
        if self._device.type == 'cuda':
            self._torch.cuda.empty_cache()


# ---------------------------------------------------------------------------- ONNX Runtime
def _unreadable(path: Path, exc: BaseException) -> SegRosError:
    reason = type(exc).__name__ + (f': {first_line(exc)}' if first_line(exc) else '')
    return SegRosError(f'cannot load model {path}: not a readable ONNX file ({reason}); '
                       f'truncated? export it again with `seg-ros export`')


def meta_from_props(props: dict[str, str], path: str | os.PathLike[str]) -> ModelMeta:
    """:class:`ModelMeta` from an ONNX file's ``metadata_props`` (as a dict)."""
    if META_KEY not in props:
        raise SegRosError(f'{path}: no seg_ros metadata in the ONNX file (export it with '
                          f'`seg-ros export`)')
    try:
        return ModelMeta.from_json(props[META_KEY])
    except SegRosError as exc:
        raise SegRosError(f'{path}: bad seg_ros metadata: {exc}') from None


def read_onnx_meta(path: str | os.PathLike[str]) -> ModelMeta:
    """Read :class:`ModelMeta` from an exported ONNX file's ``metadata_props``.

    ONNX Runtime reads them (``get_modelmeta().custom_metadata_map``), so a robot serving an
    ONNX model needs only onnxruntime: ``onnx`` has no rosdep key and is not installed there.
    Without onnxruntime (a TensorRT-only install) the ``onnx`` package reads them instead.

    Raises:
        SegRosError: the file is missing, unreadable (truncated, not ONNX) or carries no
            seg_ros metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise SegRosError(f'ONNX file not found: {path}')
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    try:
        if ort is not None:
            opts = ort.SessionOptions()
            # Only the metadata is wanted: skip the optimisations a serving session runs.
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            session = ort.InferenceSession(str(path), sess_options=opts,
                                           providers=['CPUExecutionProvider'])
            props = dict(session.get_modelmeta().custom_metadata_map)
        else:
            import onnx

            model = onnx.load(str(path), load_external_data=False)
            props = {p.key: p.value for p in model.metadata_props}
    except Exception as exc:  # protobuf DecodeError / ORT InvalidProtobuf, OSError
        raise _unreadable(path, exc) from None
    return meta_from_props(props, path)


def ort_session_options(threads: int | None = None, memory_pattern: bool = True) -> Any:
    """The ONNX Runtime session options seg_ros runs with (node, bench, latency profile).

    Args:
        threads: intra-op threads (None or 0: onnxruntime's default, all cores).
        memory_pattern: ONNX Runtime's memory patterns: after the first run of an input
            shape, one planned block per shape is taken from the arena and kept. A batched
            session sees several shapes (a warm-up of 1 and of N, partial batches when a
            camera is late); without patterns the tensors share the arena's chunks. Measured
            with the shipped regseg48 at 4x256x512: 186 against 217-254 MiB after the runs,
            the same speed within the noise. The multi-camera node turns them off.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    # One frame at a time in a robot loop: sequential execution, no thread spinning
    # between runs (spinning burns a core the ROS executor and the camera driver need).
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry('session.intra_op.allow_spinning', '0')
    opts.enable_mem_pattern = bool(memory_pattern)
    return opts


def ort_providers(device: str, available: list[str], tensorrt_ep: bool = False,
                  engine_cache_dir: str | os.PathLike[str] | None = None,
                  fp16: bool = False) -> list[Any]:
    """ONNX Runtime execution providers (with their options) for ``device``.

    The TensorRT execution provider is used only when asked for: implicitly it would rebuild
    its engines at every start (minutes on a Jetson) without an engine cache, and print an
    error where the TensorRT libraries are missing. When asked for, its engine and timing
    caches live under ``engine_cache_dir`` (``<dir>/ort_trt``).

    Args:
        device: ``cpu``, ``cuda`` or ``cuda:N`` (N becomes the providers' ``device_id``).
        available: ``onnxruntime.get_available_providers()``.
        tensorrt_ep: put ``TensorrtExecutionProvider`` first (needs ``device`` cuda).
        engine_cache_dir: cache folder for the TensorRT EP's engines (required with it).
        fp16: let the TensorRT EP build fp16 engines.

    Raises:
        SegRosError: a provider that this onnxruntime lacks, a bad device.
    """
    if device == 'cpu':
        if tensorrt_ep:
            raise SegRosError('the TensorRT execution provider needs device cuda[:N]')
        return ['CPUExecutionProvider']
    index = cuda_index(device) or 0  # ORT's default device is 0, like ours for `cuda`
    if 'CUDAExecutionProvider' not in available:
        raise SegRosError(f'device {device!r}: this onnxruntime has no CUDA provider '
                          f'(available: {available}); install onnxruntime-gpu or use device '
                          f'cpu')
    providers: list[Any] = []
    if tensorrt_ep:
        if 'TensorrtExecutionProvider' not in available:
            raise SegRosError(f'the TensorRT execution provider is not in this onnxruntime '
                              f'(available: {available})')
        if engine_cache_dir is None:
            raise SegRosError('the TensorRT execution provider needs an engine cache folder')
        cache = Path(engine_cache_dir) / 'ort_trt'
        cache.mkdir(parents=True, exist_ok=True)
        providers.append(('TensorrtExecutionProvider', {
            'device_id': index, 'trt_engine_cache_enable': True,
            'trt_engine_cache_path': str(cache), 'trt_timing_cache_enable': True,
            'trt_timing_cache_path': str(cache), 'trt_fp16_enable': bool(fp16)}))
    providers.append(('CUDAExecutionProvider', {'device_id': index}))
    providers.append('CPUExecutionProvider')
    return providers


class OrtBackend(Backend):
    """An exported ONNX pipeline on ONNX Runtime.

    Args:
        path: ONNX file from :func:`seg_ros.runtime.export.export_onnx`.
        device: ``cpu`` or ``cuda[:N]`` (needs onnxruntime-gpu).
        threads: intra-op threads (None = onnxruntime's default, all cores).
        providers: explicit execution providers, overriding ``device``.
        tensorrt_ep: use ONNX Runtime's TensorRT execution provider (explicit only).
        engine_cache_dir: where that provider caches its engines.
        fp16: fp16 engines for the TensorRT execution provider.
        memory_pattern: ONNX Runtime's memory patterns (:func:`ort_session_options`).
    """

    name = 'onnxruntime'

    def __init__(self, path: str | os.PathLike[str], device: str = 'cpu',
                 threads: int | None = None, providers: list[Any] | None = None,
                 tensorrt_ep: bool = False,
                 engine_cache_dir: str | os.PathLike[str] | None = None,
                 fp16: bool = False, memory_pattern: bool = True) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise SegRosError(f'ONNX file not found: {path}')
        opts = ort_session_options(threads, memory_pattern)
        if providers is None:
            providers = ort_providers(device, ort.get_available_providers(), tensorrt_ep,
                                      engine_cache_dir, fp16)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts,
                                                providers=providers)
        except Exception as exc:  # InvalidProtobuf for a truncated / foreign file
            raise _unreadable(path, exc) from None
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        self.meta = meta_from_props(props, path)  # one read of the file: the serving session
        # fp32, fp16 (`seg-ros export --fp16`) or int8 (`seg-ros quantize`): the file decides
        self.file_precision = props.get(PRECISION_KEY, 'fp32')
        self.device = ','.join(self.session.get_providers())
        inp = self.session.get_inputs()[0]
        self._input_name = inp.name
        shape = inp.shape
        if len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:3]):
            raise SegRosError(f'{path}: expected an (N, H, W, 3) uint8 input with fixed H, W, '
                              f'got {shape}')
        self.input_size = (int(shape[1]), int(shape[2]))
        self.max_batch = shape[0] if isinstance(shape[0], int) else 1 << 16
        self._outputs = [o.name for o in self.session.get_outputs()]
        self.has_confidence = 'confidence' in self._outputs

    def infer(self, batch: np.ndarray,
              confidence: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        self._check_batch(batch, confidence)
        names = ['ids', 'confidence'] if confidence else ['ids']
        outs = self.session.run(names, {self._input_name: batch})
        return outs[0], (outs[1] if confidence else None)

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
