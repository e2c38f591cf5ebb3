"""eval-bag --live: the node in a subprocess, the bag played from another, masks recorded here."""
from __future__ import annotations

import json

import bag_testutil
import numpy as np
import pytest

from seg_ros.bag.eval_bag import OUTPUT_BAG_NAME, OUTPUT_PREFIX, EvalConfig, run_eval
from seg_ros.bag.io import BagReader
from seg_ros.bag.make_bag import SourceFrame, make_bag
from seg_ros.bag.player import index_from_stamp, live_stamp
from seg_ros.eval.metrics import ConfusionMatrix

pytestmark = pytest.mark.ros

SIZE = bag_testutil.MODEL_SIZE
N = 10


def test_live_stamp_round_trip():
    wall = 1_763_900_000_123_456_789
    for i in (0, 7, 999_999):
        s = live_stamp(wall, i)
        assert abs(s - wall) < 1_000_000 and index_from_stamp(s, 1_000_000) == i
    assert index_from_stamp(live_stamp(wall, 12), 10) is None  # not a frame of this run
    assert index_from_stamp(1_000_000_005, 10) is None  # warm-up stamp


def test_live_eval_through_the_node(tmp_path):
    """Compressed (PNG: lossless) input, so the node's decode path is covered too; raw Image
    input goes live in test_demo."""
    from seg_ros.data.synthetic import SyntheticDrive

    d = SyntheticDrive(size=SIZE, seed=5)
    frames = [SourceFrame(*d.frame(i), name=str(i)) for i in range(N)]
    made = make_bag(tmp_path / 'bag', frames, rate_hz=10, compressed='png', progress=False)
    model_file = bag_testutil.onnx_model()
    cfg = EvalConfig(bag=tmp_path / 'bag', model=str(model_file), backend=bag_testutil.BACKEND,
                     device='cpu',
                     image_topic=made.image_topic, label_topic='/labels',
                     out_dir=tmp_path / 'out', live=True, rate=1.0, write_bag=True, samples=2,
                     node_timeout_s=90)
    report = run_eval(cfg, progress=False)
    fr = report['frames']
    assert report['mode'] == 'live' and report['complete']
    assert fr['published'] == N
    assert 1 <= fr['received'] <= N and fr['dropped'] == N - fr['received']
    assert fr['evaluated'] == fr['received']
    lat = report['latency_ms']
    assert lat['n'] == fr['received'] and 0 < lat['p50'] <= lat['p99'] < 5000
    assert report['rate_hz']['input'] == pytest.approx(10.0, rel=0.3)
    # every mask the node sent equals the offline pipeline on the same frame, and the report's
    # confusion matrix is exactly those masks against the labels
    seg = bag_testutil.segmenter()
    cm = ConfusionMatrix(19)
    with BagReader(tmp_path / 'out' / OUTPUT_BAG_NAME) as r:
        stamps = {f.stamp_ns: f.index for f in r.frames(made.image_topic, decode=False)}
        masks = list(r.label_messages(f'{OUTPUT_PREFIX}/mask'))
    assert len(masks) == fr['received']
    for stamp, mask in masks:
        i = stamps[stamp]  # output masks carry the bag's original header
        ids = seg(frames[i].rgb).ids
        np.testing.assert_array_equal(mask, ids)
        cm.update(ids, frames[i].label)
    np.testing.assert_array_equal(np.array(report['confusion_matrix']), cm.matrix)
    published = json.loads((tmp_path / 'out' / 'published.json').read_text())
    assert [f['index'] for f in published['frames']] == list(range(N))
    assert (tmp_path / 'out' / 'samples.png').is_file()
