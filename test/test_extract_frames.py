"""``seg-ros extract-frames``: the names it writes are the ones ``eval-bag --labels`` matches.

The own-data loop of issue 17: make-bag -> extract-frames -> labels saved under the extracted
names -> eval-bag --labels scores exactly those frames.
"""
from __future__ import annotations

from pathlib import Path

import bag_forms_testutil as forms_util
import bag_testutil
import cv2
import numpy as np
import pytest
import yaml

from seg_ros.bag.extract import extract_frames, frame_stem
from seg_ros.bag.io import BagReader, BagWriter
from seg_ros.bag.labels import labels_from_dir
from seg_ros.cli import main
from seg_ros.errors import SegRosError
from seg_ros.eval.metrics import ConfusionMatrix

N = 5


@pytest.fixture(scope='module')
def bags(tmp_path_factory):
    """make-bag through the CLI: raw rgb8 and JPEG, 5 labelled synthetic frames each."""
    root = tmp_path_factory.mktemp('extract')
    h, w = bag_testutil.MODEL_SIZE
    for name, extra in (('raw', []), ('jpeg', ['--compressed'])):
        assert main(['make-bag', '--synthetic', str(N), '--size', f'{h}x{w}', '--seed', '2',
                     '--out', str(root / name)] + extra) == 0
    return root


def bag_stamps(bag: Path, topic: str) -> list[int]:
    with BagReader(bag) as r:
        return r.stamps(topic)[0]


def test_make_bag_extract_label_eval_bag_loop(bags, tmp_path, capsys):
    bag = bags / 'raw'
    frames_dir, labels_dir = tmp_path / 'frames', tmp_path / 'labels'
    assert main(['extract-frames', str(bag), '--topic', '/camera/image_raw', '--every', '2',
                 '--out', str(frames_dir), '--no-progress']) == 0
    out = capsys.readouterr().out
    assert 'wrote 3 frames of /camera/image_raw' in out
    assert 'camera_info.yaml from /camera/camera_info' in out
    stamps = bag_stamps(bag, '/camera/image_raw')
    names = sorted(p.name for p in frames_dir.glob('*.png'))
    assert names == sorted(f'{frame_stem(stamps[i])}.png' for i in (0, 2, 4))
    # eval-bag's own parser reads the names back as exactly the frames' stamps
    matcher = labels_from_dir(frames_dir)
    assert matcher.mode == 'timestamp'
    assert sorted(int(s) for s in matcher._stamps) == [stamps[i] for i in (0, 2, 4)]

    # "labelling": the bag's label topic, extracted under the same names (mono8 stays 1 channel)
    assert main(['extract-frames', str(bag), '--topic', '/labels', '--every', '2',
                 '--out', str(labels_dir), '--no-progress']) == 0
    assert sorted(p.name for p in labels_dir.glob('*.png')) == names
    label0 = cv2.imread(str(labels_dir / names[0]), cv2.IMREAD_UNCHANGED)
    assert label0.ndim == 2 and label0.dtype == np.uint8

    assert main(['eval-bag', str(bag), '--model', str(bag_testutil.onnx_model()),
                 '--backend', bag_testutil.BACKEND, '--device', 'cpu', '--image-topic',
                 '/camera/image_raw', '--labels', str(labels_dir), '--out',
                 str(tmp_path / 'report'), '--no-plots']) == 0
    import json

    report = json.loads((tmp_path / 'report' / 'report.json').read_text())
    assert report['frames']['evaluated'] == 3 and report['frames']['without_label'] == 2
    # the same three frames scored directly: the extracted images are the bag's pixels
    seg = bag_testutil.segmenter()
    cm = ConfusionMatrix(19)
    for name in names:
        rgb = cv2.cvtColor(cv2.imread(str(frames_dir / name)), cv2.COLOR_BGR2RGB)
        cm.update(seg(rgb).ids, cv2.imread(str(labels_dir / name), cv2.IMREAD_UNCHANGED))
    np.testing.assert_array_equal(np.asarray(report['confusion_matrix']), cm.matrix)


def test_compressed_topic_from_a_ros1_bag(bags, tmp_path):
    ros1 = forms_util.write_ros1(bags / 'jpeg', tmp_path / 'cam.bag', 'lz4')
    res = extract_frames(ros1, 'camera/image_raw/compressed', tmp_path / 'out', progress=False)
    assert len(res.files) == N and 'ROS 1' in res.form
    assert any('leading slash' in n for n in res.notes)
    with BagReader(bags / 'jpeg') as r:
        want = [f.rgb for f in r.frames('/camera/image_raw/compressed')]
    for f, rgb in zip(res.files, want):  # PNG of the decoded JPEG: exact
        np.testing.assert_array_equal(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB), rgb)
    info = yaml.safe_load((tmp_path / 'out' / 'camera_info.yaml').read_text())
    with BagReader(bags / 'jpeg') as r:
        (_, _, raw, msgtype), *_ = r.raw_messages(['/camera/camera_info'])
    from seg_ros.bag.io import typestore

    msg = typestore().deserialize_cdr(raw, msgtype)
    assert info['camera_matrix']['data'] == [float(x) for x in msg.k]
    assert (info['image_height'], info['image_width']) == bag_testutil.MODEL_SIZE


def test_stamps_file_selects_exactly_those_frames(bags, tmp_path):
    stamps = bag_stamps(bags / 'raw', '/camera/image_raw')
    listing = tmp_path / 'stamps.txt'
    listing.write_text(f'# frames to label\n{stamps[3]}\n\n{frame_stem(stamps[1])}.png\n')
    res = extract_frames(bags / 'raw', '/camera/image_raw', tmp_path / 'out',
                         stamps_file=listing, progress=False)
    assert res.stamps_ns == [stamps[1], stamps[3]]
    listing.write_text(f'{stamps[0] + 5_000_000}\n')  # 5 ms off: no frame
    with pytest.raises(SegRosError, match=r'1 of 1 stamps match no frame within 1 ms'):
        extract_frames(bags / 'raw', '/camera/image_raw', tmp_path / 'o2', stamps_file=listing)
    listing.write_text('frame_7\n')
    with pytest.raises(SegRosError, match=r"stamps.txt:1: 'frame_7' is not a stamp"):
        extract_frames(bags / 'raw', '/camera/image_raw', tmp_path / 'o3', stamps_file=listing)


def test_existing_files_are_refused_unless_overwrite(bags, tmp_path, capsys):
    args = ['extract-frames', str(bags / 'raw'), '--topic', '/camera/image_raw', '--out',
            str(tmp_path / 'out'), '--every', '4']
    assert main(args) == 0
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / 'out').iterdir()}
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'exist already' in err[0] and '--overwrite' in err[0]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / 'out').iterdir()} == before
    assert main(args + ['--overwrite']) == 0


def test_bad_input_is_a_one_line_error(bags, tmp_path, capsys):
    for extra, text in ((['--topic', '/nope'], "'/nope' not in bag"),
                        (['--topic', '/camera/camera_info'], 'expected sensor_msgs/msg/Image'),
                        (['--topic', '/camera/image_raw', '--every', '0'], 'must be >= 1')):
        assert main(['extract-frames', str(bags / 'raw'), '--out', str(tmp_path / 'o')]
                    + extra) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and text in err[0], err


def test_frames_sharing_a_stamp_are_refused(tmp_path):
    with BagWriter(tmp_path / 'same', 'sqlite3') as w:
        for _ in range(2):  # a driver that never stamps
            w.write_image('/cam/image', np.zeros((4, 6, 3), np.uint8), 'rgb8', 0, 'cam', 1)
    with pytest.raises(SegRosError, match=r'frames 0 and 1 of /cam/image share the header '
                                          r'stamp 0\.000000000'):
        extract_frames(tmp_path / 'same', '/cam/image', tmp_path / 'out')
