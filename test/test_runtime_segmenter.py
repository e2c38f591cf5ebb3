"""Runtime: export, ONNX Runtime vs torch agreement, letterbox, colours, bad inputs."""
from __future__ import annotations

from pathlib import Path
import shutil

import cv2
import numpy as np
import pytest
import torch

from seg_ros.errors import SegRosError
from seg_ros.metadata import CAMVID_PALETTE, CITYSCAPES_PALETTE, ModelMeta
from seg_ros.models import create_model
from seg_ros.models.checkpoint import save_checkpoint
from seg_ros.runtime import colorize
from seg_ros.runtime.backends import OrtBackend, read_onnx_meta, resolve_backend
from seg_ros.runtime.export import export_onnx
from seg_ros.runtime.preprocess import Geometry, compute_geometry, prepare, restore
from seg_ros.runtime.segmenter import SegmentationResult, Segmenter

SIZE = (64, 128)


@pytest.fixture(scope='module')
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A seeded regseg48 as a checkpoint and as a dynamic-batch ONNX export (64x128)."""
    root = tmp_path_factory.mktemp('runtime')
    torch.manual_seed(0)
    net = create_model('regseg48')
    meta = ModelMeta.for_dataset('regseg48', input_size=list(SIZE))
    ckpt = root / 'regseg48.pt'
    save_checkpoint(ckpt, net, meta)
    onnx_path = export_onnx(net, meta, root / 'regseg48.onnx', size=SIZE, dynamic_batch=True)
    return {'ckpt': ckpt, 'onnx': onnx_path, 'root': root}


@pytest.fixture(scope='module')
def segs(model_files: dict[str, Path]) -> dict[str, Segmenter]:
    out = {'torch': Segmenter.from_file(model_files['ckpt'], backend='torch', device='cpu'),
           'onnxruntime': Segmenter.from_file(model_files['onnx'], backend='onnxruntime',
                                              device='cpu', threads=1)}
    yield out
    for s in out.values():
        s.close()


def _frames(n: int, size: tuple[int, int] = (96, 192)) -> list[np.ndarray]:
    """Real-looking frames: the synthetic drive when available, else smooth structure."""
    try:
        from seg_ros.data.synthetic import SyntheticDrive

        drive = SyntheticDrive(size=size, seed=3)
        return [drive.frame(i * 7)[0] for i in range(n)]
    except ImportError:  # pragma: no cover - data room not merged yet
        yy, xx = np.mgrid[0:size[0], 0:size[1]].astype(np.float32)
        return [np.clip(np.stack([128 + 100 * np.sin(xx / (9 + i) + yy / 17),
                                  128 + 90 * np.cos(yy / (7 + i)), xx % 200], -1), 0,
                        255).astype(np.uint8) for i in range(n)]


# ------------------------------------------------------------------ export + metadata
def test_metadata_round_trip_through_onnx(model_files: dict[str, Path]) -> None:
    import onnx

    meta = read_onnx_meta(model_files['onnx'])
    assert meta == ModelMeta.for_dataset('regseg48', input_size=list(SIZE))
    graph = onnx.load(str(model_files['onnx'])).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [64, 128, 3]
    assert [o.name for o in graph.output] == ['ids', 'confidence']
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.UINT8 for o in graph.output)
    seg = Segmenter.from_file(model_files['onnx'], backend='onnxruntime', device='cpu')
    assert seg.meta == meta and seg.input_size == SIZE and seg.backend_name == 'onnxruntime'


def test_onnx_without_metadata_is_rejected(model_files: dict[str, Path], tmp_path: Path) -> None:
    import onnx

    proto = onnx.load(str(model_files['onnx']))
    del proto.metadata_props[:]
    bare = tmp_path / 'bare.onnx'
    onnx.save(proto, str(bare))
    with pytest.raises(SegRosError, match='no seg_ros metadata'):
        OrtBackend(bare)


# ------------------------------------------------------------------ backend agreement
def test_torch_and_onnxruntime_agree(segs: dict[str, Segmenter]) -> None:
    frames = _frames(4)
    agree = total = 0
    for frame in frames:
        a = segs['torch'](frame, confidence=True)
        b = segs['onnxruntime'](frame, confidence=True)
        assert a.ids.shape == frame.shape[:2] and a.ids.dtype == np.uint8
        agree += int((a.ids == b.ids).sum())
        total += a.ids.size
        diff = np.abs(a.confidence.astype(int) - b.confidence.astype(int))
        assert np.percentile(diff, 99) <= 1
    assert agree / total >= 0.999, agree / total


def test_batch_equals_single_frames(segs: dict[str, Segmenter]) -> None:
    seg = segs['onnxruntime']
    frames = _frames(2) + _frames(1, (50, 70))
    batch = seg.segment_batch(frames, confidence=True)
    for frame, res in zip(frames, batch):
        single = seg(frame, confidence=True)
        np.testing.assert_array_equal(res.ids, single.ids)
        np.testing.assert_array_equal(res.confidence, single.confidence)


def test_bgr_input_and_optional_outputs(segs: dict[str, Segmenter]) -> None:
    seg = segs['onnxruntime']
    frame = _frames(1)[0]
    plain = seg(frame)
    assert isinstance(plain, SegmentationResult)
    assert plain.confidence is None and plain.color is None and plain.overlay is None
    assert set(plain.timings) == {'preprocess_ms', 'inference_ms', 'postprocess_ms'}
    full = seg(np.ascontiguousarray(frame[..., ::-1]), color_order='bgr', confidence=True,
               color=True, overlay=True, overlay_alpha=0.25)
    np.testing.assert_array_equal(full.ids, plain.ids)
    lut = colorize.palette_lut(CITYSCAPES_PALETTE)
    np.testing.assert_array_equal(full.color, lut[full.ids, 0])
    expected = cv2.addWeighted(frame, 0.75, full.color, 0.25, 0)
    np.testing.assert_array_equal(full.overlay, expected)  # overlay is RGB for BGR input too
    assert full.confidence.shape == frame.shape[:2]


def test_letterbox_segmenter_covers_frame(model_files: dict[str, Path]) -> None:
    seg = Segmenter.from_file(model_files['onnx'], backend='onnxruntime', device='cpu',
                              resize_mode='letterbox')
    frame = _frames(1, (100, 100))[0]  # square frame into a 1:2 network: pads left/right
    geo = seg.geometry(100, 100)
    assert geo.content == (0, 32, 64, 64)
    res = seg(frame, color=True)
    assert res.ids.shape == (100, 100) and res.color.shape == (100, 100, 3)


# ------------------------------------------------------------------ letterbox geometry
@pytest.mark.parametrize('src,dst', [((100, 100), (64, 128)), ((480, 640), (256, 512)),
                                     ((37, 211), (64, 128)), ((64, 128), (64, 128)),
                                     ((1, 5), (8, 8))])
def test_letterbox_padding_never_leaks_back(src: tuple[int, int],
                                            dst: tuple[int, int]) -> None:
    geo = compute_geometry(src, dst, 'letterbox')
    top, left, h, w = geo.content
    assert 0 <= top and 0 <= left and top + h <= dst[0] and left + w <= dst[1]
    assert h == dst[0] or w == dst[1]  # fits on one axis
    net = np.full(dst, 200, np.uint8)  # 200 marks padding
    net[top:top + h, left:left + w] = np.arange(h * w, dtype=np.int64).reshape(h, w) % 19
    back = restore(net, geo)
    assert back.shape == src and back.dtype == np.uint8
    assert not (back == 200).any()


@pytest.mark.parametrize('src,dst', [((32, 48), (64, 128)), ((16, 16), (64, 128)),
                                     ((30, 60), (90, 180)), ((64, 128), (64, 128))])
def test_letterbox_round_trip_is_exact(src: tuple[int, int], dst: tuple[int, int]) -> None:
    """Integer up-scales: letterbox an id map (nearest) and undo it -> identical map."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 19, src, dtype=np.uint8)
    geo = compute_geometry(src, dst, 'letterbox')
    rgb = np.repeat(ids[..., None], 3, axis=2)
    top, left, h, w = geo.content
    net = np.full(dst, 255, np.uint8)
    net[top:top + h, left:left + w] = cv2.resize(ids, (w, h),
                                                 interpolation=cv2.INTER_NEAREST_EXACT)
    np.testing.assert_array_equal(restore(net, geo), ids)
    # the image path pads with the fill colour and puts the frame at the same place
    img = prepare(rgb, geo, fill=(1, 2, 3))
    assert img.shape == (*dst, 3)
    if (h, w) != dst:
        assert (img[0, 0] == (1, 2, 3)).all() or (img[-1, -1] == (1, 2, 3)).all()


def test_stretch_geometry_and_identity() -> None:
    geo = compute_geometry((480, 640), (64, 128), 'stretch')
    assert geo == Geometry((480, 640), (64, 128), (0, 0, 64, 128))
    assert compute_geometry((64, 128), (64, 128), 'letterbox').is_identity
    frame = np.zeros((64, 128, 3), np.uint8)
    assert prepare(frame, compute_geometry((64, 128), (64, 128))) is frame  # no copy
    with pytest.raises(SegRosError, match='resize_mode'):
        compute_geometry((4, 4), (4, 4), 'crop')


# ------------------------------------------------------------------ colours
def test_palette_lut_and_colorize(tmp_path: Path) -> None:
    ids = np.array([[0, 1, 255], [10, 18, 200]], np.uint8)
    col = colorize.colorize(ids, colorize.palette_lut('cityscapes'))
    assert col[0, 0].tolist() == list(CITYSCAPES_PALETTE[0])
    assert col[1, 0].tolist() == list(CITYSCAPES_PALETTE[10])
    assert col[0, 2].tolist() == [0, 0, 0] and col[1, 2].tolist() == [0, 0, 0]
    assert colorize.colorize(ids, colorize.palette_lut('camvid'))[0, 1].tolist() == \
        list(CAMVID_PALETTE[1])
    f = tmp_path / 'p.yaml'
    f.write_text('classes:\n  - {name: a, color: [1, 2, 3]}\n  - {name: b, color: [4, 5, 6]}\n')
    assert colorize.colorize(ids, colorize.palette_lut(str(f)))[0, 1].tolist() == [4, 5, 6]
    with pytest.raises(SegRosError):
        colorize.palette_lut([[1, 2]])
    with pytest.raises(SegRosError):
        colorize.overlay(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 3), np.uint8), 1.5)


def test_set_palette(segs: dict[str, Segmenter], tmp_path: Path) -> None:
    seg = Segmenter(segs['onnxruntime'].backend)  # shares the session
    frame = _frames(1)[0]
    seg.set_palette([[i, i, i] for i in range(19)])
    res = seg(frame, color=True)
    np.testing.assert_array_equal(res.color[..., 0], res.ids)
    with pytest.raises(SegRosError, match='11 colours'):
        seg.set_palette('camvid')


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize('image,match', [
    (np.zeros((8, 8, 3), np.float32), 'uint8'),
    (np.zeros((8, 8, 3), np.uint16), 'uint8'),
    (np.zeros((8, 8, 4), np.uint8), '4 channels'),
    (np.zeros((8, 8), np.uint8), '1 channels'),
    (np.zeros((0, 8, 3), np.uint8), 'zero size'),
    (np.zeros((8, 0, 3), np.uint8), 'zero size'),
    ([[1, 2, 3]], 'numpy array'),
])
def test_bad_images_raise_clear_errors(segs: dict[str, Segmenter], image: object,
                                       match: str) -> None:
    for seg in segs.values():
        with pytest.raises(SegRosError, match=match):
            seg(image)  # type: ignore[arg-type]


def test_bad_options_raise_clear_errors(segs: dict[str, Segmenter],
                                        model_files: dict[str, Path]) -> None:
    frame = _frames(1)[0]
    seg = segs['onnxruntime']
    with pytest.raises(SegRosError, match='color_order'):
        seg(frame, color_order='yuv')
    with pytest.raises(SegRosError, match='alpha'):
        seg(frame, overlay=True, overlay_alpha=2.0)
    with pytest.raises(SegRosError, match='not found'):
        Segmenter.from_file(model_files['root'] / 'missing.onnx')
    with pytest.raises(SegRosError, match='unknown backend'):
        Segmenter.from_file(model_files['onnx'], backend='tflite')
    with pytest.raises(SegRosError, match='torch backend needs'):
        Segmenter.from_file(model_files['onnx'], backend='torch')
    with pytest.raises(SegRosError, match='int8'):
        Segmenter.from_file(model_files['onnx'], backend='onnxruntime', precision='int8')
    with pytest.raises(SegRosError, match='re-export'):
        Segmenter.from_file(model_files['onnx'], backend='onnxruntime', input_size=(32, 64))
    with pytest.raises(SegRosError, match='unknown model'):
        Segmenter.from_file('no_such_model', backend='torch', device='cpu')
    with pytest.raises(SegRosError, match='only on the tensorrt backend'):
        resolve_backend('onnxruntime', 'engine', 'cpu')
    with pytest.raises(SegRosError, match='bf16 runs on the openvino backend'):
        Segmenter.from_file(model_files['onnx'], backend='onnxruntime', precision='bf16')
    with pytest.raises(SegRosError, match='int8 runs on tensorrt'):
        Segmenter.from_file(model_files['ckpt'], backend='torch', precision='int8')


def test_auto_backend_on_a_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from seg_ros.runtime import backends

    monkeypatch.setattr(backends, 'cuda_available', lambda: False)
    for installed, expected in ((True, 'openvino'), (False, 'onnxruntime')):
        monkeypatch.setattr(backends, 'openvino_installed', lambda i=installed: i)
        assert resolve_backend('auto', 'onnx', 'cpu') == expected
        assert resolve_backend('auto', 'checkpoint', 'cpu') == expected
        assert resolve_backend('auto', 'engine', 'cpu') == 'tensorrt'

def test_closed_segmenter_refuses(model_files: dict[str, Path]) -> None:
    closed = Segmenter(OrtBackend(model_files['onnx']))
    closed.close()
    with pytest.raises(SegRosError, match='closed'):
        closed(_frames(1)[0])


def test_checkpoint_on_onnxruntime_exports_once(model_files: dict[str, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint on onnxruntime is exported into the cache once, then reused."""
    import seg_ros.runtime.export as export_mod

    calls = []

    def fake_export(net, meta, out, size=None, **kw):  # copies the real export
        calls.append((meta.model, size, kw))
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(model_files['onnx'], out)
        return Path(out)

    monkeypatch.setattr(export_mod, 'export_onnx', fake_export)
    for _ in range(2):
        seg = Segmenter.from_file(model_files['ckpt'], backend='onnxruntime', device='cpu',
                                  engine_cache_dir=tmp_path)
        assert seg.backend_name == 'onnxruntime' and seg.input_size == SIZE
    assert len(calls) == 1
    assert len(list((tmp_path / 'onnx').glob('regseg48-64x128-*.onnx'))) == 1


# ------------------------------------------------------------------ CLI
def test_cli_predict_writes_masks_colours_overlays(model_files: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from seg_ros.cli import main

    frames = _frames(2)
    names = []
    for i, frame in enumerate(frames):
        names.append(str(tmp_path / f'f{i}.png'))
        cv2.imwrite(names[-1], cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    (tmp_path / 'broken.png').write_bytes(b'not a png')
    out = tmp_path / 'out'
    rc = main(['predict', str(model_files['onnx']), *names, str(tmp_path / 'broken.png'),
               '--out', str(out), '--backend', 'onnxruntime', '--device', 'cpu',
               '--palette', 'cityscapes', '--confidence'])
    assert rc == 1  # one unreadable file is reported, the others are written
    assert 'broken.png' in capsys.readouterr().err
    seg = Segmenter.from_file(model_files['onnx'], backend='onnxruntime', device='cpu')
    for i, frame in enumerate(frames):
        ids = cv2.imread(str(out / 'ids' / f'f{i}.png'), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(ids, seg(frame).ids)
        color = cv2.imread(str(out / 'color' / f'f{i}.png'))[..., ::-1]
        np.testing.assert_array_equal(color, seg(frame, color=True).color)
        assert (out / 'overlay' / f'f{i}.jpg').is_file()
        assert (out / 'confidence' / f'f{i}.png').is_file()


def test_cli_bench_json(model_files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from seg_ros.cli import main

    rc = main(['bench', str(model_files['ckpt']), '--backend', 'torch', '--device', 'cpu',
               '--iters', '3', '--warmup', '1', '--frame-size', '96x192', '--color',
               '--overlay', '--baseline', 'torch-eager', '--json'])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r['backend'] == 'torch' and r['input_size'] == [64, 128]
    for stage in ('preprocess_ms', 'inference_ms', 'postprocess_ms', 'total_ms', 'cpu_ms'):
        assert set(r['pipeline'][stage]) >= {'median', 'p90', 'p99'}
    assert r['pipeline']['fps'] > 0 and r['peak_rss_mb'] > 0
    # same weights, same frames: the pipeline's ids match bare torch eager
    assert r['ids_agreement_vs_eager'] >= 0.999
    assert r['speedup_wall'] > 0
    assert main(['bench', str(model_files['onnx']), '--baseline', 'torch-eager']) == 1


def test_cli_export_without_confidence(tmp_path: Path, model_files: dict[str, Path]) -> None:
    from seg_ros.cli import main

    out = tmp_path / 'ids_only.onnx'
    assert main(['export', str(model_files['ckpt']), '--size', '32x64', '--out', str(out),
                 '--no-confidence']) == 0
    seg = Segmenter.from_file(out, backend='onnxruntime', device='cpu')
    assert seg.input_size == (32, 64) and seg.meta.input_size == [32, 64]
    assert seg(_frames(1)[0]).ids.shape == (96, 192)
    with pytest.raises(SegRosError, match='confidence'):
        seg(_frames(1)[0], confidence=True)
    assert main(['export', 'regseg48', '--size', '32by64', '--out', str(out)]) == 1
