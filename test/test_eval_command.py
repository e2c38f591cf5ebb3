"""``seg-ros eval`` end to end on a tiny folder dataset, data specs, TTA and the plots."""
from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
import torch

from seg_ros.errors import SegRosError
from seg_ros.eval.evaluate import evaluate, parse_data_spec, plot_confusion, plot_iou
from seg_ros.eval.metrics import ConfusionMatrix
from seg_ros.metadata import ModelMeta
from seg_ros.models import create_model
from seg_ros.models.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """A 3-frame synthetic folder dataset and a (random-weight) regseg48 checkpoint at 64x128."""
    from seg_ros.data.synthetic import write_dataset
    root = tmp_path_factory.mktemp('evaldata')
    data = write_dataset(root / 'data', 3, (64, 128), seed=3)
    torch.manual_seed(0)
    model = create_model('regseg48')
    meta = ModelMeta.for_dataset('regseg48', 'cityscapes', input_size=[64, 128])
    ckpt = root / 'tiny.pt'
    save_checkpoint(ckpt, model, meta)
    return data, ckpt, model, meta


def test_parse_data_spec():
    assert parse_data_spec('cityscapes:/d/cs:val') == ('cityscapes', '/d/cs', 'val')
    assert parse_data_spec('folder:/d/x') == ('folder', '/d/x', 'val')
    assert parse_data_spec('camvid:/d/CamVid:test') == ('camvid', '/d/CamVid', 'test')
    assert parse_data_spec('synthetic:test') == ('synthetic', None, 'test')
    assert parse_data_spec('synthetic') == ('synthetic', None, 'val')
    with pytest.raises(SegRosError):
        parse_data_spec('cityscapes')


def test_eval_command_end_to_end(tiny, tmp_path):
    data, ckpt, model, meta = tiny
    out = tmp_path / 'report'
    proc = subprocess.run(
        [sys.executable, '-m', 'seg_ros.cli', 'eval', '--model', str(ckpt), '--data',
         f'folder:{data}', '--backend', 'torch', '--threads', '1', '--json', '--out', str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    # the same numbers by hand: model + Normalize on each frame, one ConfusionMatrix
    from seg_ros.data.datasets import build_dataset
    from seg_ros.runtime.normalize import Normalize
    ds = build_dataset('folder', data, 'val')
    cm = ConfusionMatrix(19)
    norm = Normalize(meta.mean, meta.std)
    with torch.no_grad():
        for img, lab in (ds[i] for i in range(len(ds))):
            cm.update(model(norm(torch.from_numpy(img)[None])).argmax(1)[0], lab)
    assert result['images'] == 3 and result['backend'] == 'torch'
    assert result['pixels'] == int(cm.matrix.sum())
    assert result['miou'] == pytest.approx(cm.miou(), abs=2e-3)
    for name in ('confusion_matrix.png', 'per_class_iou.png', 'metrics.json'):
        assert (out / name).stat().st_size > 1000 or name == 'metrics.json'
    assert np.load(out / 'confusion_matrix.npy').sum() == result['pixels']


def test_tta_flip_and_scales(tiny):
    data, ckpt, _, _ = tiny
    plain = evaluate(str(ckpt), 'folder', str(data), backend='torch', progress=False,
                     threads=1)
    tta1 = evaluate(str(ckpt), 'folder', str(data), scales=[1.0, 1.0], progress=False)
    # two identical scales average to the single-scale softmax: same ids, same matrix
    np.testing.assert_array_equal(plain.cm.matrix, tta1.cm.matrix)
    both = evaluate(str(ckpt), 'folder', str(data), flip=True, scales=[0.75, 1.25],
                    progress=False)
    assert both.info['flip'] and both.info['scales'] == [0.75, 1.25]
    assert both.cm.matrix.sum() == plain.cm.matrix.sum()


def test_eval_errors(tiny, tmp_path):
    data, ckpt, _, _ = tiny
    onnx_like = tmp_path / 'm.onnx'
    onnx_like.write_bytes(b'x')
    with pytest.raises(SegRosError, match='checkpoint'):
        evaluate(str(onnx_like), 'folder', str(data), flip=True, progress=False)
    with pytest.raises(SegRosError):
        evaluate(str(ckpt), 'folder', str(tmp_path / 'nope'), progress=False)
    camvid_meta = ModelMeta.for_dataset('regseg48', 'camvid', input_size=[64, 128])
    ck11 = tmp_path / 'camvid.pt'
    save_checkpoint(ck11, create_model('regseg48', num_classes=11), camvid_meta)
    with pytest.raises(SegRosError, match='classes'):
        evaluate(str(ck11), 'folder', str(data), backend='torch', progress=False)


def test_plots_write_pngs(tmp_path):
    cm = np.array([[5, 1, 0], [0, 3, 0], [0, 0, 0]])
    names = ['a', 'b', 'c']
    p1 = plot_confusion(cm, names, tmp_path / 'cm.png')
    p2 = plot_iou([0.8, np.nan, 0.5], names, tmp_path / 'iou.png', palette=[[1, 2, 3]] * 3)
    for p in (p1, p2):
        assert p.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
