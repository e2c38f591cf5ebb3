"""multi_camera_segmentation_lifecycle_node: transitions, compressed input, image_topics.

One managed node for the module, driven through lifecycle_msgs/srv/ChangeState and GetState
as ``ros2 lifecycle set`` does. It reads PNG (``input_compressed``) from topics given with
``image_topics``; after cleanup a third camera is added while unconfigured.
"""
from __future__ import annotations

import os
from pathlib import Path
import time
from typing import Any

import numpy as np
import pytest

from seg_ros.encodings import encode_compressed
from seg_ros.testing.node_harness import NodeProcess, RosClient, stamp_ns

pytestmark = pytest.mark.ros

MODULE = 'seg_ros.ros.multicam_lifecycle_node'
NODE = '/multi_camera_segmentation_node'
TOPICS = {'a': '/cam_a/image', 'b': '/cam_b/image', 'c': '/cam_c/image'}


@pytest.fixture(scope='module')
def onnx_model(exports: Any) -> Path:
    return exports('regseg48', True, False)


class Managed:
    def __init__(self, proc: NodeProcess) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image

        self.proc = proc
        self.client = RosClient('multicam_lifecycle_client')
        reliable = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
        self.pubs = {c: self.client.node.create_publisher(CompressedImage, f'{t}/compressed',
                                                          qos_profile_sensor_data)
                     for c, t in TOPICS.items()}
        for c in TOPICS:
            self.client.record(f'{NODE}/{c}/mask', Image, reliable)
        self.client.record('/diagnostics', DiagnosticArray, 10, keep=False)
        self.stamp = 7_000 * 1_000_000_000
        rng = np.random.default_rng(2)
        self.frame = rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)

    def check(self) -> None:
        if not self.proc.alive():
            raise AssertionError(f'the node died:\n{self.proc.log()[-3000:]}')

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        response = self.client.call(GetState, f'{NODE}/get_state', GetState.Request())
        return str(response.current_state.label)

    def transition(self, name: str) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        ids = {'configure': Transition.TRANSITION_CONFIGURE,
               'activate': Transition.TRANSITION_ACTIVATE,
               'deactivate': Transition.TRANSITION_DEACTIVATE,
               'cleanup': Transition.TRANSITION_CLEANUP}
        request = ChangeState.Request(transition=Transition(id=ids[name]))
        return bool(self.client.call(ChangeState, f'{NODE}/change_state', request,
                                     timeout=120).success)

    def png(self) -> Any:
        from sensor_msgs.msg import CompressedImage

        self.stamp += 1_000_000
        msg = CompressedImage(format='png')
        msg.data = encode_compressed(self.frame, 'png')
        msg.header.frame_id = 'cam'
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(self.stamp, 1_000_000_000)
        return msg

    def answers(self, cameras: tuple[str, ...], timeout: float) -> set[str]:
        """Cameras whose mask for one fresh frame each came back within ``timeout``."""
        msg = self.png()
        key = stamp_ns(msg.header)
        deadline = time.monotonic() + timeout
        got: set[str] = set()
        while time.monotonic() < deadline and got != set(cameras):
            for c in cameras:
                self.pubs[c].publish(msg)
            self.client.spin_until(lambda: all(
                key in self.client.received[f'{NODE}/{c}/mask'] for c in cameras), 1.0,
                self.check)
            got = {c for c in cameras if key in self.client.received[f'{NODE}/{c}/mask']}
        return got

    def batch_status(self) -> dict[str, str]:
        self.client.latest.pop('/diagnostics', None)
        assert self.client.spin_until(lambda: '/diagnostics' in self.client.latest, 10,
                                      self.check)
        for status in self.client.latest['/diagnostics'].status:
            if status.name.endswith(': batch'):
                return {kv.key: kv.value for kv in status.values}
        raise AssertionError('no batch status')


@pytest.fixture(scope='module')
def managed(onnx_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Managed:
    log = tmp_path_factory.mktemp('multicam_lc') / 'node.log'
    proc = NodeProcess(['-p', f'model:={onnx_model}', '-p', 'backend:=onnxruntime',
                        '-p', 'device:=cpu', '-p', 'threads:=1', '-p', 'input_compressed:=true',
                        '-p', 'cameras:=[a,b]',
                        '-p', f'image_topics:=[{TOPICS["a"]},{TOPICS["b"]}]',
                        '-p', 'diagnostics_period:=0.2'],
                       log, env=dict(os.environ), module=MODULE)
    harness = Managed(proc)
    from lifecycle_msgs.srv import GetState

    get_state = harness.client.node.create_client(GetState, f'{NODE}/get_state')
    assert harness.client.spin_until(get_state.service_is_ready, 120, harness.check)
    harness.client.node.destroy_client(get_state)
    yield harness
    harness.client.close()
    assert proc.stop() == 0
    assert 'Traceback' not in proc.log()


def test_transitions(managed: Managed) -> None:
    m = managed
    assert m.state() == 'unconfigured'
    assert m.transition('configure') and m.state() == 'inactive'
    assert m.answers(('a', 'b'), 1.5) == set()  # configured, not subscribed yet
    assert m.batch_status()['state'] == 'inactive'
    assert m.transition('activate') and m.state() == 'active'
    assert m.answers(('a', 'b'), 60.0) == {'a', 'b'}
    # load-time parameters are refused while configured
    (refused,) = m.client.set_parameters(NODE, {'cameras': ['a', 'b', 'c']})
    assert not refused.successful and 'configure' in refused.reason
    assert m.transition('deactivate') and m.state() == 'inactive'
    assert m.answers(('a', 'b'), 1.5) == set()
    assert m.transition('cleanup') and m.state() == 'unconfigured'
    # a third camera while unconfigured, then up again
    results = m.client.set_parameters(NODE, {'cameras': ['a', 'b', 'c'],
                                             'image_topics': list(TOPICS.values())})
    assert all(r.successful for r in results)
    assert m.transition('configure') and m.transition('activate')
    assert m.answers(('a', 'b', 'c'), 60.0) == {'a', 'b', 'c'}
    assert m.batch_status()['cameras'] == 'a, b, c'


def test_configure_failure_keeps_the_node_unconfigured(managed: Managed) -> None:
    m = managed
    assert m.transition('deactivate') and m.transition('cleanup')
    (ok,) = m.client.set_parameters(NODE, {'anchor_camera': 'z'})
    assert ok.successful  # checked against the cameras at configure
    assert not m.transition('configure') and m.state() == 'unconfigured'
    assert "configure failed: anchor_camera 'z' is not one of the cameras" in m.proc.log()
    (ok,) = m.client.set_parameters(NODE, {'anchor_camera': 'b'})
    assert m.transition('configure') and m.transition('activate')
    assert m.answers(('a', 'b', 'c'), 60.0) == {'a', 'b', 'c'}
