"""Bag I/O without a model: make-bag round trips, salvage of damaged bags, label matching,
report files."""
from __future__ import annotations

import json
from pathlib import Path
import shutil

import cv2
import numpy as np
import pytest

from seg_ros.bag.io import (
    CAMERA_INFO_TYPE,
    COMPRESSED_TYPE,
    IMAGE_TYPE,
    BagReader,
    BagReadError,
    BagWriter,
    bag_sha256,
    cdr_header_stamp,
    typestore,
)
from seg_ros.bag.labels import LabelMatcher, labels_from_dir, parse_stamp
from seg_ros.bag.make_bag import DEFAULT_START_NS, SourceFrame, folder_frames, make_bag
from seg_ros.bag.report import Accumulator, colorize, latency_stats, metrics_section, write_report
from seg_ros.encodings import compressed_to_rgb, encode_compressed
from seg_ros.errors import SegRosError
from seg_ros.eval.metrics import ConfusionMatrix
from seg_ros.metadata import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

H, W = 24, 40


def tiny_frames(n: int, seed: int = 0) -> list[SourceFrame]:
    """Frames whose pixels and labels differ per frame (so a mix-up would show)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        label = rng.integers(0, 5, (H, W), dtype=np.uint8)
        label[0, :] = 255
        out.append(SourceFrame(rgb, label, f'img_{i:03d}'))
    return out


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_make_bag_round_trip(tmp_path, storage):
    frames = tiny_frames(5)
    res = make_bag(tmp_path / 'bag', frames, storage=storage, rate_hz=20, progress=False)
    assert (res.frames, res.labelled, res.label_topic) == (5, 5, '/labels')
    with BagReader(tmp_path / 'bag') as r:
        topics = r.topics()
        assert topics['/camera/image_raw'].msgtype == IMAGE_TYPE
        assert topics['/camera/camera_info'].msgtype == CAMERA_INFO_TYPE
        assert {t.count for t in topics.values()} == {5}
        assert r.storage_id == storage
        assert r.frame_names() == [f.name for f in frames]
        got = list(r.frames('/camera/image_raw'))
        labels = list(r.label_messages('/labels'))
        stamps, err = r.stamps('/camera/image_raw')
    assert err == ''
    for i, (f, g, (ls, lab)) in enumerate(zip(frames, got, labels)):
        assert g.index == i and g.frame_id == 'camera'
        assert g.stamp_ns == DEFAULT_START_NS + i * 50_000_000 == ls == stamps[i]
        np.testing.assert_array_equal(g.rgb, f.rgb)
        np.testing.assert_array_equal(lab, f.label)


def test_camera_info_and_sha(tmp_path):
    make_bag(tmp_path / 'bag', tiny_frames(2), progress=False)
    with BagReader(tmp_path / 'bag') as r:
        (_, _, raw, msgtype), *_ = list(r.raw_messages(['/camera/camera_info']))
    info = typestore().deserialize_cdr(raw, msgtype)
    assert (info.height, info.width) == (H, W)
    assert info.k[0] == pytest.approx(W / 2)  # 90 degree horizontal field of view
    sha = bag_sha256(tmp_path / 'bag')
    assert set(sha['files']) == {'metadata.yaml', 'bag.db3'}
    assert sha == bag_sha256(tmp_path / 'bag')


def test_compressed_png_is_lossless_jpeg_close(tmp_path):
    frames = tiny_frames(3)
    for fmt in ('png', 'jpeg'):
        res = make_bag(tmp_path / fmt, frames, compressed=fmt, progress=False, jpeg_quality=95)
        assert res.image_topic == '/camera/image_raw/compressed'
        with BagReader(tmp_path / fmt) as r:
            assert r.topics()[res.image_topic].msgtype == COMPRESSED_TYPE
            got = [f.rgb for f in r.frames(res.image_topic)]
        for f, g in zip(frames, got):
            if fmt == 'png':
                np.testing.assert_array_equal(g, f.rgb)
            else:  # exactly what decoding the same JPEG bytes gives
                expected = compressed_to_rgb(encode_compressed(f.rgb, 'jpeg', 95), 'jpeg')
                np.testing.assert_array_equal(g, expected)


def test_folder_source_with_masks(tmp_path):
    src = tmp_path / 'src'
    (src / 'images').mkdir(parents=True)
    (src / 'masks').mkdir()
    frames = tiny_frames(3)
    for f in frames:
        cv2.imwrite(str(src / 'images' / f'{f.name}.png'), cv2.cvtColor(f.rgb, cv2.COLOR_RGB2BGR))
    for f in frames[:2]:  # the last image has no mask: it gets no label message
        cv2.imwrite(str(src / 'masks' / f'{f.name}.png'), f.label)
    n, gen = folder_frames(src)
    res = make_bag(tmp_path / 'bag', gen, total=n, storage='mcap', progress=False)
    assert (res.frames, res.labelled) == (3, 2)
    with BagReader(tmp_path / 'bag') as r:
        assert r.frame_names() == [f.name for f in frames]
        np.testing.assert_array_equal(next(iter(r.frames('/camera/image_raw'))).rgb,
                                      frames[0].rgb)


def test_writer_refuses_existing_and_cleans_up_on_error(tmp_path):
    make_bag(tmp_path / 'bag', tiny_frames(1), progress=False)
    with pytest.raises(SegRosError, match='exists already'):
        make_bag(tmp_path / 'bag', tiny_frames(1), progress=False)
    bad = [SourceFrame(np.zeros((4, 4), np.uint8), None, 'x')]
    with pytest.raises(SegRosError, match='HxWx3'):
        make_bag(tmp_path / 'bad', bad, progress=False)
    assert not (tmp_path / 'bad').exists()


def test_missing_bag_topic_and_not_a_bag(tmp_path):
    with pytest.raises(BagReadError, match='no such bag'):
        BagReader(tmp_path / 'nope')
    (tmp_path / 'junk').mkdir()
    (tmp_path / 'junk' / 'x.txt').write_text('hi')
    with pytest.raises(BagReadError, match='not a rosbag2'):
        BagReader(tmp_path / 'junk')
    make_bag(tmp_path / 'bag', tiny_frames(1), progress=False)
    with BagReader(tmp_path / 'bag') as r:
        with pytest.raises(BagReadError, match=r"'/cam' not in bag \(topics: .*/camera/image_raw"):
            list(r.frames('/cam'))
        with pytest.raises(BagReadError, match='expected sensor_msgs/msg/Image'):
            list(r.frames('/camera/camera_info'))


def test_bag_without_metadata_yaml_is_read_from_its_storage_file(tmp_path):
    make_bag(tmp_path / 'bag', tiny_frames(3), storage='mcap', progress=False)
    (tmp_path / 'bag' / 'metadata.yaml').unlink()  # a recorder killed before closing
    with BagReader(tmp_path / 'bag') as r:
        assert len(list(r.frames('/camera/image_raw'))) == 3


def _storage_file(bag: Path) -> Path:
    return next(p for p in bag.iterdir() if p.suffix in ('.db3', '.mcap'))


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_truncated_bag_is_salvaged_up_to_the_break(tmp_path, storage):
    # 60 frames of 24x40 noise: several sqlite overflow pages / MCAP chunk records each
    frames = tiny_frames(60)
    make_bag(tmp_path / 'bag', frames, storage=storage, progress=False)
    f = _storage_file(tmp_path / 'bag')
    data = f.read_bytes()
    f.write_bytes(data[:len(data) // 2])
    with BagReader(tmp_path / 'bag') as r:
        assert r.salvaged and r.damage
        got = []
        with pytest.raises(BagReadError, match='truncated or damaged') as exc:
            for fr in r.frames('/camera/image_raw'):
                got.append(fr)
    assert 5 < len(got) < 60
    assert exc.value.frames_read == len(got)
    for g, f0 in zip(got, frames):  # what was recovered is exact
        np.testing.assert_array_equal(g.rgb, f0.rgb)


def test_bag_cut_before_any_message_is_a_clear_error(tmp_path):
    make_bag(tmp_path / 'bag', tiny_frames(3), storage='mcap', progress=False)
    f = _storage_file(tmp_path / 'bag')
    f.write_bytes(f.read_bytes()[:20])
    with pytest.raises(BagReadError, match='no message could be recovered'):
        BagReader(tmp_path / 'bag')


def test_corrupt_message_payload_is_reported_with_position(tmp_path):
    make_bag(tmp_path / 'bag', tiny_frames(4), storage='sqlite3', progress=False)
    shutil.copytree(tmp_path / 'bag', tmp_path / 'bad')
    import sqlite3

    db = sqlite3.connect(_storage_file(tmp_path / 'bad'))
    topic_id = db.execute("SELECT id FROM topics WHERE name='/camera/image_raw'").fetchone()[0]
    rows = db.execute('SELECT id FROM messages WHERE topic_id=? ORDER BY id',
                      (topic_id,)).fetchall()
    db.execute('UPDATE messages SET data=? WHERE id=?', (b'\x00\x01\x00\x00garbage', rows[2][0]))
    db.commit()
    db.close()
    with BagReader(tmp_path / 'bad') as r:
        got = []
        with pytest.raises(BagReadError, match='message 2 .* is corrupt') as exc:
            for fr in r.frames('/camera/image_raw'):
                got.append(fr)
    assert len(got) == 2 and exc.value.frames_read == 2


def test_cdr_header_stamp_matches_deserialised(tmp_path):
    make_bag(tmp_path / 'bag', tiny_frames(2), progress=False)
    with BagReader(tmp_path / 'bag') as r:
        for _, _, raw, msgtype in r.raw_messages(['/camera/image_raw']):
            msg = typestore().deserialize_cdr(raw, msgtype)
            assert cdr_header_stamp(raw) == msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def test_parse_stamp():
    assert parse_stamp('1700000000123456789') == 1700000000123456789
    assert parse_stamp('1700000000.5') == 1700000000500000000
    assert parse_stamp('1700000000_000000042') == 1700000000000000042
    assert parse_stamp('000012') is None
    assert parse_stamp('frame_1') is None


def test_timestamp_matching_with_tolerance():
    base = 1_700_000_000_000_000_000
    labels = [(base + 250_000, np.full((2, 2), 1, np.uint8)),   # 0.25 ms after frame 0
              (base + 100_000_000 + 3_000_000, np.full((2, 2), 2, np.uint8))]  # 3 ms late
    m = LabelMatcher.from_stamped(labels, tolerance_ms=1.0, source='test')
    assert m.match(base, 0)[0, 0] == 1
    assert m.match(base + 100_000_000, 1) is None
    assert m.match(base + 50_000_000, 2) is None
    loose = LabelMatcher.from_stamped(labels, tolerance_ms=5.0, source='test')
    assert loose.match(base + 100_000_000, 1)[0, 0] == 2
    assert loose.describe() == {'source': 'test', 'mode': 'timestamp', 'labels': 2,
                                'tolerance_ms': 5.0}


def test_label_dir_by_stamp_and_by_name(tmp_path):
    lab = np.arange(6, dtype=np.uint8).reshape(2, 3)
    by_stamp = tmp_path / 'stamps'
    by_stamp.mkdir()
    cv2.imwrite(str(by_stamp / '1700000000.100000000.png'), lab)
    m = labels_from_dir(by_stamp)
    assert m.mode == 'timestamp'
    np.testing.assert_array_equal(m.match(1_700_000_000_100_000_400, 7), lab)
    by_name = tmp_path / 'names'
    by_name.mkdir()
    cv2.imwrite(str(by_name / 'left_0042.png'), lab)
    cv2.imwrite(str(by_name / '000003.png'), lab + 1)
    m = labels_from_dir(by_name)
    assert m.mode == 'name'
    np.testing.assert_array_equal(m.match(0, 0, ['left_0042']), lab)
    np.testing.assert_array_equal(m.match(0, 3, None), lab + 1)  # frame index
    assert m.match(0, 1, ['other']) is None
    with pytest.raises(SegRosError, match='not stamps'):
        labels_from_dir(by_name, match='timestamp')
    cv2.imwrite(str(by_name / 'colour.png'), np.dstack([lab, lab + 1, lab]))
    with pytest.raises(SegRosError, match='colour image'):
        labels_from_dir(by_name).match(0, 0, ['colour'])


def test_report_files_and_metrics(tmp_path):
    rng = np.random.default_rng(0)
    acc = Accumulator(19, sample_indices={0, 2})
    cm = ConfusionMatrix(19)
    for i in range(3):
        rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        label = rng.integers(0, 4, (H, W), dtype=np.uint8)
        pred = np.where(rng.random((H, W)) < 0.8, label, 3).astype(np.uint8)
        acc.add(i, rgb, pred, label if i < 2 else None, 10.0 + i)
        if i < 2:
            cm.update(pred, label)
    names = list(CITYSCAPES_CLASSES)
    palette = [list(c) for c in CITYSCAPES_PALETTE]
    metrics = metrics_section(acc, names)
    assert metrics['miou'] == pytest.approx(cm.miou())
    report = {'mode': 'offline', 'complete': True, 'metrics': metrics,
              'latency_ms': latency_stats(acc.latencies_ms),
              'frames': {'evaluated': acc.frames_evaluated,
                         'without_label': acc.frames_without_label}}
    files = write_report(tmp_path, report, acc, names, palette)
    for key in ('iou_plot', 'confusion_plot', 'latency_plot', 'samples'):
        assert (tmp_path / files[key]).stat().st_size > 1000
    data = json.loads((tmp_path / 'report.json').read_text())
    assert data['frames'] == {'evaluated': 2, 'without_label': 1}
    assert data['latency_ms']['p50'] == pytest.approx(11.0)
    assert np.array_equal(np.array(data['confusion_matrix']), cm.matrix)
    assert 'mIoU' in (tmp_path / 'report.md').read_text()
    strip = cv2.imread(str(tmp_path / files['samples']))
    assert strip.shape[0] >= 2 * H  # two sample rows


def test_colorize_ignore_is_black():
    ids = np.array([[0, 255]], np.uint8)
    out = colorize(ids, [list(c) for c in CITYSCAPES_PALETTE])
    assert out[0, 0].tolist() == list(CITYSCAPES_PALETTE[0]) and out[0, 1].tolist() == [0, 0, 0]


def test_writer_counts(tmp_path):
    with BagWriter(tmp_path / 'b', 'mcap') as w:
        w.write_image('/m', np.zeros((2, 3), np.uint8), 'mono8', 5, 'f')
    assert w.counts == {'/m': 1}


def test_truncated_zstd_mcap_keeps_the_cut_chunks_leading_frames(tmp_path):
    """ros2 bag record writes zstd-compressed MCAP chunks by default: a cut chunk is still
    decoded as far as it goes."""
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

    from seg_ros.bag.io import _header

    ts = typestore()
    writer = Writer(tmp_path / 'z', version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    writer.open()
    conn = writer.add_connection('/cam', IMAGE_TYPE, typestore=ts)
    frames = [f.rgb for f in tiny_frames(100)]
    for i, rgb in enumerate(frames):
        msg = ts.types[IMAGE_TYPE](header=_header(10**18 + i, 'c'), height=H, width=W,
                                   encoding='rgb8', is_bigendian=0, step=3 * W, data=rgb.ravel())
        writer.write(conn, 10**18 + i, ts.serialize_cdr(msg, IMAGE_TYPE))
    writer.close()
    f = _storage_file(tmp_path / 'z')
    data = f.read_bytes()
    f.write_bytes(data[:len(data) * 6 // 10])
    got = []
    with BagReader(tmp_path / 'z') as r, pytest.raises(BagReadError):
        for fr in r.frames('/cam'):
            got.append(fr.rgb)
    assert 30 < len(got) < 100
    for g, rgb in zip(got, frames):
        np.testing.assert_array_equal(g, rgb)


def test_cli_make_bag_synthetic_and_errors(tmp_path, capsys):
    from seg_ros.cli import main
    from seg_ros.data.synthetic import SyntheticDrive

    assert main(['make-bag', '--synthetic', '3', '--size', '32x64', '--storage', 'mcap',
                 '--rate', '5', '--out', str(tmp_path / 'bag')]) == 0
    assert '3 frames on /camera/image_raw, 3 labels on /labels' in capsys.readouterr().out
    drive = SyntheticDrive(size=(32, 64), seed=0)
    with BagReader(tmp_path / 'bag') as r:
        frames = list(r.frames('/camera/image_raw'))
        (_, _, raw, msgtype), *_ = list(r.raw_messages(['/camera/camera_info']))
    np.testing.assert_array_equal(frames[2].rgb, drive.frame(2)[0])
    assert frames[1].stamp_ns - frames[0].stamp_ns == 200_000_000
    assert typestore().deserialize_cdr(raw, msgtype).k[0] == pytest.approx(drive.focal)
    assert main(['make-bag', '--out', str(tmp_path / 'x')]) == 1
    assert main(['make-bag', '--synthetic', '2', '--size', '12', '--out',
                 str(tmp_path / 'y')]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['seg-ros make-bag: error: give SRC (an image folder or dataset root) or '
                   '--synthetic N',
                   "seg-ros make-bag: error: size must be HxW (e.g. 256x512), got '12'"]
