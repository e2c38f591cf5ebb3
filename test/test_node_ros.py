"""segmentation_node end to end: the node in a subprocess, publisher and subscriber here.

One node serves the whole module (starting one costs seconds). The model is a random-weight
regseg48 checkpoint at 64x128 on the torch backend with one thread in both processes, so the
node's ids can be compared bit for bit with the offline Segmenter on the same frame.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

from seg_ros.encodings import SUPPORTED_ENCODINGS, image_to_rgb
from seg_ros.testing.node_harness import (
    NodeProcess,
    RosClient,
    make_image,
    offline_segmenter,
    random_checkpoint,
    stamp_ns,
)

pytestmark = pytest.mark.ros

NODE = '/segmentation_node'
H, W = 120, 160  # camera frames: not the network's 64x128, so resizing is exercised
LOSSLESS = ('rgb8', 'bgr8', 'rgba8', 'bgra8', '8UC3')


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp('node_model') / 'regseg48_64x128.pt')


@pytest.fixture(scope='module')
def offline(checkpoint: Path) -> Any:
    with offline_segmenter(checkpoint) as seg:
        yield seg


@pytest.fixture(scope='module')
def node(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> NodeProcess:
    log = tmp_path_factory.mktemp('node_log') / 'node.log'
    proc = NodeProcess(['-p', f'model:={checkpoint}', '-p', 'backend:=torch',
                        '-p', 'device:=cpu', '-p', 'threads:=1',
                        '-p', 'diagnostics_period:=0.2', '-p', 'publish_camera_info:=true'],
                       log, env=dict(os.environ))
    yield proc
    proc.stop()


class Harness:
    """The test side: publishes frames, waits for the answers by stamp."""

    def __init__(self, node: NodeProcess) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import Image

        self.node_proc = node
        self.client = RosClient('node_test_client')
        self.reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.client.node.create_publisher(Image, '/image', qos_profile_sensor_data)
        self.client.record(f'{NODE}/mask', Image, self.reliable)
        self.client.record('/diagnostics', DiagnosticArray, 10, keep=False)
        self.next_stamp = 1_000 * 1_000_000_000

    def check(self) -> None:
        if not self.node_proc.alive():
            raise AssertionError(f'the node died:\n{self.node_proc.log()[-3000:]}')

    def stamp(self) -> int:
        self.next_stamp += 1_000_000
        return self.next_stamp

    def wait_ready(self, timeout: float = 180.0) -> None:
        ok = self.client.spin_until(
            lambda: (self.pub.get_subscription_count() > 0
                     and self.client.node.count_publishers(f'{NODE}/mask') > 0),
            timeout, self.check)
        assert ok, f'node not ready:\n{self.node_proc.log()[-3000:]}'

    def roundtrip(self, msg: Any, topic: str = 'mask', timeout: float = 20.0) -> Any:
        """Publish ``msg`` (re-sent if a best-effort sample is lost) and return the answer."""
        key = stamp_ns(msg.header)
        store = self.client.received[f'{NODE}/{topic}']
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pub.publish(msg)
            if self.client.spin_until(lambda: key in store, 3.0, self.check):
                return store[key]
        raise AssertionError(f'no {topic} for stamp {key}:\n{self.node_proc.log()[-2000:]}')

    def diag(self, timeout: float = 10.0) -> dict[str, str]:
        """Key/values of a fresh /diagnostics message from the node."""
        self.client.latest.pop('/diagnostics', None)
        assert self.client.spin_until(lambda: '/diagnostics' in self.client.latest,
                                      timeout, self.check)
        status = self.client.latest['/diagnostics'].status[0]
        return {kv.key: kv.value for kv in status.values} | {'_message': status.message}

    def wait_diag(self, key: str, predicate: Any, timeout: float = 10.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            values = self.diag()
            if predicate(values[key]) or time.monotonic() > deadline:
                return values


@pytest.fixture(scope='module')
def h(node: NodeProcess) -> Harness:
    harness = Harness(node)
    harness.wait_ready()
    yield harness
    harness.client.close()


@pytest.fixture(scope='module')
def frame() -> np.ndarray:
    from seg_ros.data.synthetic import SyntheticDrive

    return SyntheticDrive(size=(H, W), seed=3).frame(0)[0]


def _ids(msg: Any) -> np.ndarray:
    assert msg.encoding == 'mono8' and msg.step == msg.width
    return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width)


def _rgb(msg: Any) -> np.ndarray:
    assert msg.encoding == 'rgb8' and msg.step == msg.width * 3
    return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, 3)


def test_header_passthrough_and_ids_equal_offline(h: Harness, offline: Any,
                                                  frame: np.ndarray) -> None:
    msg = make_image(frame, 'rgb8', stamp=h.stamp(), frame_id='front_camera_optical')
    mask = h.roundtrip(msg)
    assert mask.header.frame_id == 'front_camera_optical'
    assert (mask.header.stamp.sec, mask.header.stamp.nanosec) == (msg.header.stamp.sec,
                                                                  msg.header.stamp.nanosec)
    assert (mask.height, mask.width) == (H, W)
    np.testing.assert_array_equal(_ids(mask), offline(frame).ids)


def test_lazy_outputs_computed_only_while_subscribed(h: Harness, frame: np.ndarray) -> None:
    from sensor_msgs.msg import Image

    before = h.diag()
    h.roundtrip(make_image(frame, stamp=h.stamp()))
    after = h.diag()
    for out in ('color', 'overlay', 'confidence'):
        assert after[f'published {out}'] == before[f'published {out}'], out
    assert int(after['published mask']) > int(before['published mask'])

    topic = f'{NODE}/color'
    h.client.record(topic, Image, h.reliable)
    try:
        assert h.client.spin_until(lambda: h.client.node.count_subscribers(topic) > 0, 10)
        h.client.spin_for(0.5)  # let the node's side see the match
        msg = make_image(frame, stamp=h.stamp())
        color = h.roundtrip(msg, 'color')
        mask = h.client.received[f'{NODE}/mask'][stamp_ns(msg.header)]
        final = h.diag()
        assert int(final['published color']) > int(after['published color'])
        assert final['published overlay'] == before['published overlay']
        from seg_ros.metadata import CITYSCAPES_PALETTE

        lut = np.zeros((256, 3), np.uint8)
        lut[:19] = CITYSCAPES_PALETTE
        np.testing.assert_array_equal(_rgb(color), lut[_ids(mask)])
        assert color.header.frame_id == msg.header.frame_id
    finally:
        h.client.unrecord(topic)


@pytest.mark.parametrize('encoding', SUPPORTED_ENCODINGS)
def test_every_supported_encoding(h: Harness, offline: Any, frame: np.ndarray,
                                  encoding: str) -> None:
    msg = make_image(frame, encoding, stamp=h.stamp())
    ids = _ids(h.roundtrip(msg))
    np.testing.assert_array_equal(ids, offline(image_to_rgb(msg)).ids)
    if encoding in LOSSLESS:  # the same pixels whatever the channel order or alpha
        np.testing.assert_array_equal(ids, offline(frame).ids)


@pytest.mark.parametrize('encoding,pad,bigendian', [('rgb8', 7, False), ('bgra8', 12, False),
                                                    ('mono16', 2, True), ('mono16', 6, False),
                                                    ('uyvy', 4, False)])
def test_padded_step_and_byte_order(h: Harness, offline: Any, frame: np.ndarray,
                                    encoding: str, pad: int, bigendian: bool) -> None:
    msg = make_image(frame, encoding, pad=pad, bigendian=bigendian, stamp=h.stamp())
    expected = offline(image_to_rgb(msg)).ids
    np.testing.assert_array_equal(_ids(h.roundtrip(msg)), expected)
    if encoding == 'rgb8':
        np.testing.assert_array_equal(expected, offline(frame).ids)


def _bad_frames(frame: np.ndarray) -> list[tuple[str, Any, str]]:
    good = make_image(frame, 'rgb8')
    short_step = make_image(frame, 'rgb8')
    short_step.step = W * 3 - 3
    truncated = make_image(frame, 'rgb8')
    truncated.data = bytes(good.data)[:len(good.data) // 2]
    unknown = make_image(frame, 'rgb8')
    unknown.encoding = '32FC1'
    empty = make_image(frame, 'rgb8')
    empty.height, empty.width, empty.step, empty.data = 0, 0, 0, b''
    odd = make_image(frame[:, :W - 1].copy(), 'mono8')
    odd.encoding, odd.step = 'yuyv', (W - 1) * 2
    odd.data = bytes(odd.step * H)
    return [('wrong step', short_step, 'step'), ('truncated', truncated, 'bytes'),
            ('unknown encoding', unknown, "'32FC1'"), ('zero size', empty, 'empty image'),
            ('odd yuyv width', odd, 'even width')]


def test_bad_frames_rejected_and_node_keeps_publishing(h: Harness, offline: Any,
                                                       frame: np.ndarray) -> None:
    store = h.client.received[f'{NODE}/mask']
    rejected = int(h.diag()['frames rejected'])
    for what, bad, words in _bad_frames(frame):
        s = h.stamp()
        bad.header.stamp.sec, bad.header.stamp.nanosec = divmod(s, 1_000_000_000)
        h.pub.publish(bad)
        values = h.wait_diag('frames rejected', lambda v, r=rejected: int(v) > r)
        if int(values['frames rejected']) == rejected:  # a lost best-effort sample: once more
            h.pub.publish(bad)
            values = h.wait_diag('frames rejected', lambda v, r=rejected: int(v) > r)
        assert int(values['frames rejected']) == rejected + 1, what
        assert words in values['last error'], (what, values['last error'])
        rejected += 1
        assert s not in store, what
        good = make_image(frame, stamp=h.stamp())
        np.testing.assert_array_equal(_ids(h.roundtrip(good)), offline(frame).ids)
    log = h.node_proc.log()
    assert "unsupported encoding '32FC1'" in log
    assert 'Traceback' not in log


def test_runtime_parameter_changes(h: Harness, frame: np.ndarray, tmp_path: Path) -> None:
    from sensor_msgs.msg import Image

    for out in ('color', 'overlay'):
        h.client.record(f'{NODE}/{out}', Image, h.reliable)
    try:
        assert h.client.spin_until(
            lambda: h.client.node.count_subscribers(f'{NODE}/overlay') > 0, 10)
        h.client.spin_for(0.5)
        assert all(r.successful for r in h.client.set_parameters(NODE, {'overlay_alpha': 1.0}))
        msg = make_image(frame, stamp=h.stamp())
        overlay = _rgb(h.roundtrip(msg, 'overlay'))
        color = _rgb(h.client.received[f'{NODE}/color'][stamp_ns(msg.header)])
        np.testing.assert_array_equal(overlay, color)
        assert all(r.successful for r in h.client.set_parameters(NODE, {'overlay_alpha': 0.0}))
        np.testing.assert_array_equal(
            _rgb(h.roundtrip(make_image(frame, stamp=h.stamp()), 'overlay')), frame)

        # a palette file changes the colours at run time
        palette = tmp_path / 'grey.yaml'
        palette.write_text('classes:\n' + ''.join(
            f'  - {{name: c{i}, color: [{i}, {i}, {i}]}}\n' for i in range(19)))
        assert all(r.successful for r in h.client.set_parameters(NODE,
                                                                 {'palette': str(palette)}))
        msg = make_image(frame, stamp=h.stamp())
        color = _rgb(h.roundtrip(msg, 'color'))
        ids = _ids(h.client.received[f'{NODE}/mask'][stamp_ns(msg.header)])
        np.testing.assert_array_equal(color[..., 0], ids)

        # refused, each with a reason: out of range, too few colours, a read-only parameter,
        # a wrong type; the node keeps its previous values
        for values, words in (({'overlay_alpha': 1.5}, 'overlay_alpha'),
                              ({'palette': 'camvid'}, '11 colours'),
                              ({'palette': '/no/such/palette.yaml'}, 'palette'),
                              ({'model': 'other.onnx'}, 'model'),  # rclpy's words:
                              ({'publish_color': 'yes'}, 'type')):
            (result,) = h.client.set_parameters(NODE, values)
            assert not result.successful, values
            assert words in result.reason, (values, result.reason)

        # publish_color off: no colour although subscribed
        assert all(r.successful for r in h.client.set_parameters(NODE,
                                                                 {'publish_color': False,
                                                                  'palette': 'model'}))
        before = int(h.diag()['published color'])
        h.roundtrip(make_image(frame, stamp=h.stamp()), 'overlay')
        assert int(h.diag()['published color']) == before
    finally:
        h.client.set_parameters(NODE, {'publish_color': True, 'overlay_alpha': 0.5})
        for out in ('color', 'overlay'):
            h.client.unrecord(f'{NODE}/{out}')


def test_camera_info_passthrough_rescaled(h: Harness, frame: np.ndarray) -> None:
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo

    info_pub = h.client.node.create_publisher(
        CameraInfo, '/camera_info', QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    h.client.record(f'{NODE}/camera_info', CameraInfo, h.reliable)
    info = CameraInfo(width=2 * W, height=2 * H, distortion_model='plumb_bob',
                      d=[0.1, 0.0, 0.0, 0.0, 0.0],
                      k=[300.0, 0, 160.0, 0, 310.0, 120.0, 0, 0, 1],
                      p=[300.0, 0, 160.0, 5.0, 0, 310.0, 120.0, 0, 0, 0, 1, 0])
    try:
        assert h.client.spin_until(lambda: info_pub.get_subscription_count() > 0, 10)
        for _ in range(3):
            info_pub.publish(info)
            h.client.spin_for(0.2)
        msg = make_image(frame, stamp=h.stamp())
        out = h.roundtrip(msg, 'camera_info')
        assert stamp_ns(out.header) == stamp_ns(msg.header)
        assert (out.width, out.height) == (W, H)
        np.testing.assert_allclose(out.k, [150.0, 0, 80.0, 0, 155.0, 60.0, 0, 0, 1])
        np.testing.assert_allclose(out.p, [150.0, 0, 80.0, 2.5, 0, 155.0, 60.0, 0, 0, 0, 1, 0])
        np.testing.assert_allclose(out.d, info.d)
    finally:
        h.client.unrecord(f'{NODE}/camera_info')
        h.client.node.destroy_publisher(info_pub)


def test_class_names_latched(h: Harness) -> None:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    from seg_ros.metadata import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    topic = f'{NODE}/class_names'
    h.client.record(topic, String, latched, keep=False)  # joins long after the publication
    try:
        assert h.client.spin_until(lambda: topic in h.client.latest, 10, h.check)
        data = json.loads(h.client.latest[topic].data)
        assert data['model'] == 'regseg48' and data['ignore_index'] == 255
        assert [c['name'] for c in data['classes']] == list(CITYSCAPES_CLASSES)
        assert [tuple(c['color']) for c in data['classes']] == list(CITYSCAPES_PALETTE)
    finally:
        h.client.unrecord(topic)


def test_overload_keeps_newest_and_counts_drops(h: Harness, frame: np.ndarray) -> None:
    """A burst that meets a busy worker: the slot sheds load and the newest frame wins.

    The worker is made busy by the node's own ``max_rate_hz`` (1 Hz: after the first frame of
    the burst it serves nothing for a second), not by a slow model, so the burst outruns it on
    any machine: a 64x128 model alone keeps up with this publisher on a fast idle CPU.
    """
    store = h.client.received[f'{NODE}/mask']
    keys = ('frames received', 'frames processed', 'frames dropped', 'frames rejected')
    assert all(r.successful for r in h.client.set_parameters(NODE, {'max_rate_hz': 1.0}))
    try:
        start = h.diag()
        stamps = [h.stamp() for _ in range(30)]
        for s in stamps:  # far faster than the worker may take frames: the slot sheds load
            h.pub.publish(make_image(frame, stamp=s))
            h.client.spin_for(0.002)
        assert h.client.spin_until(lambda: stamps[-1] in store, 20, h.check), \
            'the newest frame was not processed'
        answered = sum(s in store for s in stamps)
        h.client.spin_for(0.5)
        values = h.diag()
    finally:
        assert all(r.successful for r in h.client.set_parameters(NODE, {'max_rate_hz': 0.0}))
    delta = {k: int(values[k]) - int(start[k]) for k in keys}
    assert answered < len(stamps)
    assert delta['frames dropped'] >= 1 and delta['frames rejected'] == 0
    # every frame the node received was either answered or counted as dropped
    assert delta['frames received'] == delta['frames processed'] + delta['frames dropped']
    assert delta['frames processed'] == answered
    assert values['backend'] == 'torch' and values['model'] == 'regseg48'
    assert values['max rate (Hz)'] == '1'
    assert values['latency p99 (ms)'] != 'n/a' and values['inference p50 (ms)'] != 'n/a'


def test_tiny_max_rate_never_parks_the_worker(h: Harness, offline: Any,
                                              frame: np.ndarray) -> None:
    """1e-6 Hz is a 12-day period: clearing it must bring frames back at once."""
    h.roundtrip(make_image(frame, stamp=h.stamp()))  # a frame starts the period
    for rate in (1e-6, 1e-11):  # 1e-11 once overflowed threading's timeout
        assert all(r.successful for r in h.client.set_parameters(NODE, {'max_rate_hz': rate}))
        h.pub.publish(make_image(frame, stamp=h.stamp()))  # waits for the period to end
        h.client.spin_for(0.3)
        assert h.diag()['max rate (Hz)'] == f'{rate:g}'
    assert all(r.successful for r in h.client.set_parameters(NODE, {'max_rate_hz': 0.0}))
    msg = make_image(frame, stamp=h.stamp())
    np.testing.assert_array_equal(_ids(h.roundtrip(msg, timeout=5.0)), offline(frame).ids)
    assert 'Traceback' not in h.node_proc.log()


def test_hostile_palettes_are_refused_and_the_node_lives(h: Harness, offline: Any,
                                                         frame: np.ndarray, checkpoint: Path,
                                                         tmp_path: Path) -> None:
    """Files that exist but are no palette: a rejected parameter with a reason, never a crash."""
    utf16 = tmp_path / 'utf16.yaml'
    utf16.write_text('classes:\n' + ''.join(f'  - {{name: c{i}, color: [1, 2, 3]}}\n'
                                             for i in range(19)), encoding='utf-16')
    infinite = tmp_path / 'inf.yaml'
    infinite.write_text('classes:\n' + ''.join(f'  - {{name: c{i}, color: [.inf, 0, 0]}}\n'
                                                for i in range(19)))
    deep = tmp_path / 'deep.yaml'
    deep.write_text('[' * 5000 + ']' * 5000)
    binary = tmp_path / 'model.onnx'
    binary.write_bytes(bytes(range(256)) * 64)
    for bad in (checkpoint, utf16, infinite, deep, binary):
        (result,) = h.client.set_parameters(NODE, {'palette': str(bad)})
        assert not result.successful, bad.name
        assert result.reason, bad.name
        h.check()
    np.testing.assert_array_equal(_ids(h.roundtrip(make_image(frame, stamp=h.stamp()))),
                                  offline(frame).ids)
    assert 'Traceback' not in h.node_proc.log()


def test_frames_over_max_input_pixels_are_rejected(h: Harness, offline: Any,
                                                   frame: np.ndarray) -> None:
    store = h.client.received[f'{NODE}/mask']
    rejected = int(h.diag()['frames rejected'])
    assert all(r.successful for r in h.client.set_parameters(NODE, {'max_input_pixels':
                                                                     H * W - 1}))
    try:
        s = h.stamp()
        h.pub.publish(make_image(frame, stamp=s))
        values = h.wait_diag('frames rejected', lambda v: int(v) > rejected)
        if int(values['frames rejected']) == rejected:  # a lost best-effort sample: once more
            h.pub.publish(make_image(frame, stamp=s))
            values = h.wait_diag('frames rejected', lambda v: int(v) > rejected)
        assert int(values['frames rejected']) == rejected + 1
        assert 'max_input_pixels' in values['last error']
        assert s not in store
    finally:
        assert all(r.successful for r in h.client.set_parameters(NODE, {'max_input_pixels':
                                                                         H * W}))
    np.testing.assert_array_equal(_ids(h.roundtrip(make_image(frame, stamp=h.stamp()))),
                                  offline(frame).ids)


def test_max_rate_limits_processing(h: Harness, frame: np.ndarray) -> None:
    keys = ('frames received', 'frames processed', 'frames dropped')
    assert all(r.successful for r in h.client.set_parameters(NODE, {'max_rate_hz': 2.0}))
    try:
        start = h.diag()
        t0 = time.monotonic()
        stamps = []
        while time.monotonic() - t0 < 2.0:  # ~20 Hz for 2 s, well within inference speed
            stamps.append(h.stamp())
            h.pub.publish(make_image(frame, stamp=stamps[-1]))
            h.client.spin_for(0.05)
        h.client.spin_for(1.0)
        end = h.diag()
        delta = {k: int(end[k]) - int(start[k]) for k in keys}
        # 2 Hz over ~3 s: at most 7 frames processed (first one immediately), the rest dropped
        assert 2 <= delta['frames processed'] <= 7, delta
        assert delta['frames received'] == delta['frames processed'] + delta['frames dropped']
    finally:
        assert all(r.successful for r in h.client.set_parameters(NODE, {'max_rate_hz': 0.0}))


def test_incompatible_subscriber_qos_is_reported(h: Harness) -> None:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)  # the node offers volatile
    try:
        from rclpy.event_handler import SubscriptionEventCallbacks
    except ImportError:  # Humble
        from rclpy.qos_event import SubscriptionEventCallbacks
    quiet = SubscriptionEventCallbacks(incompatible_qos=lambda info: None)  # our side: silent
    sub = h.client.node.create_subscription(Image, f'{NODE}/confidence', lambda m: None, qos,
                                            event_callbacks=quiet)
    try:
        assert h.client.spin_until(lambda: 'does not offer' in h.node_proc.log(), 10, h.check)
        assert 'DURABILITY' in h.node_proc.log()
    finally:
        h.client.node.destroy_subscription(sub)


def test_startup_errors_are_one_clear_line(checkpoint: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / 'damaged.onnx'
    corrupt.write_bytes(b'this is not a protobuf' * 10)
    utf16 = tmp_path / 'palette_utf16.yaml'
    utf16.write_text('classes:\n  - {name: a, color: [1, 2, 3]}\n', encoding='utf-16')
    cases = {
        'missing': (['-p', 'model:=/no/such/model.onnx'], 'model file not found'),
        'backend': (['-p', f'model:={checkpoint}', '-p', 'backend:=tensorflow'],
                    'backend must be one of'),
        'alpha': (['-p', f'model:={checkpoint}', '-p', 'overlay_alpha:=3.0'], 'overlay_alpha'),
        'no_model': ([], "'model' is required"),
        'corrupt': (['-p', f'model:={corrupt}'], 'cannot load model'),
        'palette': (['-p', f'model:={checkpoint}', '-p', f'palette:={utf16}'], 'palette'),
        'binary_palette': (['-p', f'model:={checkpoint}', '-p', f'palette:={checkpoint}'],
                           'palette'),
    }
    procs = {}
    for name, (args, _) in cases.items():
        procs[name] = subprocess.Popen([sys.executable, '-m', 'seg_ros.ros.node', '--ros-args',
                                        *args], env=dict(os.environ), stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True)
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 1, (name, out)
        assert cases[name][1] in out, (name, out)
        assert 'Traceback' not in out, (name, out)


def test_clean_shutdown_on_sigint(h: Harness, node: NodeProcess) -> None:
    h.client.spin_for(0.1)
    assert node.stop() == 0
    assert 'Traceback' not in node.log()
