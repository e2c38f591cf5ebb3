"""The TensorRT path's own logic on a machine without TensorRT or a GPU (issue 13, 2 and 7-12).

TensorRT itself never runs here. What is tested is our side of each contract: the device
index we hand to torch / TensorRT / ONNX Runtime, what the calibrator callbacks do when
TensorRT calls them the way its Python trampoline does, where and when caches are written,
and the loader's refusals. Where TensorRT or CUDA would be needed, the test replaces only the
*caller* or the hardware query (``torch.cuda.*``), never the result under test.
"""
from __future__ import annotations

from dataclasses import replace
import json
import os
from pathlib import Path
import subprocess
import sys
import time
from types import SimpleNamespace

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper
import pytest
import torch

from seg_ros.errors import SegRosError
from seg_ros.metadata import ModelMeta
from seg_ros.runtime import backends, trt_backend
from seg_ros.runtime import engine_cache as ec
from seg_ros.runtime.backends import META_KEY, ort_providers, resolve_cuda_device
from seg_ros.runtime.calibration import CalibrationData, CalibrationRun

GPU = ec.GpuInfo('Orin', '8.7', 16, 30536)


def _tiny_onnx(path: Path, batch: int | str = 1, h: int = 8, w: int = 16) -> Path:
    """The exported interface: uint8 (N, H, W, 3) -> uint8 ids (a ReduceMax over channels).

    Cast first and ids through float, as our exports: the graph passes the TensorRT 10 parser
    rules that ``build_or_load`` checks before building.
    """
    inp = helper.make_tensor_value_info('images', TensorProto.UINT8, [batch, h, w, 3])
    out = helper.make_tensor_value_info('ids', TensorProto.UINT8, [batch, h, w])
    axes = helper.make_tensor('axes', TensorProto.INT64, [1], [3])
    nodes = [helper.make_node('Cast', ['images'], ['x'], to=TensorProto.FLOAT),
             helper.make_node('ReduceMax', ['x', 'axes'], ['m'], keepdims=0),
             helper.make_node('Cast', ['m'], ['ids'], to=TensorProto.UINT8)]
    graph = helper.make_graph(nodes, 'tiny', [inp], [out], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)])
    model.ir_version = 9  # what onnxruntime reads
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, ModelMeta(model='tiny', input_size=[h, w]).to_json()
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _fake_gpus(monkeypatch: pytest.MonkeyPatch, count: int = 2, current: int = 1) -> None:
    """torch believes in ``count`` GPUs, ``current`` selected (the hardware query only)."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: count)
    monkeypatch.setattr(torch.cuda, 'current_device', lambda: current)


# ------------------------------------------------------------------ 2 / 9: device index
def test_bare_cuda_device_has_no_index_for_set_device() -> None:
    """The bug: torch refuses ``set_device(torch.device('cuda'))`` before touching CUDA."""
    from torch.cuda._utils import _get_device_index

    with pytest.raises(ValueError):
        _get_device_index(torch.device('cuda'), optional=False)


@pytest.mark.parametrize('device,index', [('cuda', 1), ('auto', 1), ('cuda:0', 0),
                                          ('cuda:1', 1)])
def test_resolve_cuda_device(monkeypatch: pytest.MonkeyPatch, device: str, index: int) -> None:
    _fake_gpus(monkeypatch)
    dev = resolve_cuda_device(device)
    assert dev.type == 'cuda' and dev.index == index


def test_resolve_cuda_device_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_gpus(monkeypatch, count=2)
    with pytest.raises(SegRosError, match='only 2 CUDA'):
        resolve_cuda_device('cuda:2')
    for bad in ('cpu', 'cuda:x', 'gpu:0', 'cuda:'):
        with pytest.raises(SegRosError, match='expected a CUDA device'):
            resolve_cuda_device(bad)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(SegRosError, match='no CUDA GPU'):
        resolve_cuda_device('cuda')


class _Stop(Exception):
    pass


@pytest.mark.parametrize('device,index', [('cuda', 1), ('auto', 1), ('cuda:0', 0)])
def test_trt_backend_sets_an_indexed_device(monkeypatch: pytest.MonkeyPatch, device: str,
                                            index: int) -> None:
    """TrtBackend on ``cuda``/``auto`` hands torch an indexed device (torch's own check)."""
    from torch.cuda._utils import _get_device_index

    _fake_gpus(monkeypatch)
    seen = []

    def set_device(dev: object) -> None:
        seen.append(_get_device_index(dev, optional=False))  # raises like the real one

    def runtime(_logger: object) -> None:
        raise _Stop  # everything past here is TensorRT

    monkeypatch.setattr(torch.cuda, 'set_device', set_device)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda dev: f'GPU{dev.index}')
    monkeypatch.setattr(torch.cuda, 'mem_get_info', lambda dev: (1 << 30, 1 << 31))
    monkeypatch.setattr(trt_backend, '_logger', lambda: None)
    monkeypatch.setattr(trt_backend, '_TRT_OK', True)
    monkeypatch.setattr(trt_backend, 'trt', SimpleNamespace(Runtime=runtime,
                                                            __version__='10.3.0'),
                        raising=False)
    side = ec.Sidecar(key=ec.EngineKey('a' * 64, '10.3.0', 'G', '8.7', 'fp16', (8, 16, 3)),
                      meta=ModelMeta(model='tiny'), engine_sha256='')
    with pytest.raises(_Stop):
        trt_backend.TrtBackend(Path('x.engine'), side, device=device)
    assert seen == [index]
    with pytest.raises(SegRosError, match='not cpu'):
        trt_backend.TrtBackend(Path('x.engine'), side, device='cpu')


def test_onnxruntime_providers_get_the_device_id_and_trt_ep_only_when_asked(
        tmp_path: Path) -> None:
    gpu_ort = ['TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider']
    assert ort_providers('cpu', gpu_ort) == ['CPUExecutionProvider']
    plain = ort_providers('cuda:2', gpu_ort)
    assert plain == [('CUDAExecutionProvider', {'device_id': 2}), 'CPUExecutionProvider']
    assert ort_providers('cuda', gpu_ort)[0] == ('CUDAExecutionProvider', {'device_id': 0})
    name, opts = ort_providers('cuda:1', gpu_ort, tensorrt_ep=True, engine_cache_dir=tmp_path,
                               fp16=True)[0]
    assert name == 'TensorrtExecutionProvider'
    assert opts['device_id'] == 1 and opts['trt_engine_cache_enable'] is True
    assert opts['trt_fp16_enable'] is True
    assert Path(opts['trt_engine_cache_path']) == tmp_path / 'ort_trt'
    assert (tmp_path / 'ort_trt').is_dir()
    with pytest.raises(SegRosError, match='TensorRT execution provider is not'):
        ort_providers('cuda', gpu_ort[1:], tensorrt_ep=True, engine_cache_dir=tmp_path)
    with pytest.raises(SegRosError, match='no CUDA provider'):
        ort_providers('cuda:1', ['CPUExecutionProvider'])
    with pytest.raises(SegRosError, match='needs device cuda'):
        ort_providers('cpu', gpu_ort, tensorrt_ep=True, engine_cache_dir=tmp_path)
    with pytest.raises(SegRosError, match='expected a CUDA device'):
        ort_providers('npu', gpu_ort)


def test_onnxruntime_cpu_session_has_no_tensorrt_provider(tmp_path: Path) -> None:
    be = backends.OrtBackend(_tiny_onnx(tmp_path / 'm.onnx'), device='cpu')
    assert be.device == 'CPUExecutionProvider'
    batch = np.random.default_rng(0).integers(0, 256, (1, 8, 16, 3), dtype=np.uint8)
    ids, _ = be.infer(batch)
    np.testing.assert_array_equal(ids, batch.max(axis=3))


# ------------------------------------------------------------------ 7: int8 calibration
def _frames_folder(folder: Path, n: int, bad: int | None = None) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        path = folder / f'{i:03d}.png'
        if i == bad:
            path.write_bytes(b'not a png')
        else:
            cv2.imwrite(str(path), rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    return folder


def _tensorrt_calibrates(calibrator: CalibrationRun) -> None:
    """What TensorRT's builder does with a calibrator, including its trampoline's habit of
    turning a Python exception in ``get_batch`` into "no more data"."""
    if calibrator.read_calibration_cache():
        return
    batch = calibrator.get_batch_size()
    assert batch >= 1
    while True:
        try:
            pointers = calibrator.get_batch(['images'])
        except Exception:  # noqa: BLE001 - the trampoline swallows it
            pointers = None
        if not pointers:
            break
    calibrator.write_calibration_cache(b'TRT-8600-EntropyCalibration2\nimages: 3c010a14\n')


class _Uploads:
    """The device copy, on the host: records every batch TensorRT was handed."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def __call__(self, batch: np.ndarray) -> int:
        self.batches.append(batch.copy())
        return 0x7f0000000000 + len(self.batches)


def test_calibration_batch_is_the_onnx_batch(tmp_path: Path) -> None:
    static = _tiny_onnx(tmp_path / 'static.onnx', batch=1)
    dynamic = _tiny_onnx(tmp_path / 'dynamic.onnx', batch='n')
    assert ec.calibration_batch(ec.onnx_input_shape(static)[0]) == 1
    assert ec.calibration_batch(ec.onnx_input_shape(_tiny_onnx(tmp_path / 'b2.onnx', 2))[0]) == 2
    assert ec.calibration_batch(ec.onnx_input_shape(dynamic)[0]) == 8
    assert ec.calibration_batch(None, 4) == 4
    with pytest.raises(SegRosError, match='fixed batch of 1'):
        ec.calibration_batch(1, 8)
    with pytest.raises(SegRosError, match='>= 1'):
        ec.calibration_batch(None, 0)


def test_static_batch_calibration_feeds_every_frame(tmp_path: Path) -> None:
    """Batch-1 network: 12 frames -> 12 calls of one frame each, all of them used."""
    folder = _frames_folder(tmp_path / 'frames', 12)
    data = CalibrationData(folder, (8, 16), num_frames=12,
                           batch_size=ec.calibration_batch(1), resize_mode='letterbox')
    uploads = _Uploads()
    run = CalibrationRun(data, tmp_path / 'cal' / 'x.cache', uploads)
    _tensorrt_calibrates(run)
    run.raise_if_failed()
    assert run.frames_consumed == 12 and len(uploads.batches) == 12
    assert all(b.shape == (1, 8, 16, 3) and b.dtype == np.uint8 for b in uploads.batches)
    assert run.wrote_cache and (tmp_path / 'cal' / 'x.cache').read_bytes().startswith(b'TRT')
    # letterbox reached the frames: 20x30 into 8x16 leaves padded columns at the sides
    fill = np.array(data.fill, np.uint8)
    assert (uploads.batches[0][0, :, 0] == fill).all()
    # the next build reads the cache and pulls no frame
    again = CalibrationRun(data, tmp_path / 'cal' / 'x.cache', _Uploads())
    _tensorrt_calibrates(again)
    again.raise_if_failed()
    assert again.used_cache and again.batches == 0


def test_calibration_error_is_kept_reraised_and_writes_no_cache(tmp_path: Path) -> None:
    folder = _frames_folder(tmp_path / 'frames', 10, bad=5)
    data = CalibrationData(folder, (8, 16), num_frames=10, batch_size=2)
    cache = tmp_path / 'cal' / 'x.cache'
    run = CalibrationRun(data, cache, _Uploads())
    _tensorrt_calibrates(run)  # TensorRT sees "no more data" after 2 batches
    assert run.frames_consumed == 4
    assert not cache.exists() and not run.wrote_cache
    with pytest.raises(SegRosError, match='failed after 4 frames') as info:
        run.raise_if_failed()
    assert isinstance(info.value.__cause__, SegRosError)
    assert '005.png' in str(info.value.__cause__)
    # a failing upload (device copy) is kept the same way
    boom = CalibrationRun(CalibrationData(folder, (8, 16), num_frames=4, batch_size=1), cache,
                          lambda batch: 1 // 0)
    _tensorrt_calibrates(boom)
    with pytest.raises(SegRosError, match='ZeroDivisionError'):
        boom.raise_if_failed()
    assert not cache.exists()


def test_calibration_run_without_any_frame_is_an_error(tmp_path: Path) -> None:
    data = CalibrationData(_frames_folder(tmp_path / 'f', 2), (8, 16), batch_size=1)
    run = CalibrationRun(data, tmp_path / 'c.cache', _Uploads())
    with pytest.raises(SegRosError, match='no frames'):
        run.raise_if_failed()  # TensorRT never asked


def test_calibration_source_is_checked_before_building(tmp_path: Path) -> None:
    data = CalibrationData(_frames_folder(tmp_path / 'bad', 3, bad=0), (8, 16), batch_size=1)
    with pytest.raises(SegRosError, match='not a readable image'):
        data.check()
    assert CalibrationData(_frames_folder(tmp_path / 'ok', 3), (8, 16)).check() == (8, 16)
    with pytest.raises(SegRosError, match='resize_mode'):
        CalibrationData(tmp_path / 'ok', (8, 16), resize_mode='crop')
    from seg_ros.bag.io import BagWriter

    bag = tmp_path / 'drive'
    with BagWriter(bag, storage='mcap') as writer:
        writer.write_image('/cam', np.zeros((10, 20, 3), np.uint8), 'rgb8', 10**8, 'cam')
    with pytest.raises(SegRosError):
        CalibrationData(bag, (8, 16), topic='/nope').check()
    assert CalibrationData(bag, (8, 16), topic='/cam').check() == (8, 16)


# ------------------------------------------------------------------ 8 / 11 / 12: build_or_load
def _fake_trt_install(monkeypatch: pytest.MonkeyPatch, built: list[dict]) -> None:
    """TensorRT 10.3 'installed', one Orin; ``build_engine`` (the TensorRT call) returns
    bytes. Only the TensorRT / CUDA boundary is replaced: the cache logic runs as is."""
    monkeypatch.setattr(trt_backend, '_TRT_OK', True)
    monkeypatch.setattr(trt_backend, 'trt', SimpleNamespace(__version__='10.3.0'),
                        raising=False)
    monkeypatch.setattr(trt_backend, 'resolve_cuda_device',
                        lambda device: torch.device('cuda', 0))
    monkeypatch.setattr(trt_backend, 'gpu_info', lambda device='cuda': GPU)

    def build_engine(onnx_path, key, calib, calib_cache, timing_cache, workspace_mb, device):
        built.append({'key': key, 'timing': timing_cache, 'device': device, 'calib': calib})
        return trt_backend.BuildResult(engine=b'ENGINE' + key.digest().encode(),
                                       timing_cache=b'TIMING')

    monkeypatch.setattr(trt_backend, 'build_engine', build_engine)


def test_timing_cache_lives_in_the_engine_cache_and_never_costs_the_engine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    share = tmp_path / 'share'
    onnx_path = _tiny_onnx(share / 'm.onnx')
    before = sorted(share.iterdir())
    built: list[dict] = []
    _fake_trt_install(monkeypatch, built)
    cache = tmp_path / 'cache'
    order = []
    real_write = ec.atomic_write_bytes

    def write(path, data):
        order.append(Path(path).parent.name)
        if Path(path).parent.name == 'timing':
            raise PermissionError(13, 'Permission denied', str(path))
        real_write(path, data)

    monkeypatch.setattr(ec, 'atomic_write_bytes', write)
    engine = trt_backend.build_or_load(onnx_path, 'fp32', cache)
    assert engine.is_file() and ec.stale_reason(engine, None) is None
    assert order == ['engines', 'engines', 'timing']  # engine, sidecar, then timing cache
    assert built[0]['timing'].parent == cache / 'timing'
    assert '16sm' in built[0]['timing'].name and '10.3.0' in built[0]['timing'].name
    assert sorted(share.iterdir()) == before  # nothing written beside the ONNX
    monkeypatch.setattr(ec, 'atomic_write_bytes', real_write)
    assert ec.save_timing_cache(cache / 'timing' / 't.cache', b'T')
    assert (cache / 'timing' / 't.cache').read_bytes() == b'T'
    # the cached engine is used the next time: no second build
    assert trt_backend.build_or_load(onnx_path, 'fp32', cache) == engine and len(built) == 1


def test_default_engine_cache_is_not_the_onnx_folder(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('SEG_ROS_CACHE', str(tmp_path / 'xdg'))
    onnx_path = _tiny_onnx(tmp_path / 'share' / 'm.onnx')
    _fake_trt_install(monkeypatch, [])
    engine = trt_backend.build_or_load(onnx_path, 'fp16')
    assert engine.parent == tmp_path / 'xdg' / 'engines'


def test_engine_key_has_opt_batch_tf32_sm_count_and_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[dict] = []
    _fake_trt_install(monkeypatch, built)
    dyn = _tiny_onnx(tmp_path / 'd.onnx', batch='n')
    trt_backend.build_or_load(dyn, 'fp32', tmp_path, max_batch=4)
    key = built[-1]['key']
    assert (key.min_batch, key.opt_batch, key.max_batch) == (1, 4, 4)  # opt = max
    assert key.tf32 is False and (key.sm_count, key.total_memory_mb) == (16, 30536)
    trt_backend.build_or_load(dyn, 'fp32', tmp_path, max_batch=4, opt_batch=2,
                              allow_tf32=True)
    assert built[-1]['key'].opt_batch == 2 and built[-1]['key'].tf32 is True
    with pytest.raises(SegRosError, match='opt batch 5'):
        trt_backend.build_or_load(dyn, 'fp32', tmp_path, max_batch=4, opt_batch=5)
    # two Orin modules with the same name and compute capability are told apart
    side = ec.Sidecar(key=key, meta=ModelMeta(model='m'), engine_sha256='')
    assert ec.foreign_reason(side, '10.3.0', GPU) is None
    nx = ec.GpuInfo('Orin', '8.7', 8, 15389)
    assert '8 SMs' in ec.foreign_reason(side, '10.3.0', nx)
    assert ec.make_engine_key(dyn, 'fp32', '10.3.0', nx, max_batch=4).digest() != key.digest()
    old_side = ec.Sidecar(key=replace(key, sm_count=0, total_memory_mb=0),
                          meta=ModelMeta(model='m'), engine_sha256='')
    assert 'predates' in ec.foreign_reason(old_side, '10.3.0', GPU)


def test_build_engine_on_start_false_names_the_command(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect

    assert 'build' in inspect.signature(trt_backend.TrtBackend.from_onnx).parameters
    built: list[dict] = []
    _fake_trt_install(monkeypatch, built)
    onnx_path = _tiny_onnx(tmp_path / 'm.onnx', batch='n')
    with pytest.raises(SegRosError) as info:
        trt_backend.build_or_load(onnx_path, 'fp16', tmp_path / 'c', max_batch=2,
                                  device='cuda:1', build=False)
    msg = str(info.value)
    assert '\n' not in msg and 'engine file missing' in msg and not built
    assert (f'`seg-ros build-engine {onnx_path} --precision fp16 --cache-dir {tmp_path / "c"} '
            f'--max-batch 2 --device cuda:1`') in msg
    # once built, build=False loads it
    engine = trt_backend.build_or_load(onnx_path, 'fp16', tmp_path / 'c', max_batch=2)
    assert trt_backend.build_or_load(onnx_path, 'fp16', tmp_path / 'c', max_batch=2,
                                     build=False) == engine


def test_int8_build_uses_the_onnx_batch_and_checks_frames_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[dict] = []
    _fake_trt_install(monkeypatch, built)
    onnx_path = _tiny_onnx(tmp_path / 'm.onnx', batch=1)
    with pytest.raises(SegRosError, match='not a readable image'):
        trt_backend.build_or_load(onnx_path, 'int8', tmp_path,
                                  calib=_frames_folder(tmp_path / 'bad', 3, bad=0))
    assert not built  # refused before any TensorRT work
    frames = _frames_folder(tmp_path / 'ok', 5)
    trt_backend.build_or_load(onnx_path, 'int8', tmp_path, calib=frames,
                              resize_mode='letterbox')
    calib = built[-1]['calib']
    assert calib.batch_size == 1 and calib.resize_mode == 'letterbox'
    trt_backend.build_or_load(_tiny_onnx(tmp_path / 'd.onnx', batch='n'), 'int8', tmp_path,
                              calib=frames, calib_batch=4)
    assert built[-1]['calib'].batch_size == 4


def test_segmenter_and_cli_pass_resize_mode_and_flags(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from seg_ros.cli import main
    from seg_ros.runtime.segmenter import Segmenter

    seen: dict = {}

    def from_onnx(onnx_path, **kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(trt_backend.TrtBackend, 'from_onnx', staticmethod(from_onnx))
    onnx_path = _tiny_onnx(tmp_path / 'm.onnx')
    with pytest.raises(_Stop):
        Segmenter.from_file(onnx_path, backend='tensorrt', device='cuda:1',
                            resize_mode='letterbox', build=False, engine_cache_dir=tmp_path)
    assert seen['resize_mode'] == 'letterbox' and seen['build'] is False
    assert seen['device'] == 'cuda:1' and seen['cache_dir'] == tmp_path

    def build_or_load(onnx, **kwargs):
        seen.clear()
        seen.update(kwargs)
        return tmp_path / 'e.engine'

    monkeypatch.setattr(trt_backend, 'build_or_load', build_or_load)
    assert main(['build-engine', str(onnx_path), '--precision', 'int8', '--calib',
                 str(tmp_path), '--resize-mode', 'letterbox', '--opt-batch', '2',
                 '--allow-tf32', '--device', 'cuda:1', '--calib-batch', '4']) == 0
    assert seen['resize_mode'] == 'letterbox' and seen['opt_batch'] == 2
    assert seen['allow_tf32'] is True and seen['device'] == 'cuda:1'
    assert seen['calib_batch'] == 4


# ------------------------------------------------------------------ 11: memory, input dtype
@pytest.mark.parametrize('version,expected', [('8.5.2', 100), ('8.6.1', 100), ('10.0.1', 100),
                                              ('10.3.0', 200), ('10.13.0', 200)])
def test_engine_memory_uses_the_api_of_the_version(monkeypatch: pytest.MonkeyPatch,
                                                   version: str, expected: int) -> None:
    monkeypatch.setattr(trt_backend, '_TRT_OK', True)
    monkeypatch.setattr(trt_backend, 'trt', SimpleNamespace(__version__=version),
                        raising=False)

    class Engine:  # only the attribute of the version exists
        def __getattr__(self, name: str) -> int:
            v2 = tuple(int(p) for p in version.split('.')[:2]) >= (10, 1)
            if name == ('device_memory_size_v2' if v2 else 'device_memory_size'):
                return expected
            raise AttributeError(name)

    assert trt_backend.TrtBackend._engine_device_memory(Engine()) == expected


def test_engine_refuses_a_batch_of_the_wrong_dtype() -> None:
    be = trt_backend.TrtBackend.__new__(trt_backend.TrtBackend)  # no engine: checks only
    be.input_size, be.min_batch, be.max_batch, be.has_confidence = (8, 16), 1, 1, True
    for bad in (np.zeros((1, 8, 16, 3), np.float32), np.zeros((1, 8, 16, 3), np.int64)):
        with pytest.raises(SegRosError, match='uint8'):
            be.infer(bad)
    with pytest.raises(SegRosError, match='uint8'):
        be.infer([[0]])  # type: ignore[arg-type]


# ------------------------------------------------------------------ 11 + issue 15 (5, 8)
@pytest.fixture()
def fast_export(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The real export, counted (a tiny regseg48 at 32x64 keeps it quick)."""
    import seg_ros.runtime.export as export_mod

    calls: list[Path] = []
    real = export_mod.export_onnx

    def counted(*args, **kwargs):
        calls.append(Path(args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(export_mod, 'export_onnx', counted)
    return calls


def test_bare_name_is_refused_for_tensorrt(tmp_path: Path) -> None:
    from seg_ros.runtime.segmenter import _export_cached

    with pytest.raises(SegRosError, match='random weights'):
        _export_cached('regseg48', None, (32, 64), False, tmp_path, tensorrt=True)
    assert not (tmp_path / 'onnx').exists()


@pytest.mark.slow
def test_bare_name_export_is_cached_validated_and_repaired(
        tmp_path: Path, fast_export: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from seg_ros.runtime.segmenter import _export_cached, cached_export_problem

    systmp = tmp_path / 'systmp'  # this test's own system temp folder
    systmp.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(systmp))
    old = time.time() - 2 * 3600
    legacy, other = systmp / 'seg_ros_ab12cd_3', systmp / 'seg_ros_zz99yy88'
    for folder, name in ((legacy, 'regseg48_64x128.onnx'), (other, 'notes.txt')):
        folder.mkdir()
        (folder / name).write_bytes(b'x')
        os.utime(folder, (old, old))
    cache = tmp_path / 'cache'
    first = _export_cached('regseg48', None, (32, 64), False, cache)
    assert first.parent == cache / 'onnx' and cached_export_problem(first) is None
    assert _export_cached('regseg48', None, (32, 64), False, cache) == first
    assert len(fast_export) == 1  # second start: no export, same file, same sha
    # no temp export per run; an old per-run export of earlier versions is removed
    assert sorted(p.name for p in systmp.glob('seg_ros*')) == [other.name]
    tmp_path = cache
    # truncated (disk full, killed copy): detected and exported again
    data = first.read_bytes()
    first.write_bytes(data[:len(data) // 2])
    assert 'truncated' in cached_export_problem(first)
    assert _export_cached('regseg48', None, (32, 64), False, tmp_path) == first
    assert len(fast_export) == 2 and cached_export_problem(first) is None
    # same size, other bytes
    flipped = bytearray(first.read_bytes())
    flipped[-1] ^= 0xFF
    first.write_bytes(bytes(flipped))
    assert 'sha256' in cached_export_problem(first)
    # an export killed before its sidecar
    first.with_name(first.name + '.json').unlink()
    assert 'interrupted' in cached_export_problem(first)
    assert _export_cached('regseg48', None, (32, 64), False, tmp_path) == first
    assert len(fast_export) == 3
    import onnxruntime as ort

    ort.InferenceSession(str(first), providers=['CPUExecutionProvider'])  # loads


def test_stale_temp_files_of_killed_runs_are_cleaned(tmp_path: Path) -> None:
    from seg_ros.runtime.segmenter import clean_stale_temps

    folder = tmp_path / 'onnx'
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    old = time.time() - 2 * 3600
    stale = [folder / f'.m.onnx.pid{dead.pid}.tmp', folder / '.m.onnx.abc123.tmp',
             folder / 'tmpk2j3h4']
    stale[0].write_bytes(b'x')
    stale[1].write_bytes(b'x')
    stale[2].mkdir()
    (stale[2] / 'model.onnx').write_bytes(b'partial')
    os.utime(stale[1], (old, old))
    os.utime(stale[2], (old, old))
    keep = [folder / f'.n.onnx.pid{os.getpid()}.tmp',  # ours, in progress
            folder / '.fresh.onnx.xyz.tmp',          # someone else's, just started
            folder / 'tmpnew',                       # an export folder in progress
            folder / 'model.onnx', folder / 'model.onnx.json']
    for p in keep:
        if p.name == 'tmpnew':
            p.mkdir()
        else:
            p.write_bytes(b'x')
    removed = clean_stale_temps(folder)
    assert sorted(removed) == sorted(stale)
    assert all(not p.exists() for p in stale) and all(p.exists() for p in keep)


def test_cached_export_sidecar_is_json_with_size_and_sha(tmp_path: Path,
                                                         fast_export: list[Path]) -> None:
    from seg_ros.runtime.segmenter import _export_cached

    out = _export_cached('regseg48', None, (32, 64), False, tmp_path)
    record = json.loads(out.with_name(out.name + '.json').read_text())
    assert record['size'] == out.stat().st_size
    assert record['sha256'] == ec.file_sha256(out)


def test_trt_backend_imports_without_opencv_or_rclpy(tmp_path: Path) -> None:
    """A bare CUDA machine (benchmarks/gpu_check.py) has neither OpenCV nor rclpy."""
    from seg_ros.runtime import calibration, preprocess

    assert calibration.RESIZE_MODES == preprocess.RESIZE_MODES
    code = ('import sys\n'
            'sys.modules["cv2"] = None\n'  # import cv2 -> ImportError
            'sys.modules["rclpy"] = None\n'
            'import seg_ros.runtime.trt_backend, seg_ros.runtime.engine_cache\n'
            'print("ok")\n')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0 and proc.stdout.strip() == 'ok', proc.stderr


def test_build_engine_command_is_what_the_cli_parses() -> None:
    import argparse
    import shlex

    from seg_ros.arguments import resolve_model
    from seg_ros.runtime.commands import _build_args

    cmd = trt_backend.build_engine_command('/share/my model.onnx', 'int8', '/c', max_batch=4,
                                           device='cuda:1', calib='/data/drive',
                                           calib_topic='/cam', resize_mode='letterbox',
                                           opt_batch=2, allow_tf32=False, out='/e.engine')
    assert cmd.startswith("seg-ros build-engine '/share/my model.onnx' --precision int8")
    parser = argparse.ArgumentParser()
    _build_args(parser)
    args = parser.parse_args(shlex.split(cmd)[2:])
    resolve_model(args)  # what `seg-ros` does after parsing: positional or --model
    assert (args.model, args.precision, args.out, args.max_batch, args.opt_batch) == \
        ('/share/my model.onnx', 'int8', '/e.engine', 4, 2)
    assert (args.device, args.calib, args.calib_topic, args.resize_mode) == \
        ('cuda:1', '/data/drive', '/cam', 'letterbox')
    assert args.cache_dir is None  # --out names the engine
