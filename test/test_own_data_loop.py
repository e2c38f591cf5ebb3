"""The user's own data, start to finish (issue 17), through the command line only.

make-bag -> extract-frames (camera and label topics, under the same stamp names) -> a folder
dataset -> train with the shipped ``config/train/folder.yaml`` (a few iterations) -> eval on the
bare folder path -> export -> predict on the folder -> eval-bag with ``--labels``. Each step's
output is checked; the scores of eval and eval-bag on the same frames with the same weights
must agree (one preprocessing path, one confusion matrix).
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from seg_ros.cli import main
from seg_ros.metadata import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 10
H, W = 64, 128


@pytest.fixture(scope='module')
def loop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp('own_data')


def _json_out(capsys: pytest.CaptureFixture[str]) -> dict:
    out = capsys.readouterr().out
    return json.loads(out[out.index('{'):])


def test_the_own_data_loop_end_to_end(loop: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bag, data = loop / 'drive', loop / 'mine'
    # 1. a recording (the synthetic generator stands in for the camera; it also writes labels)
    assert main(['make-bag', '--synthetic', str(FRAMES), '--size', f'{H}x{W}', '--seed', '5',
                 '--out', str(bag)]) == 0
    # 2. frames out for labelling, and the "labels" under the same stamp names
    assert main(['extract-frames', str(bag), '--topic', '/camera/image_raw',
                 '--out', str(data / 'images'), '--no-progress']) == 0
    assert main(['extract-frames', str(bag), '--topic', '/labels',
                 '--out', str(data / 'masks'), '--no-progress']) == 0
    images = sorted(p.name for p in (data / 'images').glob('*.png'))
    assert len(images) == FRAMES
    assert images == sorted(p.name for p in (data / 'masks').glob('*.png'))
    assert (data / 'images' / 'camera_info.yaml').is_file()
    mask = cv2.imread(str(data / 'masks' / images[0]), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (H, W) and mask.dtype == np.uint8
    # the user's classes file (the layout `seg-ros synth` writes)
    (data / 'classes.yaml').write_text(yaml.safe_dump({'classes': [
        {'name': n, 'color': list(c)} for n, c in zip(CITYSCAPES_CLASSES, CITYSCAPES_PALETTE)]}))
    capsys.readouterr()

    # 3. train on the folder with the shipped template, a few iterations
    run = loop / 'run'
    assert main(['train', str(ROOT / 'config' / 'train' / 'folder.yaml'), '--data', str(data),
                 '--out', str(run), '--no-progress',
                 '--set', 'optim.epochs=0', '--set', 'optim.iterations=2',
                 '--set', 'optim.batch_size=2', '--set', 'optim.warmup_iters=1',
                 '--set', 'optim.threads=1', '--set', 'data.workers=0',
                 '--set', 'eval.every=0', '--set', 'checkpoint.every=0']) == 0
    final = run / 'final.pt'
    assert final.is_file()
    capsys.readouterr()

    # 4. eval on the bare folder path (layout detected)
    assert main(['eval', '--model', str(final), '--data', str(data), '--json',
                 '--no-progress']) == 0
    metrics = _json_out(capsys)
    assert 0.0 <= metrics['miou'] <= 1.0 and metrics['images'] >= 1

    # 5. export, 6. predict on the folder
    onnx = loop / 'mine.onnx'
    assert main(['export', str(final), '--size', f'{H}x{W}', '--out', str(onnx)]) == 0
    pred = loop / 'pred'
    assert main(['predict', str(onnx), str(data / 'images'), '--out', str(pred),
                 '--no-progress']) == 0
    written = sorted(p.name for p in (pred / 'ids').glob('*.png'))
    assert written == images
    ids = cv2.imread(str(pred / 'ids' / images[0]), cv2.IMREAD_UNCHANGED)
    assert ids.shape == (H, W)

    # 7. eval-bag on the recording, scored against the labels folder
    report_dir = loop / 'report'
    assert main(['eval-bag', str(bag), '--model', str(onnx), '--image-topic',
                 '/camera/image_raw', '--labels', str(data / 'masks'), '--out',
                 str(report_dir), '--no-plots', '--no-progress', '--threads', '1']) == 0
    report = json.loads((report_dir / 'report.json').read_text())
    assert report['frames']['evaluated'] == FRAMES, report['frames']
    assert report['frames']['without_label'] == 0
    # every frame scored by eval-bag is one of the folder's frames; on all of them the ONNX
    # file must give the checkpoint's score within fp32 noise
    assert main(['eval', '--model', str(onnx), '--data', f'{data}:train+val', '--json',
                 '--no-progress']) == 0
    onnx_all = _json_out(capsys)
    assert report['metrics']['miou'] == pytest.approx(onnx_all['miou'], abs=1e-6)
