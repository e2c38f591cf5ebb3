"""Shared core: metadata, checkpoints, the confusion matrix and image-message decoding."""
from __future__ import annotations

from pathlib import Path
import types

import cv2
import numpy as np
import pytest
import torch

from seg_ros.encodings import (
    ImageDecodeError,
    array_to_image_fields,
    compressed_size,
    compressed_to_rgb,
    encode_compressed,
    image_to_rgb,
)
from seg_ros.errors import SegRosError
from seg_ros.eval.metrics import ConfusionMatrix, confusion_matrix, iou_per_class, mean_iou
from seg_ros.metadata import CITYSCAPES_CLASSES, ModelMeta, load_palette
from seg_ros.models.checkpoint import atomic_torch_save, load_checkpoint, save_checkpoint
from seg_ros.runtime.normalize import Normalize
from seg_ros.testing.images import png_bomb


def test_meta_json_round_trip_and_validation():
    meta = ModelMeta(model='regseg48', input_size=[256, 512], arch={'dilations': [[1], [1, 2]]})
    assert ModelMeta.from_json(meta.to_json()) == meta
    assert ModelMeta.for_dataset('x', 'camvid').num_classes == 11
    with pytest.raises(SegRosError):
        ModelMeta(model='x', num_classes=3)  # 19 default names for 3 classes
    with pytest.raises(SegRosError):
        ModelMeta.from_json('{not json')


def test_palette_yaml(tmp_path: Path):
    f = tmp_path / 'p.yaml'
    f.write_text('classes:\n  - {name: road, color: [1, 2, 3]}\n'
                 '  - {name: car, color: [4, 5, 6]}\n')
    names, colours = load_palette(str(f))
    assert names == ['road', 'car'] and colours == [[1, 2, 3], [4, 5, 6]]
    assert load_palette('cityscapes')[0] == list(CITYSCAPES_CLASSES)
    with pytest.raises(SegRosError, match='colours'):
        load_palette(str(f), num_classes=19)
    f.write_text('classes:\n  - {name: road, color: [1, 2, 300]}\n')
    with pytest.raises(SegRosError):
        load_palette(str(f))


def test_checkpoint_round_trip_and_atomicity(tmp_path: Path, monkeypatch):
    path = tmp_path / 'ck.pt'
    meta = ModelMeta(model='m')
    save_checkpoint(path, {'module.w': torch.ones(2)}, meta, extra={'iteration': 3})
    ck = load_checkpoint(path)
    assert ck['meta'] == meta and ck['extra'] == {'iteration': 3}
    assert torch.equal(ck['state_dict']['w'], torch.ones(2))  # DDP prefix stripped

    def explode(obj, f):  # a crash in the middle of writing the new file
        f.write(b'partial')
        raise RuntimeError('disk full')

    monkeypatch.setattr(torch, 'save', explode)
    with pytest.raises(RuntimeError):
        atomic_torch_save({'x': 1}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)['extra'] == {'iteration': 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ck.pt']
    (tmp_path / 'bad.pt').write_bytes(b'garbage')
    with pytest.raises(SegRosError, match='not a readable checkpoint'):
        load_checkpoint(tmp_path / 'bad.pt')


def test_confusion_matrix_by_hand():
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    gt = np.array([[0, 1, 2], [2, 255, 1]])
    cm = confusion_matrix(pred, gt, 3)
    expected = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1]])
    np.testing.assert_array_equal(cm, expected)
    # IoU: c0 1/(1+1+0)=.5, c1 1/(1+1+1)=1/3, c2 1/(1+0+1)=.5
    np.testing.assert_allclose(iou_per_class(cm), [0.5, 1 / 3, 0.5])
    # A class absent from both GT and prediction is excluded from the mean.
    cm4 = confusion_matrix(pred, gt, 4)
    assert np.isnan(iou_per_class(cm4)[3])
    assert mean_iou(cm4) == pytest.approx((0.5 + 1 / 3 + 0.5) / 3)
    acc = ConfusionMatrix(3)
    acc.update(torch.tensor(pred), torch.tensor(gt))
    acc.update(pred, gt)
    np.testing.assert_array_equal(acc.matrix, 2 * expected)
    with pytest.raises(ValueError, match='outside'):
        confusion_matrix(np.array([5]), np.array([0]), 3)


def _msg(arr: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False):
    h, w = arr.shape[:2]
    row = arr.reshape(h, -1).view(np.uint8) if arr.dtype != np.uint8 else arr.reshape(h, -1)
    if bigendian:
        row = arr.astype('>u2').reshape(h, -1).view(np.uint8)
    data = np.concatenate([row, np.full((h, pad), 7, np.uint8)], axis=1)
    return types.SimpleNamespace(height=h, width=w, encoding=encoding, step=data.shape[1],
                                 is_bigendian=int(bigendian), data=data.tobytes())


def test_image_decoding_encodings_and_padding():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(image_to_rgb(_msg(rgb, 'rgb8', pad=5)), rgb)
    np.testing.assert_array_equal(image_to_rgb(_msg(rgb[..., ::-1].copy(), 'bgr8')), rgb)
    rgba = np.concatenate([rgb, np.zeros((6, 8, 1), np.uint8)], axis=2)
    np.testing.assert_array_equal(image_to_rgb(_msg(rgba, 'rgba8', pad=3)), rgb)
    mono16 = rng.integers(0, 65536, (6, 8), dtype=np.uint16)
    for big in (False, True):
        out = image_to_rgb(_msg(mono16, 'mono16', pad=2, bigendian=big))
        np.testing.assert_array_equal(out[..., 0], (mono16 >> 8).astype(np.uint8))
    yuyv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV)  # shape check only for the packed formats
    packed = np.zeros((6, 8, 2), np.uint8)
    packed[..., 0] = yuyv[..., 0]
    assert image_to_rgb(_msg(packed, 'yuyv')).shape == (6, 8, 3)
    bayer = rng.integers(0, 256, (6, 8), dtype=np.uint8)
    assert image_to_rgb(_msg(bayer, 'bayer_rggb8', pad=1)).shape == (6, 8, 3)


@pytest.mark.parametrize('mutate, match', [
    (lambda m: setattr(m, 'encoding', '32FC1'), 'unsupported encoding'),
    (lambda m: setattr(m, 'step', 3), 'step'),
    (lambda m: setattr(m, 'data', m.data[:10]), 'bytes'),
    (lambda m: setattr(m, 'height', 0), 'empty'),
])
def test_bad_frames_are_rejected(mutate, match):
    msg = _msg(np.zeros((4, 4, 3), np.uint8), 'rgb8')
    mutate(msg)
    with pytest.raises(ImageDecodeError, match=match):
        image_to_rgb(msg)


def test_compressed_and_fields_round_trip():
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, 8:] = (200, 30, 10)
    np.testing.assert_array_equal(compressed_to_rgb(encode_compressed(rgb, 'png')), rgb)
    with pytest.raises(ImageDecodeError, match='cannot decode'):
        compressed_to_rgb(b'\xff\xd8 not a jpeg', 'jpeg')
    fields = array_to_image_fields(rgb, 'rgb8')
    np.testing.assert_array_equal(image_to_rgb(types.SimpleNamespace(**fields)), rgb)


def test_compressed_size_reads_png_and_jpeg_headers():
    rng = np.random.default_rng(1)
    for h, w in ((1, 1), (7, 300), (241, 3), (64, 129)):
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for ext, params in (('.png', []), ('.jpg', []),
                            ('.jpg', [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])):
            data = cv2.imencode(ext, rgb, params)[1].tobytes()
            assert compressed_size(data) == (w, h), (ext, params)
    assert compressed_size(png_bomb(20000, 20000)) == (20000, 20000)
    bmp = cv2.imencode('.bmp', np.zeros((4, 4, 3), np.uint8))[1].tobytes()
    for unreadable in (b'', b'\xff\xd8', b'\x89PNG\r\n\x1a\n', bmp,
                       b'\xff\xd8\xff\xe0 not a jpeg at all'):
        assert compressed_size(unreadable) is None, unreadable[:12]


def test_decompression_bomb_refused_before_decoding(monkeypatch):
    bomb = png_bomb(20000, 20000)
    assert len(bomb) < 64_000  # 1.2 GB of pixels once decoded

    def no_decoding(*args, **kwargs):
        raise AssertionError('the bomb reached the decoder')

    monkeypatch.setattr(cv2, 'imdecode', no_decoding)
    with pytest.raises(ImageDecodeError, match='max_input_pixels=33177600'):
        compressed_to_rgb(bomb, 'png', max_pixels=7680 * 4320)
    bmp = b'BM' + bytes(100)
    with pytest.raises(ImageDecodeError, match='not a PNG or JPEG'):
        compressed_to_rgb(bmp, 'bmp', max_pixels=100)


def test_frame_size_bound():
    small = png_bomb(40, 30)
    assert compressed_to_rgb(small, 'png', max_pixels=1200).shape == (30, 40, 3)
    with pytest.raises(ImageDecodeError, match=r'30x40 \(HxW\) has 1200 pixels'):
        compressed_to_rgb(small, 'png', max_pixels=1199)
    msg = _msg(np.zeros((30, 40, 3), np.uint8), 'rgb8')
    assert image_to_rgb(msg, max_pixels=1200).shape == (30, 40, 3)
    with pytest.raises(ImageDecodeError, match='max_input_pixels=1199'):
        image_to_rgb(msg, max_pixels=1199)
    lying = _msg(np.zeros((2, 2, 3), np.uint8), 'rgb8')
    lying.height, lying.width, lying.step = 100_000, 100_000, 300_000  # 30 GB claimed
    with pytest.raises(ImageDecodeError, match='max_input_pixels'):
        image_to_rgb(lying, max_pixels=7680 * 4320)


def test_normalize_matches_formula():
    img = torch.randint(0, 256, (2, 5, 7, 3), dtype=torch.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = (img.permute(0, 3, 1, 2).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) \
        / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(Normalize(mean, std)(img), expected)


def test_atomic_write_gives_normal_permissions(tmp_path: Path):
    import os
    import stat

    from seg_ros.fileio import atomic_write_text

    atomic_write_text(tmp_path / 'a.txt', 'hello')
    mask = os.umask(0o022)
    os.umask(mask)
    mode = stat.S_IMODE((tmp_path / 'a.txt').stat().st_mode)
    assert mode == 0o666 & ~mask
    assert (tmp_path / 'a.txt').read_text() == 'hello'


_PNG_HEAD = png_bomb(3, 2)[:33]  # signature + IHDR of a real PNG


@pytest.mark.parametrize('prefix', [b'', b'\xff\xd8', _PNG_HEAD[:8]])
def test_header_reader_never_raises_on_arbitrary_bytes(prefix: bytes) -> None:
    """Whatever arrives on image/compressed, the size reader answers a size or None."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(st.binary(max_size=256))
    def check(tail: bytes) -> None:
        size = compressed_size(prefix + tail)
        assert size is None or (len(size) == 2 and all(0 <= v < 2 ** 32 for v in size))

    check()


def test_truncated_images_are_refused_not_crashed() -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    for ext in ('png', 'jpeg'):
        data = encode_compressed(rgb, ext)
        for cut in range(0, len(data), max(1, len(data) // 40)):
            try:
                out = compressed_to_rgb(data[:cut], ext, max_pixels=24 * 40)
            except ImageDecodeError:
                continue
            assert out.shape == (24, 40, 3)  # a decoder may fill a truncated tail
