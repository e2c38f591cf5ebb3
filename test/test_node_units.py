"""The node's building blocks without a ROS graph: parameters, buffer, throttle, diagnostics."""
from __future__ import annotations

import json
from pathlib import Path
import threading
import time

import numpy as np
import pytest

from seg_ros.errors import SegRosError
from seg_ros.ros.diagnostics import PipelineStats, diagnostic_status
from seg_ros.ros.node_params import (
    PARAMS,
    PARAMS_BY_NAME,
    RUNTIME_PARAMS,
    markdown_table,
    validate_all,
    validate_value,
)
from seg_ros.ros.node_utils import (
    ErrorThrottle,
    FrameSlot,
    class_names_json,
    resolve_model_path,
    scale_camera_info_fields,
)

ISSUE_PARAMS = ('model', 'weights', 'backend', 'device', 'precision', 'input_width',
                'input_height', 'resize_mode', 'engine_cache_dir', 'build_engine_on_start',
                'max_rate_hz', 'overlay_alpha', 'publish_color', 'publish_overlay',
                'publish_confidence', 'palette', 'input_compressed', 'threads')


def test_parameter_table_covers_the_spec() -> None:
    assert set(ISSUE_PARAMS) <= set(PARAMS_BY_NAME)
    assert any(n.startswith('qos_') for n in PARAMS_BY_NAME)
    assert {'overlay_alpha', 'publish_color', 'publish_overlay', 'publish_confidence',
            'palette'} <= RUNTIME_PARAMS
    assert not {'model', 'backend', 'qos_reliability', 'input_compressed'} & RUNTIME_PARAMS
    for spec in PARAMS:
        assert spec.description, spec.name
        assert validate_value(spec.name, spec.default) is None, spec.name


@pytest.mark.parametrize('name,value,words', [
    ('backend', 'tensorflow', 'one of auto, tensorrt, onnxruntime, openvino, torch'),
    ('overlay_alpha', 1.5, '0..1'),
    ('overlay_alpha', 'x', 'must be a double'),
    ('input_width', -1, '0..8192'),
    ('qos_reliability', 'sometimes', 'best_effort'),
    ('device', 'gpu0', 'cuda:N'),
    ('palette', '/nonexistent/palette.yaml', 'existing YAML'),
    ('publish_color', 1, 'must be a bool'),
    ('nonsense', 1, 'unknown parameter'),
])
def test_invalid_values_have_reasons(name: str, value: object, words: str) -> None:
    reason = validate_value(name, value)
    assert reason is not None and words in reason and (name in reason or name == 'nonsense')


def test_cross_parameter_rules() -> None:
    values = {p.name: p.default for p in PARAMS}
    with pytest.raises(SegRosError, match="'model' is required"):
        validate_all(values)
    values['model'] = 'm.onnx'
    validate_all(values)
    values['input_width'] = 512
    with pytest.raises(SegRosError, match='together'):
        validate_all(values)
    assert validate_value('overlay_alpha', 1) is None  # an integer literal for a double is fine


def test_frame_slot_keeps_newest_and_counts_drops() -> None:
    slot: FrameSlot[int] = FrameSlot()
    for i in range(5):
        slot.put(i)
    assert slot.take(0) == 4
    assert (slot.received, slot.dropped) == (5, 4)
    assert slot.take(0.01) is None
    slot.put(7)
    assert slot.clear() == 1 and slot.dropped == 5

    got = []
    worker = threading.Thread(target=lambda: got.append(slot.take(5.0)))
    worker.start()
    time.sleep(0.05)
    slot.put(42)  # wakes the waiting worker at once
    worker.join(2)
    assert got == [42]

    worker = threading.Thread(target=lambda: got.append(slot.take(5.0)))
    worker.start()
    slot.close()
    worker.join(2)
    assert not worker.is_alive() and got[-1] is None
    slot.put(1)
    assert slot.take(0) is None  # closed
    slot.reopen()
    slot.put(2)
    assert slot.take(0) == 2


def test_error_throttle_per_kind() -> None:
    now = [0.0]
    throttle = ErrorThrottle(5.0, clock=lambda: now[0])
    assert throttle.check('data has 10 bytes') == 'data has 10 bytes'
    assert throttle.check('data has 12 bytes') is None  # same kind, numbers differ
    assert throttle.check("unsupported encoding 'foo'") is not None  # another kind
    now[0] = 6.0
    assert throttle.check('data has 3 bytes') == 'data has 3 bytes (1 more like this suppressed)'


def test_resolve_model_path(tmp_path: Path) -> None:
    model = tmp_path / 'm.onnx'
    model.write_bytes(b'x')
    assert resolve_model_path(str(model)) == str(model.resolve())
    assert resolve_model_path('m.onnx', base_dir=tmp_path) == str(model.resolve())
    assert resolve_model_path('regseg48') == 'regseg48'  # a registered name passes through
    with pytest.raises(SegRosError, match='model file not found'):
        resolve_model_path(str(tmp_path / 'missing.onnx'))
    with pytest.raises(SegRosError, match='model file not found'):
        resolve_model_path('package://seg_ros/models/no_such_model.onnx')
    # the share folder of an installed package (colcon test runs on the install), else the
    # source tree (pip install -e .)
    try:
        from ament_index_python.packages import get_package_share_directory

        root = Path(get_package_share_directory('seg_ros'))
    except Exception:  # not installed through ament
        root = Path(__file__).resolve().parents[1]
    assert resolve_model_path('package://seg_ros/config/regseg.yaml') == str(
        (root / 'config' / 'regseg.yaml').resolve())


def test_camera_info_scaling() -> None:
    k = [500.0, 0, 320.0, 0, 510.0, 240.0, 0, 0, 1]
    p = [500.0, 0, 320.0, 10.0, 0, 510.0, 240.0, 0, 0, 0, 1, 0]
    k2, p2 = scale_camera_info_fields(640, 480, k, p, 1280, 240)
    assert k2 == [1000.0, 0, 640.0, 0, 255.0, 120.0, 0, 0, 1]
    assert p2 == [1000.0, 0, 640.0, 20.0, 0, 255.0, 120.0, 0, 0, 0, 1, 0]
    with pytest.raises(SegRosError):
        scale_camera_info_fields(0, 0, k, p, 10, 10)


def test_class_names_json() -> None:
    data = json.loads(class_names_json('m', ['road', 'car'], [[1, 2, 3], [4, 5, 6]]))
    assert data == {'model': 'm', 'num_classes': 2, 'ignore_index': 255,
                    'classes': [{'id': 0, 'name': 'road', 'color': [1, 2, 3]},
                                {'id': 1, 'name': 'car', 'color': [4, 5, 6]}]}


def test_stats_and_diagnostic_levels() -> None:
    from diagnostic_msgs.msg import DiagnosticStatus

    now = [100.0]
    stats = PipelineStats(clock=lambda: now[0])
    for i in range(10):  # 10 frames over 1 s, latency 20..29 ms
        now[0] = 100.0 + i * 0.1
        stats.frame_received()
        stats.frame_published(20.0 + i, 15.0, 10.0)
    stats.frame_published(None, 1.0, None)  # unset stamp: no latency sample
    snap = stats.snapshot(frames_dropped=3)
    assert snap.frames_received == 10 and snap.frames_processed == 11
    assert snap.frames_dropped == 3
    assert snap.latency_p50_ms == pytest.approx(24.5)
    assert snap.latency_p99_ms == pytest.approx(np.percentile(np.arange(20, 30), 99))
    assert snap.input_rate_hz == pytest.approx(10 / 0.9, rel=0.01)

    info = {'backend': 'onnxruntime', 'model': 'regseg48'}
    ok = diagnostic_status(snap, 'n: segmentation', 'onnxruntime/cpu', info, 5.0, '/image')
    assert ok.level == DiagnosticStatus.OK
    values = {kv.key: kv.value for kv in ok.values}
    assert values['frames dropped'] == '3' and values['backend'] == 'onnxruntime'
    assert values['latency p50 (ms)'] == '24.50'

    stats.frame_rejected("unsupported encoding 'foo'")
    warn = diagnostic_status(stats.snapshot(3), 'n', 'h', info, 5.0, '/image', new_rejects=1)
    assert warn.level == DiagnosticStatus.WARN and 'foo' in warn.message
    now[0] += 10.0
    idle = diagnostic_status(stats.snapshot(3), 'n', 'h', info, 5.0, '/image')
    assert idle.level == DiagnosticStatus.WARN and 'no input on /image' in idle.message
    assert stats.snapshot(3).input_rate_hz == 0.0
    stats.inference_failed('RuntimeError: boom')
    err = diagnostic_status(stats.snapshot(3), 'n', 'h', info, 5.0, '/image', new_errors=1)
    assert err.level == DiagnosticStatus.ERROR and 'boom' in err.message


def test_docs_parameter_table_is_current() -> None:
    text = (Path(__file__).resolve().parents[1] / 'docs' / 'node.md').read_text()
    assert markdown_table() in text, (
        'docs/node.md: paste seg_ros.ros.node_params.markdown_table() into the Parameters section')


def test_frame_slot_close_counts_the_pending_frame() -> None:
    slot: FrameSlot[int] = FrameSlot()
    slot.put(1)
    slot.close()  # deactivation with a frame waiting: it is dropped, and counted
    assert (slot.received, slot.dropped) == (1, 1)
    slot.close()  # nothing pending: nothing more counted
    assert slot.dropped == 1
