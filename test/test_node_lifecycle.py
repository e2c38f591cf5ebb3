"""segmentation_lifecycle_node: transitions through the lifecycle services, compressed input.

One lifecycle node for the module, driven with lifecycle_msgs/srv/ChangeState and GetState
like ``ros2 lifecycle set`` does. It reads JPEG (``input_compressed``) with a reliable input
QoS, which also lets the test check the warning on an incompatible (best-effort) publisher.
"""
from __future__ import annotations

import os
from pathlib import Path
import time
from typing import Any

import numpy as np
import pytest

from seg_ros.encodings import compressed_to_rgb, encode_compressed
from seg_ros.testing.images import png_bomb
from seg_ros.testing.node_harness import (
    LIFECYCLE_MODULE,
    NodeProcess,
    RosClient,
    offline_segmenter,
    random_checkpoint,
    stamp_ns,
)

pytestmark = pytest.mark.ros

NODE = '/segmentation_node'
H, W = 96, 128


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp('lc_model') / 'regseg48_64x128.pt')


@pytest.fixture(scope='module')
def offline(checkpoint: Path) -> Any:
    with offline_segmenter(checkpoint) as seg:
        yield seg


class Lifecycle:
    def __init__(self, proc: NodeProcess) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image

        self.proc = proc
        self.client = RosClient('lifecycle_test_client')
        reliable = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.client.node.create_publisher(CompressedImage, '/image/compressed',
                                                     reliable)
        self.client.record(f'{NODE}/mask', Image, reliable)
        self.client.record('/diagnostics', DiagnosticArray, 10, keep=False)
        self.stamp_ns = 2_000 * 1_000_000_000

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
               'cleanup': Transition.TRANSITION_CLEANUP,
               'shutdown': Transition.TRANSITION_UNCONFIGURED_SHUTDOWN}
        request = ChangeState.Request(transition=Transition(id=ids[name]))
        return bool(self.client.call(ChangeState, f'{NODE}/change_state', request,
                                     timeout=120).success)

    def jpeg(self, rgb: np.ndarray, data: bytes | None = None) -> Any:
        from sensor_msgs.msg import CompressedImage

        self.stamp_ns += 1_000_000
        msg = CompressedImage(format='jpeg')
        msg.data = encode_compressed(rgb, 'jpeg') if data is None else data
        msg.header.frame_id = 'cam'
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(self.stamp_ns, 1_000_000_000)
        return msg

    def answered(self, msg: Any, timeout: float) -> Any:
        store = self.client.received[f'{NODE}/mask']
        key = stamp_ns(msg.header)
        self.pub.publish(msg)
        self.client.spin_until(lambda: key in store, timeout, self.check)
        return store.get(key)

    def diag(self) -> dict[str, str]:
        self.client.latest.pop('/diagnostics', None)
        assert self.client.spin_until(lambda: '/diagnostics' in self.client.latest, 10,
                                      self.check)
        return {kv.key: kv.value for kv in self.client.latest['/diagnostics'].status[0].values}


@pytest.fixture(scope='module')
def lc(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Lifecycle:
    log = tmp_path_factory.mktemp('lc_log') / 'node.log'
    proc = NodeProcess(['-p', f'model:={checkpoint}', '-p', 'backend:=torch',
                        '-p', 'device:=cpu', '-p', 'threads:=1', '-p', 'input_compressed:=true',
                        '-p', 'qos_reliability:=reliable', '-p', 'diagnostics_period:=0.2',
                        '-p', 'no_input_warn_s:=1.0'],
                       log, env=dict(os.environ), module=LIFECYCLE_MODULE)
    harness = Lifecycle(proc)
    from lifecycle_msgs.srv import GetState

    get_state = harness.client.node.create_client(GetState, f'{NODE}/get_state')
    assert harness.client.spin_until(get_state.service_is_ready, 120, harness.check)
    harness.client.node.destroy_client(get_state)
    yield harness
    harness.client.close()
    proc.stop()


@pytest.fixture(scope='module')
def frame() -> np.ndarray:
    from seg_ros.data.synthetic import SyntheticDrive

    return SyntheticDrive(size=(H, W), seed=5).frame(2)[0]


def test_configure_failure_keeps_node_unconfigured(lc: Lifecycle, checkpoint: Path) -> None:
    assert lc.state() == 'unconfigured'
    (ok,) = lc.client.set_parameters(NODE, {'model': '/no/such/model.onnx'})
    assert ok.successful  # load-time parameters may change while unconfigured
    assert not lc.transition('configure')
    assert lc.state() == 'unconfigured'
    assert 'configure failed: model file not found' in lc.proc.log()
    (ok,) = lc.client.set_parameters(NODE, {'model': str(checkpoint)})
    assert ok.successful


def test_configure_activate_segments_jpeg(lc: Lifecycle, offline: Any,
                                          frame: np.ndarray) -> None:
    assert lc.transition('configure')
    assert lc.state() == 'inactive'
    (refused,) = lc.client.set_parameters(NODE, {'backend': 'onnxruntime'})
    assert not refused.successful and 'configure' in refused.reason
    # inactive: no subscription, no output
    assert lc.client.spin_until(lambda: lc.pub.get_subscription_count() == 0, 5)
    assert lc.answered(lc.jpeg(frame), 1.5) is None

    assert lc.transition('activate')
    assert lc.state() == 'active'
    assert lc.client.spin_until(lambda: lc.pub.get_subscription_count() > 0, 10, lc.check)
    msg = lc.jpeg(frame)
    mask = lc.answered(msg, 20)
    assert mask is not None, lc.proc.log()[-2000:]
    ids = np.frombuffer(mask.data, np.uint8).reshape(H, W)
    np.testing.assert_array_equal(ids, offline(compressed_to_rgb(msg.data, 'jpeg')).ids)
    assert mask.header.frame_id == 'cam'


def test_corrupt_jpeg_rejected_then_good_frames(lc: Lifecycle, frame: np.ndarray) -> None:
    rejected = int(lc.diag()['frames rejected'])
    good = encode_compressed(frame, 'jpeg')
    for bad in (good[:len(good) // 3], b'\xff\xd8\xff\xe0 not a jpeg at all', b''):
        msg = lc.jpeg(frame, bad)
        assert lc.answered(msg, 1.0) is None
        assert lc.answered(lc.jpeg(frame), 20) is not None
    deadline = time.monotonic() + 5
    while int(lc.diag()['frames rejected']) < rejected + 3 and time.monotonic() < deadline:
        pass
    assert int(lc.diag()['frames rejected']) == rejected + 3
    log = lc.proc.log()
    assert 'cannot decode compressed image' in log and 'empty compressed image' in log


def test_png_bomb_rejected_without_decoding(lc: Lifecycle, frame: np.ndarray) -> None:
    """A 48 KB PNG declaring 20000x20000 (1.2 GB decoded) is refused from its header."""
    rejected = int(lc.diag()['frames rejected'])
    bomb = lc.jpeg(frame, png_bomb(20000, 20000))
    bomb.format = 'png'
    assert lc.answered(bomb, 1.0) is None
    assert lc.answered(lc.jpeg(frame), 20) is not None  # the next good frame is served
    deadline = time.monotonic() + 5
    while int(lc.diag()['frames rejected']) < rejected + 1 and time.monotonic() < deadline:
        pass
    values = lc.diag()
    assert int(values['frames rejected']) == rejected + 1
    assert '20000x20000' in values['last error'] and 'max_input_pixels' in values['last error']


def test_incompatible_publisher_qos_is_reported(lc: Lifecycle) -> None:
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage

    try:
        from rclpy.event_handler import PublisherEventCallbacks
    except ImportError:  # Humble
        from rclpy.qos_event import PublisherEventCallbacks
    quiet = PublisherEventCallbacks(incompatible_qos=lambda info: None)
    pub = lc.client.node.create_publisher(CompressedImage, '/image/compressed',
                                          qos_profile_sensor_data, event_callbacks=quiet)
    try:
        assert lc.client.spin_until(lambda: 'offers a QoS incompatible' in lc.proc.log(), 10,
                                    lc.check)
        assert 'RELIABILITY' in lc.proc.log()
    finally:
        lc.client.node.destroy_publisher(pub)


def test_no_input_is_reported(lc: Lifecycle) -> None:
    from diagnostic_msgs.msg import DiagnosticStatus

    seen: list[str] = []

    def idle() -> bool:
        msg = lc.client.latest.get('/diagnostics')
        if msg is None:
            return False
        status = msg.status[0]
        seen.append(f'{status.name} level {status.level}: {status.message}')
        return status.level == DiagnosticStatus.WARN and \
            'no input on /image/compressed' in status.message

    assert lc.client.spin_until(idle, 15, lc.check), seen[-5:]
    assert lc.client.spin_until(lambda: 'no frames on /image/compressed' in lc.proc.log(), 5)


def test_deactivate_cleanup_shutdown(lc: Lifecycle, frame: np.ndarray) -> None:
    assert lc.transition('deactivate')
    assert lc.state() == 'inactive'
    assert lc.client.spin_until(lambda: lc.pub.get_subscription_count() == 0, 5)
    assert lc.answered(lc.jpeg(frame), 1.5) is None
    assert lc.diag()['state'] == 'inactive'
    assert lc.transition('cleanup')
    assert lc.state() == 'unconfigured'
    assert lc.client.spin_until(
        lambda: lc.client.node.count_publishers(f'{NODE}/mask') == 0, 5)
    # configure again after cleanup, now publishing at the network's size: the model loads
    # afresh with the new load-time parameter
    (ok,) = lc.client.set_parameters(NODE, {'output_size': 'network'})
    assert ok.successful
    assert lc.transition('configure') and lc.transition('activate')
    assert lc.client.spin_until(lambda: lc.pub.get_subscription_count() > 0, 10, lc.check)
    mask = lc.answered(lc.jpeg(frame), 20)
    assert mask is not None and (mask.height, mask.width) == (64, 128)
    assert lc.transition('deactivate') and lc.transition('cleanup')
    assert lc.transition('shutdown')
    assert lc.state() == 'finalized'
    assert lc.proc.alive()
    assert lc.proc.stop() == 0
    assert 'Traceback' not in lc.proc.log()
