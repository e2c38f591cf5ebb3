"""OpenVINO backend: our ONNX exports on the CPU, agreement with ONNX Runtime, bf16 gate."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from seg_ros.errors import SegRosError
from seg_ros.metadata import ModelMeta
from seg_ros.models import create_model
from seg_ros.runtime import cpu as cpu_mod
from seg_ros.runtime.backends import OrtBackend, read_onnx_meta
from seg_ros.runtime.export import export_onnx

ov = pytest.importorskip('openvino', reason='openvino is not installed')
from seg_ros.runtime.openvino_backend import OpenVinoBackend, ov_device  # noqa: E402

SIZE = (64, 128)
FAMILIES = ('regseg48', 'sfnet_lite_r18', 'rtseg_s', 'eseg_lite_s')  # one per paper
SHIPPED = Path(__file__).resolve().parents[1] / 'models' / 'regseg48_synthetic.onnx'


@pytest.fixture(scope='module')
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp('openvino')
    out = {}
    for name in FAMILIES:
        torch.manual_seed(0)
        net = create_model(name)
        meta = ModelMeta.for_dataset(name, input_size=list(SIZE))
        out[name] = export_onnx(net, meta, root / f'{name}.onnx', size=SIZE,
                                dynamic_batch=name == 'regseg48')
    return out


def _frames(n: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    from seg_ros.data.synthetic import SyntheticDrive

    drive = SyntheticDrive(size=size, seed=11)
    return np.stack([drive.frame(i * 5)[0] for i in range(n)])


@pytest.mark.parametrize('name', FAMILIES)
def test_fp32_agrees_with_onnxruntime(exports: dict[str, Path], name: str) -> None:
    frames = _frames(2)
    ort_ids, ort_conf = OrtBackend(exports[name], threads=1).infer(frames[:1], True)
    backend = OpenVinoBackend(exports[name], precision='fp32', threads=1)
    ids, conf = backend.infer(frames[:1], True)
    assert ids.dtype == np.uint8 and ids.shape == (1, *SIZE)
    assert (ids == ort_ids).mean() >= 0.9999
    assert np.abs(conf.astype(int) - ort_conf).max() <= 2
    assert backend.meta == read_onnx_meta(exports[name])  # from rt_info, without onnx
    assert backend.compiled.get_property('INFERENCE_NUM_THREADS') == 1
    backend.close()


def test_dynamic_batch_equals_one_by_one(exports: dict[str, Path]) -> None:
    frames = _frames(3)
    backend = OpenVinoBackend(exports['regseg48'], threads=1)
    batch_ids, _ = backend.infer(frames)
    for i in range(3):
        single, _ = backend.infer(frames[i:i + 1])
        np.testing.assert_array_equal(batch_ids[i], single[0])
    ids, conf = backend.infer(frames[:1], confidence=False)
    assert conf is None and ids.shape == (1, *SIZE)


def test_compiled_model_is_cached(exports: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / 'ov_cache'
    OpenVinoBackend(exports['regseg48'], cache_dir=cache).close()
    blobs = list(cache.iterdir())
    assert blobs, 'OpenVINO wrote nothing to CACHE_DIR'
    OpenVinoBackend(exports['regseg48'], cache_dir=cache).close()  # loads from the cache
    assert sorted(cache.iterdir()) == sorted(blobs)


@pytest.mark.skipif(not cpu_mod.cpu_info().native_bf16,
                    reason='this CPU has no native bf16 (AVX512_BF16/AMX)')
def test_bf16_keeps_the_shipped_models_ids() -> None:
    frames = _frames(4, (128, 256))
    ort = OrtBackend(SHIPPED, threads=2)
    backend = OpenVinoBackend(SHIPPED, precision='bf16', threads=2)
    agree = [(backend.infer(f[None])[0] == ort.infer(f[None])[0]).mean() for f in frames]
    assert min(agree) >= 0.99, agree


def test_refusals_name_the_reason(exports: dict[str, Path], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = exports['rtseg_s']
    with pytest.raises(SegRosError, match='fp16 on openvino needs an Intel GPU'):
        OpenVinoBackend(path, precision='fp16')
    with pytest.raises(SegRosError, match='not .cuda:0.'):
        OpenVinoBackend(path, device='cuda:0')
    with pytest.raises(SegRosError, match='ONNX file not found'):
        OpenVinoBackend(tmp_path / 'missing.onnx')
    damaged = tmp_path / 'damaged.onnx'
    damaged.write_bytes(b'not a protobuf' * 20)
    with pytest.raises(SegRosError, match='OpenVINO cannot read it'):
        OpenVinoBackend(damaged)
    old = cpu_mod.parse_cpuinfo('model name\t: Old Xeon\nflags\t\t: avx2 fma\n')
    monkeypatch.setattr('seg_ros.runtime.openvino_backend.cpu_info', lambda: old)
    with pytest.raises(SegRosError, match='bf16 needs a CPU with native bf16.*Old Xeon'):
        OpenVinoBackend(path, precision='bf16')
    assert (ov_device('cpu'), ov_device('gpu'), ov_device('gpu:1')) == ('CPU', 'GPU', 'GPU.1')
