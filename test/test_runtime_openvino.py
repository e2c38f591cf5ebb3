"""OpenVINO backend: our ONNX exports on the CPU, agreement with ONNX Runtime, bf16 gate."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from seg_ros.errors import SegRosError
from seg_ros.models import list_models
from seg_ros.runtime import cpu as cpu_mod
from seg_ros.runtime.backends import OrtBackend, read_onnx_meta
from seg_ros.testing.exports import FAMILIES

ov = pytest.importorskip('openvino', reason='openvino is not installed')
from seg_ros.runtime.openvino_backend import OpenVinoBackend, ov_device  # noqa: E402

SIZE = (64, 128)  # conftest's EXPORT_SIZE: the exports are shared with the TensorRT-rules suite
SHIPPED = Path(__file__).resolve().parents[1] / 'models' / 'regseg48_synthetic.onnx'


def _frames(n: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    from seg_ros.data.synthetic import SyntheticDrive

    drive = SyntheticDrive(size=size, seed=11)
    return np.stack([drive.frame(i * 5)[0] for i in range(n)])


@pytest.mark.parametrize('name', [
    n if n in FAMILIES else pytest.param(n, marks=pytest.mark.exhaustive)
    for n in list_models()])
def test_fp32_agrees_with_onnxruntime(exports: Any, name: str) -> None:
    path = exports(name, False, False)
    frames = _frames(2)
    ort_ids, ort_conf = OrtBackend(path, threads=1).infer(frames[:1], True)
    backend = OpenVinoBackend(path, precision='fp32', threads=1)
    ids, conf = backend.infer(frames[:1], True)
    assert ids.dtype == np.uint8 and ids.shape == (1, *SIZE)
    assert (ids == ort_ids).mean() >= 0.9999
    assert np.abs(conf.astype(int) - ort_conf).max() <= 2
    assert backend.meta == read_onnx_meta(path)  # from rt_info, without onnx
    assert backend.compiled.get_property('INFERENCE_NUM_THREADS') == 1
    backend.close()


def test_dynamic_batch_equals_one_by_one(exports: Any) -> None:
    frames = _frames(3)
    backend = OpenVinoBackend(exports('rtseg_s', True, False), threads=1)
    batch_ids, _ = backend.infer(frames)
    for i in range(3):
        single, _ = backend.infer(frames[i:i + 1])
        np.testing.assert_array_equal(batch_ids[i], single[0])
    ids, conf = backend.infer(frames[:1], confidence=False)
    assert conf is None and ids.shape == (1, *SIZE)


def test_streams_split_a_batch_and_give_the_one_stream_ids(exports: Any) -> None:
    """The multi-camera node's CPU path: parts of one batch on concurrent streams."""
    frames = _frames(3)  # 3 frames on 2 streams: parts of 2 and 1
    path = exports('rtseg_s', True, False)
    one = OpenVinoBackend(path, precision='fp32', threads=2)
    two = OpenVinoBackend(path, precision='fp32', threads=2, streams=2)
    assert (one.streams, two.streams) == (1, 2)
    assert two.compiled.get_property('NUM_STREAMS') == 2
    assert two.describe()['streams'] == 2
    for n in (3, 2, 1):  # whole split, even split, a lone frame on one stream
        ids1, conf1 = one.infer(frames[:n], True)
        ids2, conf2 = two.infer(frames[:n], True)
        assert ids2.shape == (n, *SIZE) and conf2.shape == (n, *SIZE)
        assert (ids1 == ids2).mean() >= 0.9999
        assert np.abs(conf1.astype(int) - conf2).max() <= 1
    ids2, conf2 = two.infer(frames, False)
    assert conf2 is None and ids2.shape == (3, *SIZE)
    # a part that fails to start: the error reaches the caller, the started part is waited
    # for, and the next batch runs on both streams again
    real = two._requests[1]

    class Refuses:
        def start_async(self, inputs: Any) -> None:
            raise RuntimeError('stream refused')
    two._requests[1] = Refuses()  # type: ignore[call-overload]
    with pytest.raises(RuntimeError, match='stream refused'):
        two.infer(frames, True)
    two._requests[1] = real
    assert (two.infer(frames, True)[0] == one.infer(frames, True)[0]).mean() >= 0.9999
    # every stream runs single frames (a stream keeps buffers for the largest batch it ran)
    shapes: list[tuple[int, ...]] = []

    class Records:
        def __init__(self, request: Any) -> None:
            self.request = request

        def start_async(self, inputs: Any) -> None:
            shapes.append(inputs[0].shape)
            self.request.start_async(inputs)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.request, name)
    two._requests = [Records(r) for r in two._requests]  # type: ignore[misc]
    ids2, _ = two.infer(frames, False)
    assert shapes == [(1, *SIZE, 3)] * 3 and (ids2 == one.infer(frames)[0]).mean() >= 0.9999
    # a fixed-batch file cannot split its batch of 1: one stream, whatever was asked
    assert OpenVinoBackend(exports('rtseg_s', False, False), streams=2).streams == 1
    for bad in (0, -1, 1.5, True):
        with pytest.raises(SegRosError, match='streams must be a positive integer'):
            OpenVinoBackend(path, streams=bad)  # type: ignore[arg-type]


def test_compiled_model_is_cached(exports: Any, tmp_path: Path) -> None:
    cache = tmp_path / 'ov_cache'
    OpenVinoBackend(exports('rtseg_s', False, False), cache_dir=cache).close()
    blobs = list(cache.iterdir())
    assert blobs, 'OpenVINO wrote nothing to CACHE_DIR'
    OpenVinoBackend(exports('rtseg_s', False, False), cache_dir=cache).close()  # from cache
    assert sorted(cache.iterdir()) == sorted(blobs)


@pytest.mark.skipif(not cpu_mod.cpu_info().native_bf16,
                    reason='this CPU has no native bf16 (AVX512_BF16/AMX)')
def test_bf16_keeps_the_shipped_models_ids() -> None:
    ort = OrtBackend(SHIPPED, threads=2)
    frames = _frames(4, ort.input_size)  # whatever size the shipped model is served at
    backend = OpenVinoBackend(SHIPPED, precision='bf16', threads=2)
    agree = [(backend.infer(f[None])[0] == ort.infer(f[None])[0]).mean() for f in frames]
    assert min(agree) >= 0.99, agree


def test_refusals_name_the_reason(exports: Any, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = exports('rtseg_s', False, False)
    with pytest.raises(SegRosError, match='fp16 on openvino needs an Intel GPU'):
        OpenVinoBackend(path, precision='fp16')
    with pytest.raises(SegRosError, match='not .cuda:0.'):
        OpenVinoBackend(path, device='cuda:0')
    with pytest.raises(SegRosError, match='ONNX file not found'):
        OpenVinoBackend(tmp_path / 'missing.onnx')
    damaged = tmp_path / 'damaged.onnx'
    damaged.write_bytes(b'not a protobuf' * 20)
    with pytest.raises(SegRosError, match='cannot load model .*not a readable ONNX file'):
        OpenVinoBackend(damaged)
    old = cpu_mod.parse_cpuinfo('model name\t: Old Xeon\nflags\t\t: avx2 fma\n')
    monkeypatch.setattr('seg_ros.runtime.openvino_backend.cpu_info', lambda: old)
    with pytest.raises(SegRosError, match='bf16 needs a CPU with native bf16.*Old Xeon'):
        OpenVinoBackend(path, precision='bf16')
    assert (ov_device('cpu'), ov_device('gpu'), ov_device('gpu:1')) == ('CPU', 'GPU', 'GPU.1')
