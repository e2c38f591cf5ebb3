"""eval-bag offline: bag round trips score exactly like evaluating the frames directly; label
matching; compressed input; errors and partial reports; the output bag."""
from __future__ import annotations

import json
from pathlib import Path

import bag_testutil
import cv2
import numpy as np
import pytest

from seg_ros.bag.eval_bag import OUTPUT_BAG_NAME, OUTPUT_PREFIX, EvalConfig, run_eval
from seg_ros.bag.io import BagReader
from seg_ros.bag.make_bag import DEFAULT_START_NS, SourceFrame, make_bag
from seg_ros.cli import main
from seg_ros.encodings import compressed_to_rgb, encode_compressed
from seg_ros.errors import SegRosError
from seg_ros.eval.metrics import ConfusionMatrix

SIZE = bag_testutil.MODEL_SIZE
N = 6


@pytest.fixture(scope='module')
def drive():
    """Six consecutive synthetic frames with labels."""
    from seg_ros.data.synthetic import SyntheticDrive

    d = SyntheticDrive(size=SIZE, seed=3)
    return [SourceFrame(*d.frame(i), name=f'{i:06d}') for i in range(N)]


@pytest.fixture(scope='module')
def model_file():
    return bag_testutil.onnx_model()


@pytest.fixture(scope='module')
def segmenter():
    return bag_testutil.segmenter()


def direct(segmenter, images, labels) -> ConfusionMatrix:
    """The reference: Segmenter + ConfusionMatrix on the frames, no bag involved."""
    cm = ConfusionMatrix(19)
    for rgb, label in zip(images, labels):
        cm.update(segmenter(rgb).ids, label)
    return cm


def config(bag: Path, model: Path, out: Path, **kw) -> EvalConfig:
    kw.setdefault('image_topic', '/camera/image_raw')
    kw.setdefault('plots', False)  # plotting costs seconds; test_round_trip checks the PNGs
    return EvalConfig(bag=bag, model=str(model), out_dir=out, backend=bag_testutil.BACKEND,
                      device='cpu', **kw)


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_round_trip_scores_like_direct_evaluation(tmp_path, drive, model_file, segmenter,
                                                  storage):
    make_bag(tmp_path / 'bag', drive, storage=storage, progress=False)
    report = run_eval(config(tmp_path / 'bag', model_file, tmp_path / 'out',
                             label_topic='/labels', plots=True), progress=False)
    cm = direct(segmenter, [f.rgb for f in drive], [f.label for f in drive])
    assert report['complete'] and report['mode'] == 'offline'
    assert report['frames']['evaluated'] == N and report['frames']['without_label'] == 0
    np.testing.assert_array_equal(np.array(report['confusion_matrix']), cm.matrix)
    assert report['metrics']['miou'] == pytest.approx(cm.miou(), abs=1e-12)
    assert report['metrics']['pixel_accuracy'] == pytest.approx(cm.pixel_accuracy(), abs=1e-12)
    assert report['latency_ms']['n'] == N and report['latency_ms']['p99'] > 0
    on_disk = json.loads((tmp_path / 'out' / 'report.json').read_text())
    assert on_disk['bag']['sha256'] == report['bag']['sha256']
    assert len(on_disk['bag']['sha256']) == 64
    for name in ('report.md', 'per_class_iou.png', 'confusion_matrix.png', 'latency_hist.png',
                 'samples.png'):
        assert (tmp_path / 'out' / name).stat().st_size > 0


def test_compressed_input(tmp_path, drive, model_file, segmenter):
    make_bag(tmp_path / 'bag', drive, compressed='jpeg', jpeg_quality=80, progress=False)
    report = run_eval(config(tmp_path / 'bag', model_file, tmp_path / 'out',
                             image_topic='/camera/image_raw/compressed', label_topic='/labels'),
                      progress=False)
    # what the bag holds is the JPEG: the reference decodes the same bytes
    images = [compressed_to_rgb(encode_compressed(f.rgb, 'jpeg', 80), 'jpeg') for f in drive]
    cm = direct(segmenter, images, [f.label for f in drive])
    np.testing.assert_array_equal(np.array(report['confusion_matrix']), cm.matrix)
    assert report['bag']['image_msgtype'] == 'sensor_msgs/msg/CompressedImage'


def test_label_png_folder_matched_by_timestamp(tmp_path, drive, model_file, segmenter):
    unlabelled = [SourceFrame(f.rgb, None, f.name) for f in drive]
    make_bag(tmp_path / 'bag', unlabelled, rate_hz=10, progress=False)
    labels = tmp_path / 'labels'
    labels.mkdir()
    period = 100_000_000
    # frames 0-3: labelled 0.4 ms after the image (inside the 1 ms tolerance);
    # frame 4: 5 ms off (outside); frame 5: no label at all
    for i, offset in ((0, 400_000), (1, 400_000), (2, -400_000), (3, 0), (4, 5_000_000)):
        cv2.imwrite(str(labels / f'{DEFAULT_START_NS + i * period + offset}.png'),
                    drive[i].label)
    report = run_eval(config(tmp_path / 'bag', model_file, tmp_path / 'out',
                             labels_dir=labels), progress=False)
    assert report['frames']['evaluated'] == 4 and report['frames']['without_label'] == 2
    assert report['config']['labels'] == {'source': str(labels), 'mode': 'timestamp',
                                          'labels': 5, 'tolerance_ms': 1.0}
    cm = direct(segmenter, [f.rgb for f in drive[:4]], [f.label for f in drive[:4]])
    np.testing.assert_array_equal(np.array(report['confusion_matrix']), cm.matrix)
    # a wider tolerance picks up frame 4 too
    wide = run_eval(config(tmp_path / 'bag', model_file, tmp_path / 'out2', labels_dir=labels,
                           label_tolerance_ms=6.0), progress=False)
    assert wide['frames']['evaluated'] == 5


def test_label_png_folder_matched_by_name(tmp_path, drive, model_file, segmenter):
    make_bag(tmp_path / 'bag', [SourceFrame(f.rgb, None, f'left_{i}') for i, f in
                                enumerate(drive)], progress=False)
    labels = tmp_path / 'labels'
    labels.mkdir()
    cv2.imwrite(str(labels / 'left_2.png'), drive[2].label)
    report = run_eval(config(tmp_path / 'bag', model_file, tmp_path / 'out',
                             labels_dir=labels), progress=False)
    assert report['frames']['evaluated'] == 1 and report['config']['labels']['mode'] == 'name'
    cm = direct(segmenter, [drive[2].rgb], [drive[2].label])
    np.testing.assert_array_equal(np.array(report['confusion_matrix']), cm.matrix)


def test_labels_that_never_match_are_a_clear_error(tmp_path, drive, model_file):
    make_bag(tmp_path / 'bag', [SourceFrame(f.rgb, None, f.name) for f in drive],
             progress=False)
    labels = tmp_path / 'labels'
    labels.mkdir()
    cv2.imwrite(str(labels / '1600000000.000000000.png'), drive[0].label)
    with pytest.raises(SegRosError, match=r'labels never match: .*closest gap'):
        run_eval(config(tmp_path / 'bag', model_file, tmp_path / 'out', labels_dir=labels),
                 progress=False)


def test_missing_topic_or_model_is_a_clear_error(tmp_path, drive, model_file):
    make_bag(tmp_path / 'bag', drive[:1], progress=False)
    with pytest.raises(SegRosError, match='model file not found: .*nope.onnx'):
        run_eval(config(tmp_path / 'bag', tmp_path / 'nope.onnx', tmp_path / 'out'),
                 progress=False)
    with pytest.raises(SegRosError, match=r"'/cam' not in bag .*/camera/image_raw"):
        run_eval(config(tmp_path / 'bag', model_file, tmp_path / 'out', image_topic='/cam'),
                 progress=False)
    with pytest.raises(SegRosError, match=r"'/nolabels' not in bag"):
        run_eval(config(tmp_path / 'bag', model_file, tmp_path / 'out',
                        label_topic='/nolabels'), progress=False)


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_truncated_bag_gives_error_and_partial_report(tmp_path, model_file, storage):
    from seg_ros.data.synthetic import SyntheticDrive

    d = SyntheticDrive(size=(32, 64), seed=1)
    frames = [SourceFrame(*d.frame(i), name=str(i)) for i in range(40)]
    make_bag(tmp_path / 'bag', frames, storage=storage, progress=False)
    f = next(p for p in (tmp_path / 'bag').iterdir() if p.suffix in ('.db3', '.mcap'))
    f.write_bytes(f.read_bytes()[:f.stat().st_size // 2])
    out = tmp_path / 'out'
    with pytest.raises(SegRosError, match='truncated or damaged.*partial report for') as exc:
        run_eval(config(tmp_path / 'bag', model_file, out, label_topic='/labels'),
                 progress=False)
    report = json.loads((out / 'report.json').read_text())
    assert report['complete'] is False and 'truncated' in report['error']
    assert 0 < report['frames']['read'] < 40
    assert report['frames']['evaluated'] > 0 and report['metrics']['miou'] is not None
    assert f'{report["frames"]["read"]} of' in str(exc.value)
    assert 'PARTIAL REPORT' in (out / 'report.md').read_text()


def test_corrupt_bag_without_readable_frames(tmp_path, model_file):
    bag = tmp_path / 'bag'
    bag.mkdir()
    (bag / 'bag.mcap').write_bytes(b'\x89MCAP0\r\n' + b'\x01' + b'\xff' * 40)
    with pytest.raises(SegRosError, match='no message could be recovered'):
        run_eval(config(bag, model_file, tmp_path / 'out'), progress=False)
    assert not (tmp_path / 'out' / 'report.json').exists()


def test_output_bag_reads_back(tmp_path, drive, model_file, segmenter):
    make_bag(tmp_path / 'bag', drive, storage='mcap', progress=False)
    report = run_eval(config(tmp_path / 'bag', model_file, tmp_path / 'out',
                             label_topic='/labels', write_bag=True), progress=False)
    out_bag = tmp_path / 'out' / OUTPUT_BAG_NAME
    assert report['output_bag']['path'] == str(out_bag)
    with BagReader(out_bag) as r:
        topics = r.topics()
        assert {t: topics[t].count for t in topics} == {
            '/camera/image_raw': N, '/camera/camera_info': N, '/labels': N,
            f'{OUTPUT_PREFIX}/mask': N, f'{OUTPUT_PREFIX}/color': N}
        masks = list(r.frames(f'{OUTPUT_PREFIX}/mask', decode=False))
        inputs = list(r.frames('/camera/image_raw'))
        for frame, m, f in zip(inputs, r.label_messages(f'{OUTPUT_PREFIX}/mask'), drive):
            np.testing.assert_array_equal(frame.rgb, f.rgb)  # input copied unchanged
            assert m[0] == frame.stamp_ns
            np.testing.assert_array_equal(m[1], segmenter(f.rgb).ids)
        assert [m.stamp_ns for m in masks] == [f.stamp_ns for f in inputs]
        colour = next(iter(r.frames(f'{OUTPUT_PREFIX}/color')))
        assert colour.rgb.shape == (*SIZE, 3)


def test_cli_eval_bag(tmp_path, drive, model_file, capsys):
    make_bag(tmp_path / 'bag', drive[:2], progress=False)
    rc = main(['eval-bag', str(tmp_path / 'bag'), '--model', str(model_file), '--backend',
               bag_testutil.BACKEND, '--image-topic', '/camera/image_raw',
               '--label-topic', '/labels', '--out', str(tmp_path / 'out')])
    assert rc == 0
    assert 'offline: mIoU' in capsys.readouterr().out
    rc = main(['eval-bag', str(tmp_path / 'bag'), '--model', str(model_file), '--image-topic',
               '/x', '--out', str(tmp_path / 'out2')])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('seg-ros eval-bag: error:') and "'/x'" in err[0]


def test_corrupt_message_gives_error_and_partial_report(tmp_path, drive, model_file):
    import sqlite3

    make_bag(tmp_path / 'bag', drive, storage='sqlite3', progress=False)
    db = sqlite3.connect(tmp_path / 'bag' / 'bag.db3')
    topic = db.execute("SELECT id FROM topics WHERE name='/camera/image_raw'").fetchone()[0]
    ids = [r[0] for r in db.execute('SELECT id FROM messages WHERE topic_id=? ORDER BY id',
                                    (topic,))]
    db.execute('UPDATE messages SET data=? WHERE id=?', (b'\x00\x01\x00\x00\xff' * 3, ids[4]))
    db.commit()
    db.close()
    out = tmp_path / 'out'
    with pytest.raises(SegRosError, match=r'message 4 .* is corrupt.*partial report for 4 of 6'):
        run_eval(config(tmp_path / 'bag', model_file, out, label_topic='/labels'),
                 progress=False)
    report = json.loads((out / 'report.json').read_text())
    assert not report['complete'] and report['frames']['evaluated'] == 4
