"""OpenVINO backend: seg_ros ONNX exports on x86 CPUs, bf16 where the CPU has it.

Many robots run perception on an x86 CPU (NUC-class boards, industrial PCs). OpenVINO reads our
exported ONNX files as they are (uint8 NHWC images in, uint8 ids and confidence out) and keeps
the ONNX ``metadata_props`` under ``rt_info['framework']``, so neither ``onnx`` nor ONNX
Runtime is needed to run one. Compiled models are cached in ``engine_cache_dir`` (OpenVINO's
``CACHE_DIR``): the second start skips compilation.

Precisions (``INFERENCE_PRECISION_HINT``): ``fp32`` (``f32``) everywhere; ``bf16`` only on CPUs
that compute it natively (AVX512_BF16 or AMX), refused elsewhere, since an emulated bf16 is
slower than fp32; ``fp16`` only on an Intel GPU (``device`` ``gpu`` / ``gpu:N``), which this
project cannot test (no Intel GPU on its machines).
"""
from __future__ import annotations

import os
from pathlib import Path
import threading
from typing import Any

import numpy as np

from seg_ros.errors import SegRosError
from seg_ros.metadata import ModelMeta
from seg_ros.runtime.backends import META_KEY, PRECISION_KEY, Backend
from seg_ros.runtime.cpu import BF16_FLAGS, cpu_info

# int8: the file is quantized (seg-ros quantize); the rest runs at OpenVINO's default
PRECISION_HINTS = {'fp32': 'f32', 'bf16': 'bf16', 'fp16': 'f16', 'int8': None}


def available() -> bool:
    """True when the ``openvino`` package imports."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def ov_device(device: str) -> str:
    """OpenVINO's name for a seg_ros ``device``: ``cpu`` -> ``CPU``, ``gpu:1`` -> ``GPU.1``.

    Raises:
        SegRosError: a CUDA device or anything else OpenVINO does not run on.
    """
    dev = device.strip().lower()
    if dev == 'cpu':
        return 'CPU'
    if dev == 'gpu' or (dev.startswith('gpu:') and dev[4:].isdigit()):
        return 'GPU' + ('.' + dev[4:] if ':' in dev else '')
    raise SegRosError(f'openvino runs on cpu or an Intel gpu[:N], not {device!r} (for CUDA '
                      'use tensorrt, onnxruntime or torch)')


def read_onnx(path: Path) -> Any:
    """``path`` through OpenVINO's ONNX frontend alone.

    ``Core.read_model`` tries every frontend on a file the ONNX one refuses (TensorFlow's
    prints parser errors to stderr) and says only that no frontend could read it.

    Raises:
        SegRosError: the file is not a readable ONNX model (one line).
    """
    from openvino.frontend import FrontEndManager

    frontend = FrontEndManager().load_by_framework('onnx')
    try:
        return frontend.convert(frontend.load(str(path)))
    except Exception as exc:  # noqa: BLE001 - OpenVINO's GeneralFailure and friends
        lines = [ln.strip() for ln in str(exc).splitlines()
                 if ln.strip() and not ln.startswith(('Check ', 'FrontEnd API failed'))]
        reason = type(exc).__name__ + (f': {lines[-1]}' if lines else '')
        raise SegRosError(f'cannot load model {path}: not a readable ONNX file ({reason}); '
                          'truncated? export it again with `seg-ros export`') from None


def read_ov_meta(model: Any, path: str | os.PathLike[str]) -> ModelMeta:
    """The :class:`ModelMeta` an ``openvino.Model`` read from our ONNX carries in rt_info."""
    try:
        text = model.get_rt_info(['framework', META_KEY]).astype(str)
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own type for a missing key
        raise SegRosError(f'{path}: no seg_ros metadata in the ONNX file (export it with '
                          '`seg-ros export`)') from exc
    return ModelMeta.from_json(text)


class OpenVinoBackend(Backend):
    """An exported ONNX pipeline compiled by OpenVINO.

    Args:
        path: ONNX file from :func:`seg_ros.runtime.export.export_onnx` (an fp32 export: the
            precision is OpenVINO's choice at compile time, not the file's).
        device: ``cpu``, or ``gpu`` / ``gpu:N`` for an Intel GPU (untested here).
        precision: ``fp32``, ``bf16`` (CPUs with AVX512_BF16/AMX), ``fp16`` (Intel GPU) or
            ``int8`` (a file from ``seg-ros quantize``).
        threads: inference threads (None: OpenVINO's choice, the physical cores).
        cache_dir: folder for OpenVINO's compiled-model cache (None: no cache).
        streams: CPU inference streams (the multi-camera node's batches). 1: one stream
            with all ``threads`` (OpenVINO's latency mode, the fastest for one frame). More:
            OpenVINO's throughput mode, ``threads`` shared among the streams, and a batch runs
            as one frame per stream at a time. A stream keeps buffers for the batch size it
            runs, so single frames hold the least memory: 4x320x640 fp32 on 2 streams, 268
            against 366 MiB after the runs as halves of the batch, at the same speed (2-core
            AVX2 EPYC). On the 2-core AMX Xeon, 4x256x512 regseg48 bf16 took 64.1 ms as 2
            streams of 1 thread (halves of the batch) against 76.1 ms as one 2-thread
            inference (interleaved medians): separate streams need no synchronisation between
            the threads of one layer. A file with a fixed batch runs one stream.
    """

    name = 'openvino'

    def __init__(self, path: str | os.PathLike[str], device: str = 'cpu',
                 precision: str = 'fp32', threads: int | None = None,
                 cache_dir: str | os.PathLike[str] | None = None, streams: int = 1) -> None:
        import openvino as ov

        path = Path(path)
        if not path.is_file():
            raise SegRosError(f'ONNX file not found: {path}')
        target = ov_device(device)
        if precision not in PRECISION_HINTS:
            raise SegRosError(f'openvino precision must be one of '
                              f'{", ".join(PRECISION_HINTS)}, got {precision!r}')
        if target == 'CPU' and precision == 'fp16':
            raise SegRosError('fp16 on openvino needs an Intel GPU (device gpu); on the CPU '
                              'use fp32 or bf16')
        if isinstance(streams, bool) or not isinstance(streams, int) or streams < 1:
            raise SegRosError(f'openvino streams must be a positive integer, got {streams!r}')
        if streams > 1 and target != 'CPU':
            raise SegRosError('openvino streams > 1 are for the CPU')
        cpu = cpu_info()
        if target == 'CPU' and precision == 'bf16' and not cpu.native_bf16:
            raise SegRosError(f'bf16 needs a CPU with native bf16 ({" or ".join(BF16_FLAGS)});'
                              f' this one is {cpu.summary()}: use fp32')
        core = ov.Core()
        if cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            core.set_property({'CACHE_DIR': str(cache_dir)})
        model = read_onnx(path)
        self.meta = read_ov_meta(model, path)
        try:
            self.file_precision = model.get_rt_info(['framework', PRECISION_KEY]).astype(str)
        except Exception:  # noqa: BLE001 - exports before the key existed were fp32
            self.file_precision = 'fp32'
        if precision == 'int8' and self.file_precision != 'int8':
            raise SegRosError(f'{path} is an {self.file_precision} export: int8 on the CPU runs '
                              'a file from `seg-ros quantize`')
        inputs = model.inputs
        shape = inputs[0].get_partial_shape()
        if (len(inputs) != 1 or shape.rank.get_length() != 4 or not shape[1].is_static
                or not shape[2].is_static):
            raise SegRosError(f'{path}: expected one (N, H, W, 3) uint8 input with fixed H, W,'
                              f' got {shape}')
        self.input_size = (shape[1].get_length(), shape[2].get_length())
        self.max_batch = shape[0].get_length() if shape[0].is_static else 1 << 16
        outputs = [o.get_any_name() for o in model.outputs]
        if 'ids' not in outputs:
            raise SegRosError(f'{path}: no "ids" output (outputs: {outputs})')
        self.has_confidence = 'confidence' in outputs
        if shape[0].is_static:  # a fixed-batch file's batch cannot be split: one stream
            streams = 1
        config: dict[str, Any] = ({'PERFORMANCE_HINT': 'THROUGHPUT', 'NUM_STREAMS': streams}
                                  if streams > 1 else {'PERFORMANCE_HINT': 'LATENCY'})
        if PRECISION_HINTS[precision] is not None:
            config['INFERENCE_PRECISION_HINT'] = PRECISION_HINTS[precision]
        if threads and target == 'CPU':
            config['INFERENCE_NUM_THREADS'] = int(threads)
        self.compiled = core.compile_model(model, target, config)
        self.precision = precision
        self.streams = 1
        if streams > 1:  # OpenVINO may run fewer streams than asked (fewer threads than that)
            self.streams = max(1, int(self.compiled.get_property('NUM_STREAMS')))
        self._requests = [self.compiled.create_infer_request() for _ in range(self.streams)]
        self._lock = threading.Lock()  # one set of infer requests: one caller at a time
        self._ids = self.compiled.output('ids')
        self._conf = self.compiled.output('confidence') if self.has_confidence else None
        self.device = f'{target} ({cpu.model})' if target == 'CPU' else target

    def infer(self, batch: np.ndarray,
              confidence: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        self._check_batch(batch, confidence)
        with self._lock:
            parts = min(batch.shape[0], len(self._requests))
            if parts == 1:
                out = self._requests[0].infer({0: batch})
                # The request reuses its output buffers on the next call: hand out copies.
                ids = np.array(out[self._ids], copy=True)
                conf = np.array(out[self._conf], copy=True) if confidence else None
                return ids, conf
            # One frame per request, ``parts`` at a time: a stream holds buffers for the
            # batch size it runs, so single frames keep it at one frame's activations (the
            # figures are in the class docstring).
            n = batch.shape[0]
            ids_parts: list[np.ndarray] = []
            conf_parts: list[np.ndarray] = []
            for first in range(0, n, parts):
                wave = self._requests[:min(parts, n - first)]
                started, failures = [], []
                try:
                    for k, request in enumerate(wave):
                        request.start_async({0: batch[first + k:first + k + 1]})
                        started.append(request)
                finally:
                    for request in started:  # never leave a request running, even on a failure
                        try:
                            request.wait()
                        except Exception as exc:  # noqa: BLE001 - re-raised below, after the rest
                            failures.append(exc)
                if failures:
                    raise failures[0]
                for request in wave:  # copies out of the requests' reused buffers
                    ids_parts.append(np.array(request.get_tensor(self._ids).data, copy=True))
                    if confidence:
                        conf_parts.append(np.array(request.get_tensor(self._conf).data,
                                                   copy=True))
            ids = np.concatenate(ids_parts)
            conf = np.concatenate(conf_parts) if confidence else None
        return ids, conf

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info['precision'] = self.precision
        info['streams'] = self.streams
        info['cpu'] = cpu_info().summary()
        return info

    def close(self) -> None:
        self._requests = []
        self.compiled = None  # type: ignore[assignment]
