"""Every bag form people have scores exactly like the modern rosbag2 bag of the same frames.

The forms are written by the tests themselves (test/bag_forms_testutil.py) from one reference
bag (make-bag, sqlite3, 6 synthetic frames with labels and camera_info), then evaluated end to
end by eval-bag with the label topic: same frame count, same confusion matrix, same mIoU.
"""
from __future__ import annotations

from pathlib import Path

import bag_forms_testutil as forms_util
import bag_testutil
import numpy as np
import pytest

from seg_ros.bag.eval_bag import EvalConfig, run_eval
from seg_ros.bag.forms import ZSTD_MAGIC
from seg_ros.bag.io import BagReader, BagReadError
from seg_ros.bag.make_bag import SourceFrame, make_bag
from seg_ros.cli import main

N = 6


@pytest.fixture(scope='module')
def ref_bags(tmp_path_factory):
    """Reference bags (raw rgb8 and JPEG) and their eval-bag reports."""
    from seg_ros.data.synthetic import SyntheticDrive

    root = tmp_path_factory.mktemp('forms')
    d = SyntheticDrive(size=bag_testutil.MODEL_SIZE, seed=5)
    frames = [SourceFrame(*d.frame(i), name=f'{i:06d}') for i in range(N)]
    out = {}
    for kind, compressed in (('raw', None), ('jpeg', 'jpeg')):
        bag = make_bag(root / f'ref_{kind}', frames, compressed=compressed,
                       image_topic='/camera/image_raw', progress=False).path
        out[kind] = (bag, evaluate(bag, root / f'ref_{kind}_report'))
    return root, out


def evaluate(bag: Path, out: Path, topic: str = '/camera/image_raw',
             label_topic: str = '/labels') -> dict:
    cfg = EvalConfig(bag=bag, model=str(bag_testutil.onnx_model()), image_topic=topic,
                     out_dir=out, backend=bag_testutil.BACKEND, device='cpu',
                     label_topic=label_topic, plots=False, warmup=1)
    return run_eval(cfg, progress=False)


def assert_same_scores(report: dict, ref: dict) -> None:
    assert report['complete'], report['error']
    assert report['frames']['read'] == ref['frames']['read'] == N
    assert report['frames']['evaluated'] == N
    np.testing.assert_array_equal(np.asarray(report['confusion_matrix']),
                                  np.asarray(ref['confusion_matrix']))
    assert report['metrics']['miou'] == ref['metrics']['miou']


FORMS = {
    # name: (writer, image kind, expected format, expected substring of the description)
    'ros1': (lambda ref, p: forms_util.write_ros1(ref, p / 'cam.bag'), 'raw', 'rosbag1',
             'ROS 1 bag'),
    'ros1_lz4_chunks': (lambda ref, p: forms_util.write_ros1(ref, p / 'cam.bag', 'lz4'),
                        'raw', 'rosbag1', 'chunk lz4'),
    'ros1_bz2_compressedimage': (
        lambda ref, p: forms_util.write_ros1(ref, p / 'cam.bag', 'bz2'), 'jpeg', 'rosbag1',
        'chunk bz2'),
    'pre_foxy_bare_db3': (
        lambda ref, p: forms_util.write_pre_foxy_sqlite3(ref, p / 'old.db3'), 'raw',
        'sqlite3', 'Dashing/Eloquent'),
    'pre_foxy_folder_v1_metadata': (
        lambda ref, p: forms_util.write_pre_foxy_sqlite3(ref, p / 'old', metadata=True), 'jpeg',
        'sqlite3', 'metadata.yaml'),
    'mcap_bare_message_zstd': (
        lambda ref, p: forms_util.write_rosbag2_compressed(ref, p / 'x.mcap', 'mcap', 'message',
                                                           bare=True), 'raw', 'mcap',
        'message zstd'),
    'mcap_folder_message_zstd': (
        lambda ref, p: forms_util.write_rosbag2_compressed(ref, p / 'x', 'mcap', 'message'),
        'jpeg', 'mcap', 'message zstd'),
    'mcap_folder_chunk_zstd': (
        lambda ref, p: forms_util.write_rosbag2_compressed(ref, p / 'x', 'mcap', 'storage'),
        'raw', 'mcap', 'chunk zstd'),
    'sqlite3_bare_message_zstd': (
        lambda ref, p: forms_util.write_rosbag2_compressed(ref, p / 'x.db3', 'sqlite3',
                                                           'message', bare=True), 'raw',
        'sqlite3', 'message zstd'),
}


@pytest.mark.parametrize('name', list(FORMS))
def test_form_scores_like_the_modern_bag(ref_bags, tmp_path, name):
    writer, kind, fmt, text = FORMS[name]
    ref_bag, ref_report = ref_bags[1][kind]
    bag = writer(ref_bag, tmp_path)
    topic = '/camera/image_raw'
    report = evaluate(bag, tmp_path / 'report', topic)
    assert_same_scores(report, ref_report)
    form = report['bag']['form']
    assert form['format'] == fmt
    assert text in form['description'], form
    assert report['bag']['image_msgtype'] == ref_report['bag']['image_msgtype']


def test_bare_mcap_payloads_really_are_compressed_and_noted(ref_bags, tmp_path):
    ref_bag = ref_bags[1]['raw'][0]
    bag = forms_util.write_rosbag2_compressed(ref_bag, tmp_path / 'x.mcap', 'mcap', 'message',
                                              bare=True)
    assert forms_util.first_payload(bag).startswith(ZSTD_MAGIC)  # the test can fail
    with BagReader(bag) as r:
        frames = list(r.frames('/camera/image_raw'))
        assert len(frames) == N and all(f.rgb is not None for f in frames)
        assert any('zstd-compressed one by one' in n for n in r.form.notes)


def test_pre_foxy_types_are_mapped_and_topics_forgive_the_slash(ref_bags, tmp_path):
    ref_bag, ref_report = ref_bags[1]['raw']
    bag = forms_util.write_pre_foxy_sqlite3(ref_bag, tmp_path / 'old.db3', strip_slash=True)
    with BagReader(bag) as r:
        assert {t.msgtype for t in r.topics().values()} == {
            'sensor_msgs/msg/Image', 'sensor_msgs/msg/CameraInfo'}
        assert r.form.old_type_names
    # stored as 'camera/image_raw', typed with the slash: read, and the report says so
    report = evaluate(bag, tmp_path / 'report', '/camera/image_raw', '/labels')
    assert_same_scores(report, ref_report)
    notes = report['bag']['form']['notes']
    assert any("'/camera/image_raw' is stored without its leading slash" in n for n in notes)
    assert report['config']['image_topic'] == 'camera/image_raw'


def test_extra_slash_forgiven_in_cli_and_said(ref_bags, tmp_path, capsys):
    ref_bag = ref_bags[1]['raw'][0]
    bag = forms_util.write_ros1(ref_bag, tmp_path / 'cam.bag')
    rc = main(['eval-bag', str(bag), '--model', str(bag_testutil.onnx_model()),
               '--backend', bag_testutil.BACKEND, '--device', 'cpu', '--image-topic',
               'camera/image_raw', '--label-topic', 'labels', '--out', str(tmp_path / 'r'),
               '--no-plots'])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert 'read: ROS 1 bag (v2.0), file; era: ROS 1' in out
    assert "note: topic 'camera/image_raw' is stored with its leading slash" in out
    assert 'after 3 warm-up runs' in out


def test_file_compressed_and_unknown_payloads_are_one_line_errors(ref_bags, tmp_path):
    ref_bag = ref_bags[1]['raw'][0]
    mcap = forms_util.write_rosbag2_compressed(ref_bag, tmp_path / 'x.mcap', 'mcap', 'none',
                                               bare=True)
    from backports import zstd

    packed = tmp_path / 'x.mcap.zst'
    packed.write_bytes(zstd.compress(mcap.read_bytes()))
    with pytest.raises(BagReadError, match=r'whole file is zstd-compressed.*zstd -d x.mcap.zst'):
        BagReader(packed)
    # a payload compressed with something rosbag2 never writes: named, not "corrupt"
    import gzip
    import sqlite3

    db_bag = forms_util.write_pre_foxy_sqlite3(ref_bag, tmp_path / 'old.db3')
    db = sqlite3.connect(db_bag)
    row = db.execute('SELECT id, data FROM messages WHERE topic_id=1 ORDER BY id').fetchone()
    db.execute('UPDATE messages SET data=? WHERE id=?', (gzip.compress(row[1]), row[0]))
    db.commit()
    db.close()
    with BagReader(db_bag) as r:
        with pytest.raises(BagReadError, match=r'message 0 .*gzip-compressed; decompress'):
            list(r.frames('/camera/image_raw'))
    # a ROS 1 bag cut short (recorder killed before writing its index)
    ros1 = forms_util.write_ros1(ref_bag, tmp_path / 'cam.bag')
    ros1.write_bytes(ros1.read_bytes()[:ros1.stat().st_size // 2])
    with pytest.raises(BagReadError, match=r'cannot open ROS 1 bag .*rosbag reindex'):
        BagReader(ros1)


def test_output_bag_of_a_ros1_input_is_rosbag2(ref_bags, tmp_path):
    ref_bag = ref_bags[1]['raw'][0]
    bag = forms_util.write_ros1(ref_bag, tmp_path / 'cam.bag')
    cfg = EvalConfig(bag=bag, model=str(bag_testutil.onnx_model()),
                     image_topic='/camera/image_raw', out_dir=tmp_path / 'r',
                     backend=bag_testutil.BACKEND, device='cpu', plots=False, write_bag=True,
                     warmup=0)
    report = run_eval(cfg, progress=False)
    assert report['output_bag']['storage'] == 'sqlite3'
    with BagReader(tmp_path / 'r' / 'output_bag') as r:
        assert r.form.format == 'sqlite3' and r.form.container == 'folder'
        got = list(r.frames('/camera/image_raw'))
        with BagReader(ref_bag) as ref:
            want = list(ref.frames('/camera/image_raw'))
        assert [g.stamp for g in got] == [w.stamp for w in want]
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g.rgb, w.rgb)


def test_int8_calibration_frames_from_a_ros1_bag(ref_bags, tmp_path):
    from seg_ros.runtime.calibration import CalibrationData

    T = '/camera/image_raw'
    ref_bag = ref_bags[1]['raw'][0]
    bag = forms_util.write_ros1(ref_bag, tmp_path / 'cam.bag')
    got = list(CalibrationData(bag, (32, 64), num_frames=3, batch_size=1, topic=T).frames())
    want = list(CalibrationData(ref_bag, (32, 64), num_frames=3, batch_size=1,
                                topic=T).frames())
    assert len(got) == len(want) == 3
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize('form', ['ros1', 'pre_foxy'])
def test_make_bag_from_bag_gives_a_modern_rosbag2_that_scores_the_same(ref_bags, tmp_path,
                                                                       capsys, form):
    ref_bag, ref_report = ref_bags[1]['raw']
    src = (forms_util.write_ros1(ref_bag, tmp_path / 'cam.bag') if form == 'ros1' else
           forms_util.write_pre_foxy_sqlite3(ref_bag, tmp_path / 'old.db3', strip_slash=True))
    out = tmp_path / 'modern'
    assert main(['make-bag', '--from-bag', str(src), '--out', str(out), '--storage', 'mcap']) == 0
    printed = capsys.readouterr().out
    assert f'{N} frames on /camera/image_raw, {N} labels on /labels' in printed
    with BagReader(out) as r:
        assert r.form.format == 'mcap' and r.form.container == 'folder'
        assert not r.form.old_type_names
        assert set(r.topics()) == {'/camera/image_raw', '/labels', '/camera/camera_info'}
    assert_same_scores(evaluate(out, tmp_path / 'report'), ref_report)
