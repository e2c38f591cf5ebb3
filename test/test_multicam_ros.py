"""multi_camera_segmentation_node end to end: one node process, three cameras, real rclpy.

The model is the session's dynamic-batch regseg48 export at 64x128 (random weights) on ONNX
Runtime with one thread, so every camera's mask can be compared with an offline run of the
same frame. The cameras send different resolutions. Rates are compared with what the same
cameras had earlier in the same test, never with a fixed speed.
"""
from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

from seg_ros.testing.node_harness import NodeProcess, RosClient, make_image, stamp_ns

pytestmark = pytest.mark.ros

MODULE = 'seg_ros.ros.multicam_node'
NODE = '/multi_camera_segmentation_node'
CAMERAS = ('front', 'left', 'rear')
SIZES = {'front': (64, 128), 'left': (120, 160), 'rear': (90, 200)}  # (H, W) per camera


@pytest.fixture(scope='module')
def onnx_model(exports: Any) -> Path:
    return exports('regseg48', True, False)


@pytest.fixture(scope='module')
def offline(onnx_model: Path) -> Any:
    from seg_ros.runtime.segmenter import Segmenter

    seg = Segmenter.from_file(str(onnx_model), backend='onnxruntime', device='cpu', threads=1)
    yield seg
    seg.close()


@pytest.fixture(scope='module')
def node(onnx_model: Path, tmp_path_factory: pytest.TempPathFactory) -> NodeProcess:
    log = tmp_path_factory.mktemp('multicam_log') / 'node.log'
    proc = NodeProcess(['-p', f'model:={onnx_model}', '-p', 'backend:=onnxruntime',
                        '-p', 'device:=cpu', '-p', 'threads:=1',
                        '-p', f'cameras:=[{",".join(CAMERAS)}]',
                        '-p', 'diagnostics_period:=0.2', '-p', 'no_input_warn_s:=1.0'],
                       log, env=dict(os.environ), module=MODULE)
    yield proc
    proc.stop()


class Cameras:
    """The test side: one publisher per camera, the masks recorded per camera by stamp."""

    def __init__(self, node: NodeProcess, name: str = NODE, prefix: str = '') -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import Image

        self.proc, self.name = node, name
        self.client = RosClient('multicam_test_client')
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.pubs = {c: self.client.node.create_publisher(Image, f'{prefix}/{c}/image_raw',
                                                          qos_profile_sensor_data)
                     for c in CAMERAS}
        for c in CAMERAS:
            self.client.record(f'{name}/{c}/mask', Image, reliable)
        self.client.record('/diagnostics', DiagnosticArray, 10, keep=False)
        self.next_stamp = 5_000 * 1_000_000_000
        rng = np.random.default_rng(4)
        self.frames = {c: rng.integers(0, 256, (*SIZES[c], 3), dtype=np.uint8)
                       for c in CAMERAS}

    def check(self) -> None:
        if not self.proc.alive():
            raise AssertionError(f'the node died:\n{self.proc.log()[-3000:]}')

    def masks(self, camera: str) -> dict[int, Any]:
        return self.client.received[f'{self.name}/{camera}/mask']

    def stamp(self) -> int:
        self.next_stamp += 1_000_000
        return self.next_stamp

    def wait_ready(self, timeout: float = 180.0) -> None:
        ok = self.client.spin_until(
            lambda: (all(p.get_subscription_count() > 0 for p in self.pubs.values())
                     and self.client.node.count_publishers(f'{self.name}/rear/mask') > 0),
            timeout, self.check)
        assert ok, f'node not ready:\n{self.proc.log()[-3000:]}'

    def frame_msg(self, camera: str, stamp: int | None = None) -> Any:
        return make_image(self.frames[camera], stamp=self.stamp() if stamp is None else stamp,
                          frame_id=f'{camera}_optical')

    def round(self, msgs: dict[str, Any], expect: tuple[str, ...],
              timeout: float = 30.0) -> dict[str, Any]:
        """Publish one frame per camera (again while unanswered) until ``expect`` answer."""
        deadline = time.monotonic() + timeout
        keys = {c: stamp_ns(m.header) for c, m in msgs.items()}

        def done() -> bool:
            return all(keys[c] in self.masks(c) for c in expect)
        while time.monotonic() < deadline:
            for c, m in msgs.items():
                self.pubs[c].publish(m)
            if self.client.spin_until(done, 2.0, self.check):
                return {c: self.masks(c)[keys[c]] for c in expect}
        raise AssertionError(f'no masks for {expect}:\n{self.proc.log()[-2000:]}')

    def diagnostics(self, timeout: float = 10.0) -> dict[str, Any]:
        """Name -> (level, message, key/values) of a fresh /diagnostics message of this node.

        Another node of the module may publish on /diagnostics too; its messages are skipped.
        """
        latest = self.client.latest
        latest.pop('/diagnostics', None)

        def ours() -> bool:
            msg = latest.get('/diagnostics')
            if msg is not None and not any(s.name.startswith(f'{self.name}:')
                                           for s in msg.status):
                latest.pop('/diagnostics', None)
                return False
            return msg is not None
        assert self.client.spin_until(ours, timeout, self.check)
        return {s.name: (s.level, s.message, {kv.key: kv.value for kv in s.values})
                for s in self.client.latest['/diagnostics'].status}


@pytest.fixture(scope='module')
def cams(node: NodeProcess) -> Cameras:
    harness = Cameras(node)
    harness.wait_ready()
    yield harness
    harness.client.close()


def _ids(msg: Any) -> np.ndarray:
    assert msg.encoding == 'mono8' and msg.step == msg.width
    return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width)


def test_every_mask_has_its_cameras_header_and_resolution(cams: Cameras, offline: Any) -> None:
    msgs = {c: cams.frame_msg(c) for c in CAMERAS}
    masks = cams.round(msgs, CAMERAS)
    for c in CAMERAS:
        mask = masks[c]
        assert mask.header.frame_id == f'{c}_optical'
        assert stamp_ns(mask.header) == stamp_ns(msgs[c].header)
        assert (mask.height, mask.width) == SIZES[c]
        np.testing.assert_array_equal(_ids(mask), offline(cams.frames[c]).ids)
    status = cams.diagnostics()
    assert {f'{NODE}: camera {c}' for c in CAMERAS} | {f'{NODE}: batch'} == set(status)
    batch = status[f'{NODE}: batch'][2]
    assert int(batch['batches']) >= 1 and float(batch['mean batch size']) > 1.0
    assert int(batch['model max batch']) >= 3


def test_a_bad_frame_on_one_camera_leaves_the_others_untouched(cams: Cameras,
                                                               offline: Any) -> None:
    for _ in range(4):
        bad = cams.frame_msg('left')
        bad.step = bad.step - 3  # rows shorter than width x 3: rejected on arrival
        good = {c: cams.frame_msg(c) for c in ('front', 'rear')}
        masks = cams.round({**good, 'left': bad}, ('front', 'rear'))
        for c in ('front', 'rear'):
            np.testing.assert_array_equal(_ids(masks[c]), offline(cams.frames[c]).ids)
        assert stamp_ns(bad.header) not in cams.masks('left')
    status = cams.diagnostics()
    level, message, left = status[f'{NODE}: camera left']
    assert int(left['frames rejected']) >= 4 and 'step' in left['last error']
    assert status[f'{NODE}: camera front'][2]['frames rejected'] == '0'
    # the camera recovers with its next good frame
    msgs = {c: cams.frame_msg(c) for c in CAMERAS}
    masks = cams.round(msgs, CAMERAS)
    np.testing.assert_array_equal(_ids(masks['left']), offline(cams.frames['left']).ids)


def _stream(cams: Cameras, cameras: tuple[str, ...], seconds: float,
            rate: float = 10.0) -> tuple[float, float]:
    """Publish ``cameras`` together at ``rate`` Hz for ``seconds``; returns (start, end)."""
    start = time.monotonic()
    period = 1.0 / rate
    next_pub = start
    while time.monotonic() - start < seconds:
        if time.monotonic() >= next_pub:
            stamp = cams.stamp()
            for c in cameras:
                cams.pubs[c].publish(cams.frame_msg(c, stamp))
            next_pub += period
        cams.client.executor.spin_once(timeout_sec=max(0.0, next_pub - time.monotonic()))
    return start, time.monotonic()


def _rate(cams: Cameras, camera: str, start: float, end: float) -> float:
    arrivals = cams.client.arrival_ns[f'{NODE}/{camera}/mask'].values()
    n = sum(1 for a in arrivals if start * 1e9 <= a <= end * 1e9)
    return n / (end - start)


def test_a_stopped_camera_does_not_slow_the_others(cams: Cameras) -> None:
    # warm up, then all three; then the anchor camera (front, the one that triggers batches)
    # stops and the other two must keep their rate
    _stream(cams, CAMERAS, 1.0)
    before = _stream(cams, CAMERAS, 3.0)
    cams.client.spin_for(0.3)
    _stream(cams, ('left', 'rear'), 0.6)  # the anchor's silence hands the trigger over
    after = _stream(cams, ('left', 'rear'), 3.0)
    cams.client.spin_for(0.3)
    for c in ('left', 'rear'):
        r0, r1 = _rate(cams, c, *before), _rate(cams, c, *after)
        assert r0 > 0 and r1 >= 0.9 * r0, f'{c}: {r0:.2f} Hz before, {r1:.2f} Hz after'
    # the stopped camera is reported (no_input_warn_s is 1 s); the others are fine
    deadline = time.monotonic() + 10.0
    while True:
        status = cams.diagnostics()
        level, message, front = status[f'{NODE}: camera front']
        if front['state'] == 'stopped' or time.monotonic() > deadline:
            break
        _stream(cams, ('left', 'rear'), 0.3)
    from diagnostic_msgs.msg import DiagnosticStatus

    assert front['state'] == 'stopped' and level == DiagnosticStatus.WARN
    assert 'no input on /front/image_raw' in message
    batch_level, batch_message, batch = status[f'{NODE}: batch']
    assert batch['stopped cameras'] == 'front' and 'front' in batch_message
    assert int(front['late frames']) >= 1 and int(batch['partial batches']) >= 1


def test_parameters_are_validated(cams: Cameras) -> None:
    bad, good, load_time = cams.client.set_parameters(
        NODE, {'camera_timeout_s': 5.0, 'max_stamp_spread_s': 0.2, 'cameras': ['x']})
    assert not bad.successful and 'camera_timeout_s' in bad.reason  # the descriptor range
    assert not load_time.successful
    (ok,) = cams.client.set_parameters(NODE, {'max_stamp_spread_s': 0.2})
    assert ok.successful
    (refused,) = cams.client.set_parameters(NODE, {'cameras': ['x']})
    assert not refused.successful


def test_startup_errors_are_one_clear_line(onnx_model: Path) -> None:
    cases = {
        'no_cameras': (['-p', f'model:={onnx_model}'], "'cameras' is required"),
        'anchor': (['-p', f'model:={onnx_model}', '-p', 'cameras:=[a,b]',
                    '-p', 'anchor_camera:=c'], "anchor_camera 'c' is not one of the cameras"),
        'topics': (['-p', f'model:={onnx_model}', '-p', 'cameras:=[a,b]',
                    '-p', 'image_topics:=[/x]'], 'image_topics has 1 entries for 2 cameras'),
    }
    procs = {name: subprocess.Popen([sys.executable, '-m', MODULE, '--ros-args', *args],
                                    env=dict(os.environ), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
             for name, (args, _) in cases.items()}
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 1, (name, out)
        assert cases[name][1] in out and 'Traceback' not in out, (name, out)


def test_openvino_streams_serve_every_camera(onnx_model: Path, offline: Any,
                                            tmp_path: Path) -> None:
    """The CPU default backend: a batch split over two OpenVINO streams, ids per camera."""
    pytest.importorskip('openvino')
    name = 'multicam_openvino'
    topics = ','.join(f'/ov/{c}/image_raw' for c in CAMERAS)
    proc = NodeProcess(['-p', f'model:={onnx_model}', '-p', 'backend:=openvino',
                        '-p', 'precision:=fp32', '-p', 'device:=cpu', '-p', 'threads:=2',
                        '-p', f'cameras:=[{",".join(CAMERAS)}]', '-p', f'image_topics:=[{topics}]',
                        '-p', 'diagnostics_period:=0.2', '-r', f'__node:={name}'],
                       tmp_path / 'node.log', env=dict(os.environ), module=MODULE)
    harness = Cameras(proc, name=f'/{name}', prefix='/ov')
    try:
        harness.wait_ready()
        msgs = {c: harness.frame_msg(c) for c in CAMERAS}
        masks = harness.round(msgs, CAMERAS)
        for c in CAMERAS:
            assert stamp_ns(masks[c].header) == stamp_ns(msgs[c].header)
            assert (masks[c].height, masks[c].width) == SIZES[c]
            # OpenVINO fp32 against ONNX Runtime fp32: the same ids up to rounding ties
            assert (_ids(masks[c]) == offline(harness.frames[c]).ids).mean() >= 0.999
        batch = harness.diagnostics()[f'/{name}: batch'][2]
        assert batch['backend'] == 'openvino' and batch['inference streams'] == '2'
    finally:
        harness.client.close()
        assert proc.stop() == 0
    assert 'Traceback' not in proc.log()


def test_clean_shutdown_on_sigint(cams: Cameras, node: NodeProcess) -> None:
    cams.client.spin_for(0.1)
    assert node.stop() == 0
    assert 'Traceback' not in node.log()
