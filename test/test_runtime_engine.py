"""TensorRT logic that runs without TensorRT: cache keys, stale engines, calibration, typing."""
from __future__ import annotations

from dataclasses import replace
import json
from pathlib import Path
import subprocess
import sys

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper
import pytest

from seg_ros.errors import SegRosError
from seg_ros.metadata import ModelMeta
from seg_ros.runtime import engine_cache as ec
from seg_ros.runtime.backends import META_KEY, tensorrt_importable
from seg_ros.runtime.calibration import CalibrationData

KEY = ec.EngineKey(onnx_sha256='a' * 64, trt_version='10.13.0.35', gpu_name='NVIDIA Orin',
                   compute_capability='8.7', precision='fp16', input_shape=(512, 1024, 3))


def _tiny_onnx(path: Path, batch: int | str = 1, h: int = 8, w: int = 16,
               fp16: bool = False) -> Path:
    """A minimal graph with the exported interface: uint8 (N, H, W, 3) -> uint8 ids."""
    inp = helper.make_tensor_value_info('images', TensorProto.UINT8, [batch, h, w, 3])
    out = helper.make_tensor_value_info('ids', TensorProto.UINT8, [batch, h, w])
    axes = helper.make_tensor('axes', TensorProto.INT64, [1], [3])
    nodes = [helper.make_node('ReduceMax', ['images', 'axes'], ['ids'], keepdims=0)]
    graph = helper.make_graph(nodes, 'tiny', [inp], [out], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)])
    for key, value in ((META_KEY, ModelMeta(model='tiny', input_size=[h, w]).to_json()),
                       ('seg_ros.precision', 'fp16' if fp16 else 'fp32')):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


# ------------------------------------------------------------------ keys
@pytest.mark.parametrize('field,value', [
    ('onnx_sha256', 'b' * 64), ('trt_version', '8.6.1'), ('gpu_name', 'NVIDIA RTX 4090'),
    ('compute_capability', '8.9'), ('precision', 'int8'), ('input_shape', (512, 1025, 3)),
    ('max_batch', 4), ('calib_id', 'feedbeef')])
def test_engine_key_changes_with_each_ingredient(field: str, value: object) -> None:
    other = replace(KEY, **{field: value})
    assert other.digest() != KEY.digest()
    assert KEY.differences(other)
    assert ec.cached_engine_path('/c', 'm.onnx', other) != ec.cached_engine_path('/c', 'm.onnx',
                                                                                  KEY)


def test_engine_key_round_trip_and_validation() -> None:
    assert ec.EngineKey.from_dict(json.loads(json.dumps(KEY.to_dict()))) == KEY
    assert KEY.digest() == replace(KEY).digest()  # deterministic
    with pytest.raises(SegRosError, match='precision'):
        replace(KEY, precision='fp64')
    with pytest.raises(SegRosError, match='batch range'):
        replace(KEY, min_batch=4, max_batch=2)
    with pytest.raises(SegRosError, match='incomplete'):
        ec.EngineKey.from_dict({'trt_version': '10'})


def test_make_engine_key_from_onnx(tmp_path: Path) -> None:
    static = _tiny_onnx(tmp_path / 'static.onnx')
    dynamic = _tiny_onnx(tmp_path / 'dynamic.onnx', batch='batch')
    k = ec.make_engine_key(static, 'fp32', '10.13', 'GPU', '8.7')
    assert k.input_shape == (8, 16, 3) and (k.min_batch, k.max_batch) == (1, 1)
    assert k.onnx_sha256 == ec.file_sha256(static)
    kd = ec.make_engine_key(dynamic, 'fp32', '10.13', 'GPU', '8.7', max_batch=4)
    assert (kd.min_batch, kd.max_batch) == (1, 4)
    with pytest.raises(SegRosError, match='dynamic-batch'):
        ec.make_engine_key(static, 'fp32', '10.13', 'GPU', '8.7', max_batch=4)
    # calibration identity only matters for int8
    assert ec.make_engine_key(static, 'fp16', '10', 'G', '8.7', calib_id='x').calib_id == ''
    assert ec.make_engine_key(static, 'int8', '10', 'G', '8.7', calib_id='x').calib_id == 'x'
    assert ec.onnx_precision(static) == 'fp32'
    assert ec.onnx_precision(_tiny_onnx(tmp_path / 'h.onnx', fp16=True)) == 'fp16'


def test_shape_handling(tmp_path: Path) -> None:
    assert ec.onnx_input_shape(_tiny_onnx(tmp_path / 'a.onnx', batch=2)) == (2, (8, 16, 3))
    assert ec.onnx_input_shape(_tiny_onnx(tmp_path / 'b.onnx', batch='n')) == (None, (8, 16, 3))
    # opt defaults to the max batch (a batching node runs full batches when it is behind)
    assert ec.profile_shapes((8, 16, 3), 1, 4) == ((1, 8, 16, 3), (4, 8, 16, 3), (4, 8, 16, 3))
    assert ec.profile_shapes((8, 16, 3), 1, 4, opt_batch=2)[1] == (2, 8, 16, 3)
    assert ec.profile_shapes((8, 16, 3), 1, 4, opt_batch=9)[1] == (4, 8, 16, 3)
    with pytest.raises(SegRosError):
        ec.profile_shapes((8, 16, 3), 3, 2)
    bad = _tiny_onnx(tmp_path / 'c.onnx')
    model = onnx.load(str(bad))
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT
    onnx.save(model, str(bad))
    with pytest.raises(SegRosError, match='uint8'):
        ec.onnx_input_shape(bad)


# ------------------------------------------------------------------ stale / foreign engines
def _write(tmp_path: Path, key: ec.EngineKey = KEY, data: bytes = b'engine-bytes') -> Path:
    path = ec.cached_engine_path(tmp_path, 'model.onnx', key)
    meta = ModelMeta(model='regseg48')
    return ec.write_engine(path, data, ec.Sidecar(key=key, meta=meta, engine_sha256=''))


def test_valid_engine_is_reused(tmp_path: Path) -> None:
    path = _write(tmp_path)
    assert ec.stale_reason(path, KEY) is None
    side = ec.read_sidecar(path)
    assert side.key == KEY and side.meta.model == 'regseg48'
    assert side.engine_sha256 == ec.file_sha256(path)


def test_stale_engine_is_detected(tmp_path: Path) -> None:
    path = _write(tmp_path)
    newer = replace(KEY, trt_version='10.14.1')
    assert 'trt_version' in ec.stale_reason(path, newer)
    assert 'different ONNX' in ec.stale_reason(path, replace(KEY, onnx_sha256='c' * 64))
    path.write_bytes(b'engine-bytes but truncated or replaced')
    assert 'checksum' in ec.stale_reason(path, KEY)
    ec.sidecar_path(path).unlink()
    assert 'no sidecar' in ec.stale_reason(path, KEY)
    assert ec.stale_reason(tmp_path / 'none.engine', KEY) == 'engine file missing'
    ec.sidecar_path(path).write_text('{"format": "something else"}')
    assert 'not a seg_ros engine sidecar' in ec.stale_reason(path, KEY)


def test_foreign_engine_is_detected(tmp_path: Path) -> None:
    side = ec.read_sidecar(_write(tmp_path))
    assert ec.foreign_reason(side, '10.13.0.35', 'NVIDIA Orin', '8.7') is None
    reason = ec.foreign_reason(side, '8.6.1', 'NVIDIA GeForce RTX 3080', '8.6')
    assert 'TensorRT 10.13.0.35' in reason and 'NVIDIA Orin' in reason


# ------------------------------------------------------------------ calibration data
def test_calibration_from_image_folder(tmp_path: Path) -> None:
    folder = tmp_path / 'frames'
    (folder / 'sub').mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(7):
        img = rng.integers(0, 256, (30 + i, 50, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / ('sub' if i % 2 else '') / f'{i:03d}.png'), img)
    (folder / 'notes.txt').write_text('not an image')
    data = CalibrationData(folder, (16, 32), num_frames=5, batch_size=2)
    assert len(data.files) == 5
    batches = list(data.batches())
    assert len(batches) == 2  # 5 frames, batch 2: the partial last batch is dropped
    assert all(b.shape == (2, 16, 32, 3) and b.dtype == np.uint8 for b in batches)
    # frames are RGB (converted from the BGR files) and resized like at run time
    first = cv2.cvtColor(cv2.imread(str(data.files[0])), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(batches[0][0], cv2.resize(first, (32, 16),
                                                            interpolation=cv2.INTER_LINEAR))
    ident = data.identity()
    assert ident == CalibrationData(folder, (16, 32), num_frames=5, batch_size=2).identity()
    assert ident != CalibrationData(folder, (16, 64), num_frames=5).identity()
    assert ident != CalibrationData(folder, (16, 32), num_frames=3).identity()
    assert data.cache_path(tmp_path, 'f' * 64).name.endswith(f'{ident}-b2.cache')
    few = CalibrationData(folder, (16, 32), num_frames=1, batch_size=4)
    assert next(few.batches()).shape == (4, 16, 32, 3)  # a lone short batch is padded


def test_calibration_errors(tmp_path: Path) -> None:
    with pytest.raises(SegRosError, match='not found'):
        CalibrationData(tmp_path / 'missing', (8, 8))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(SegRosError, match='no images'):
        CalibrationData(tmp_path / 'empty', (8, 8))


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_calibration_from_rosbag(tmp_path: Path, storage: str) -> None:
    from seg_ros.bag.io import BagWriter

    bag = tmp_path / 'drive'
    with BagWriter(bag, storage=storage) as writer:
        for i in range(6):
            rgb = np.zeros((20, 40, 3), np.uint8)
            rgb[..., 0] = 10 * i  # red channel encodes the frame number
            if i % 2:  # odd frames as bgr8: must come back as RGB
                writer.write_image('/cam/image', np.ascontiguousarray(rgb[..., ::-1]), 'bgr8',
                                   stamp_ns=(i + 1) * 10**8, frame_id='cam')
            else:
                writer.write_image('/cam/image', rgb, 'rgb8', stamp_ns=(i + 1) * 10**8,
                                   frame_id='cam')
        writer.write_image('/other', np.zeros((4, 4, 3), np.uint8), 'rgb8', 10**9, 'x')
    with pytest.raises(SegRosError, match='--calib-topic'):
        next(CalibrationData(bag, (10, 20), num_frames=3, batch_size=1).batches())
    data = CalibrationData(bag, (10, 20), num_frames=3, batch_size=1, topic='/cam/image')
    assert data.is_bag
    batches = list(data.batches())
    assert [int(b[0, 0, 0, 0]) for b in batches] == [0, 20, 50]  # frames 0, 2, 5 (evenly)
    assert int(batches[2][0, 0, 0, 2]) == 0  # frame 5 was bgr8: decoded to RGB
    assert data.identity() != CalibrationData(bag, (10, 20), num_frames=3,
                                              topic='/other').identity()


# ------------------------------------------------------------------ type check of the TRT module
def test_typecheck_catches_tensorrt_api_misuse(tmp_path: Path) -> None:
    pytest.importorskip('mypy')
    from importlib import metadata

    try:
        metadata.distribution('tensorrt-stubs')
    except metadata.PackageNotFoundError:
        pytest.skip('tensorrt-stubs not installed (make setup installs it)')
    good = tmp_path / 'good.py'
    good.write_text('from __future__ import annotations\n\nimport tensorrt as trt\n\n\n'
                    'def run(context: trt.IExecutionContext, stream: int) -> bool:\n'
                    '    return bool(context.execute_async_v3(stream))\n')
    bad = tmp_path / 'bad.py'
    bad.write_text(good.read_text().replace('execute_async_v3', 'execute_async_v4'))
    typings = tmp_path / 'typings'
    cmd = [sys.executable, '-m', 'seg_ros.runtime.typecheck', '--typings', str(typings)]
    ok = subprocess.run([*cmd, str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    res = subprocess.run([*cmd, str(bad)], capture_output=True, text=True)
    assert res.returncode != 0
    assert 'execute_async_v4' in res.stdout


def test_stub_repairs() -> None:
    from seg_ros.runtime.typecheck import fix_default_order, fix_keyword_params

    text, n = fix_keyword_params('class A:\n    def f(self, in: list[int], out: int) -> None:\n'
                                 '        ...\n    x = [a for a in b]\n')
    assert n == 1 and 'in_: list[int]' in text and 'for a in b' in text
    src = 'def g(a: int, b: int = None, c: str) -> None:\n    ...\n'
    fixed, n = fix_default_order(src)
    assert n == 1 and 'c: str = ...' in fixed


def test_tensorrt_not_taken_for_installed_when_only_stubs() -> None:
    """The stubs leave a bare tensorrt/ folder: that must not count as TensorRT."""
    try:
        import tensorrt
    except ImportError:
        tensorrt = None
    real = tensorrt is not None and hasattr(tensorrt, 'Builder')
    assert tensorrt_importable() == real


@pytest.mark.skipif(tensorrt_importable(), reason='TensorRT is installed here')
def test_tensorrt_backend_without_tensorrt_is_a_clear_error(tmp_path: Path) -> None:
    from seg_ros.runtime import trt_backend
    from seg_ros.runtime.segmenter import Segmenter

    assert not trt_backend.available()
    onnx_path = _tiny_onnx(tmp_path / 'm.onnx')
    with pytest.raises(SegRosError, match='TensorRT is not installed'):
        trt_backend.build_or_load(onnx_path, 'fp16', tmp_path)
    with pytest.raises(SegRosError, match='TensorRT is not installed'):
        Segmenter.from_file(onnx_path, backend='tensorrt', device='cpu')
