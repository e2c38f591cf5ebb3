"""Inference backends behind one small interface, and ``auto`` selection.

A backend runs the network-side pipeline (:mod:`seg_ros.runtime.pipeline`) on a batch of
network-size uint8 RGB frames and returns uint8 ids (and confidence). Everything around it
(resize, letterbox, colours) is shared by :class:`seg_ros.runtime.segmenter.Segmenter`.

- ``onnxruntime``: an exported ONNX file; CPU by default, CUDA / TensorRT execution providers
  when the installed onnxruntime has them and ``device`` is ``cuda``.
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

from seg_ros.errors import SegRosError
from seg_ros.metadata import ModelMeta

log = logging.getLogger(__name__)

BACKENDS = ('auto', 'tensorrt', 'onnxruntime', 'torch')
PRECISIONS = ('fp32', 'fp16', 'int8')
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

    def _check_batch(self, batch: np.ndarray) -> None:
        h, w = self.input_size
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (h, w, 3):
            raise SegRosError(f'{self.name}: expected (N, {h}, {w}, 3) uint8, got '
                              f'{batch.shape} {batch.dtype}')
        if not 1 <= batch.shape[0] <= self.max_batch:
            raise SegRosError(f'{self.name}: batch {batch.shape[0]} outside 1..{self.max_batch}')


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


def resolve_backend(backend: str, model_kind: str, device: str) -> str:
    """Pick the concrete backend for ``auto`` (TensorRT > CUDA torch > ONNX Runtime CPU).

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
                              '.onnx file (use onnxruntime or tensorrt)')
        return backend
    gpu = device != 'cpu' and cuda_available()
    if gpu and tensorrt_importable():
        return 'tensorrt'
    if gpu and model_kind in ('checkpoint', 'name'):
        return 'torch'
    return 'onnxruntime'


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
        threads: intra-op CPU threads (``torch.set_num_threads``, process-wide).
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
        if threads:
            torch.set_num_threads(int(threads))
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
def read_onnx_meta(path: str | os.PathLike[str]) -> ModelMeta:
    """Read :class:`ModelMeta` from an exported ONNX file's ``metadata_props``.

    ONNX Runtime reads them (``get_modelmeta().custom_metadata_map``), so a robot serving an
    ONNX model needs only onnxruntime: ``onnx`` has no rosdep key and is not installed there.
    Without onnxruntime (a TensorRT-only install) the ``onnx`` package reads them instead.

    Raises:
        SegRosError: the file is missing or carries no seg_ros metadata (a file that is not
            an ONNX model raises the reading library's own error).
    """
    path = Path(path)
    if not path.is_file():
        raise SegRosError(f'ONNX file not found: {path}')
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    if ort is not None:
        opts = ort.SessionOptions()
        # Only the metadata is wanted: skip the graph optimisations a serving session runs.
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        # A damaged file raises onnxruntime's own error (InvalidProtobuf ...), as onnx.load
        # raised its DecodeError: callers (the node) turn it into one clear line.
        session = ort.InferenceSession(str(path), sess_options=opts,
                                       providers=['CPUExecutionProvider'])
        props = dict(session.get_modelmeta().custom_metadata_map)
    else:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        props = {p.key: p.value for p in model.metadata_props}
    if META_KEY not in props:
        raise SegRosError(f'{path}: no seg_ros metadata in the ONNX file (export it with '
                          f'`seg-ros export`)')
    return ModelMeta.from_json(props[META_KEY])


def ort_session_options(threads: int | None = None) -> Any:
    """The ONNX Runtime session options seg_ros runs with (node, bench, latency profile).

    Args:
        threads: intra-op threads (None or 0: onnxruntime's default, all cores).
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
    return opts


class OrtBackend(Backend):
    """An exported ONNX pipeline on ONNX Runtime.

    Args:
        path: ONNX file from :func:`seg_ros.runtime.export.export_onnx`.
        device: ``cpu`` or ``cuda[:N]`` (needs onnxruntime-gpu).
        threads: intra-op threads (None = onnxruntime's default, all cores).
        providers: explicit execution providers, overriding ``device``.
    """

    name = 'onnxruntime'

    def __init__(self, path: str | os.PathLike[str], device: str = 'cpu',
                 threads: int | None = None, providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise SegRosError(f'ONNX file not found: {path}')
        self.meta = read_onnx_meta(path)
        opts = ort_session_options(threads)
        available = ort.get_available_providers()
        if providers is None:
            providers = ['CPUExecutionProvider']
            if device.startswith('cuda'):
                wanted = ['TensorrtExecutionProvider', 'CUDAExecutionProvider']
                gpu = [p for p in wanted if p in available]
                if not gpu:
                    raise SegRosError(f'device {device!r}: this onnxruntime has no CUDA '
                                      f'provider (available: {available}); install '
                                      f'onnxruntime-gpu or use device cpu')
                providers = gpu + providers
            elif device != 'cpu':
                raise SegRosError(f'onnxruntime device must be cpu or cuda, not {device!r}')
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
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
        self._check_batch(batch)
        if confidence and not self.has_confidence:
            raise SegRosError('this ONNX file was exported without a confidence output '
                              '(re-export without --no-confidence)')
        names = ['ids', 'confidence'] if confidence else ['ids']
        outs = self.session.run(names, {self._input_name: batch})
        return outs[0], (outs[1] if confidence else None)

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
