"""GPU-only runtime tests (skipped cleanly without CUDA; TensorRT ones also without TensorRT)."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from seg_ros.metadata import ModelMeta
from seg_ros.models import create_model
from seg_ros.runtime.backends import TorchBackend, tensorrt_importable

pytestmark = pytest.mark.gpu
SIZE = (128, 256)


def _frames(n: int) -> np.ndarray:
    from seg_ros.data.synthetic import SyntheticDrive

    drive = SyntheticDrive(size=SIZE, seed=1)
    return np.stack([drive.frame(i * 5)[0] for i in range(n)])


@pytest.fixture(scope='module')
def net_meta() -> tuple[torch.nn.Module, ModelMeta]:
    torch.manual_seed(0)
    return create_model('regseg48'), ModelMeta.for_dataset('regseg48', input_size=list(SIZE))


def test_torch_cuda_fp16_channels_last_graph_agrees_with_cpu(net_meta) -> None:
    net, meta = net_meta
    batch = _frames(2)
    cpu = TorchBackend(copy.deepcopy(net), meta, SIZE, device='cpu')
    ref, _ = cpu.infer(batch)
    # (the backend moves / halves the module it is given: hand it a copy)
    fast = TorchBackend(copy.deepcopy(net), meta, SIZE, device='cuda', precision='fp16',
                        cuda_graph=True)
    assert fast.channels_last
    for _ in range(2):  # second call replays the captured graph
        ids, conf = fast.infer(batch, confidence=True)
    assert conf is not None and conf.dtype == np.uint8
    assert (ids == ref).mean() >= 0.99  # fp16 vs fp32 logits: near-ties may flip
    fast.close()


@pytest.mark.skipif(not tensorrt_importable(), reason='needs TensorRT')
@pytest.mark.parametrize('precision', ['fp32', 'fp16'])
def test_tensorrt_engine_build_cache_and_agreement(net_meta, tmp_path: Path,
                                                   precision: str) -> None:
    from seg_ros.runtime import trt_backend
    from seg_ros.runtime.engine_cache import read_sidecar
    from seg_ros.runtime.export import export_onnx

    net, meta = net_meta
    onnx_path = export_onnx(net, meta, tmp_path / 'm.onnx', size=SIZE,
                            fp16=precision == 'fp16')
    engine = trt_backend.build_or_load(onnx_path, precision, tmp_path)
    mtime = engine.stat().st_mtime_ns
    assert trt_backend.build_or_load(onnx_path, precision, tmp_path) == engine
    assert engine.stat().st_mtime_ns == mtime  # cache hit, not rebuilt
    assert read_sidecar(engine).meta == ModelMeta.from_dict(
        {**meta.to_dict(), 'input_size': list(SIZE)})
    backend = trt_backend.TrtBackend.from_engine(engine)
    batch = _frames(1)
    ids, conf = backend.infer(batch, confidence=True)
    ref, _ = TorchBackend(copy.deepcopy(net), meta, SIZE, device='cpu').infer(batch)
    assert ids.dtype == np.uint8 and conf is not None
    assert (ids == ref).mean() >= (0.999 if precision == 'fp32' else 0.99)
    backend.close()
