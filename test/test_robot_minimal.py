"""The robot-minimal install serves ONNX models: onnxruntime only, no torch, no onnx.

`make test` also runs this file in ``.venv-jazzy`` (``requirements-jazzy.txt``: Jazzy rclpy and
messages, onnxruntime, numpy, OpenCV, PyYAML; torch and onnx are not installed there). In the
main venv, where torch and onnx are installed, it checks that the ONNX Runtime path does not
import them. ``SEG_ROS_TEST_ONNX`` names the model (made in the main venv by `make test`;
default: the shipped ONNX model).
"""
from __future__ import annotations

from collections.abc import Iterator
import json
import os
from pathlib import Path
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

from seg_ros.testing.node_harness import (
    LIFECYCLE_MODULE,
    NODE_MODULE,
    NodeProcess,
    RosClient,
    make_image,
    stamp_ns,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_ONNX = ROOT / 'models' / 'regseg48_synthetic.onnx'
NODE = '/segmentation_node'
H, W = 72, 120
HEAVY = ('torch', 'onnx', 'onnxscript', 'tensorrt')
# shared libraries that would show torch or onnx was loaded into the node process
HEAVY_LIBRARIES = ('libtorch', 'onnx_cpp2py_export')


@pytest.fixture(scope='module')
def onnx_model() -> Path:
    path = Path(os.environ.get('SEG_ROS_TEST_ONNX', '') or SHIPPED_ONNX)
    assert path.is_file(), f'test model {path} missing'
    return path


@pytest.fixture(scope='module')
def expected(onnx_model: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    from seg_ros.data.synthetic import SyntheticDrive
    from seg_ros.runtime.segmenter import Segmenter

    frame = SyntheticDrive(size=(H, W), seed=13).frame(1)[0]
    seg = Segmenter.from_file(str(onnx_model), backend='onnxruntime', device='cpu', threads=1)
    try:
        yield frame, seg(frame).ids
    finally:
        seg.close()


def test_onnx_segmenter_imports_neither_torch_nor_onnx(onnx_model: Path) -> None:
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        from seg_ros.runtime.segmenter import Segmenter
        import seg_ros.ros.node, seg_ros.ros.lifecycle_node
        seg = Segmenter.from_file({str(onnx_model)!r}, backend='auto', device='cpu')
        out = seg(np.zeros((40, 60, 3), np.uint8))
        print(json.dumps({{'backend': seg.backend_name, 'shape': list(out.ids.shape),
                          'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))
    """)
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # auto on a CPU: OpenVINO where it is installed (the Kilted venv), else ONNX Runtime
    import importlib.util

    expected = 'openvino' if importlib.util.find_spec('openvino') else 'onnxruntime'
    assert result == {'backend': expected, 'shape': [40, 60], 'heavy': []}


def _loaded_heavy_libraries(pid: int) -> list[str]:
    maps = Path(f'/proc/{pid}/maps').read_text()
    return [lib for lib in HEAVY_LIBRARIES if lib in maps]


class Client:
    def __init__(self, node: NodeProcess) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import Image

        self.node = node
        self.ros = RosClient('robot_minimal_client')
        self.pub = self.ros.node.create_publisher(Image, '/image', qos_profile_sensor_data)
        self.ros.record(f'{NODE}/mask', Image,
                        QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.stamp = 5_000 * 1_000_000_000

    def check(self) -> None:
        if not self.node.alive():
            raise AssertionError(f'the node died:\n{self.node.log()[-3000:]}')

    def answer(self, frame: np.ndarray, timeout: float = 180.0) -> Any:
        """The mask of ``frame`` (re-published until it comes back), or None on timeout."""
        import time

        self.stamp += 1_000_000
        msg = make_image(frame, 'rgb8', stamp=self.stamp)
        key, store = stamp_ns(msg.header), self.ros.received[f'{NODE}/mask']
        deadline = time.monotonic() + timeout
        while key not in store and time.monotonic() < deadline:
            self.pub.publish(msg)
            self.ros.spin_until(lambda: key in store, 1.0, self.check)
        if key not in store:
            return None
        mask = store[key]
        return np.frombuffer(mask.data, np.uint8).reshape(mask.height, mask.width)

    def transition(self, name: str) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        ids = {'configure': Transition.TRANSITION_CONFIGURE,
               'activate': Transition.TRANSITION_ACTIVATE,
               'deactivate': Transition.TRANSITION_DEACTIVATE,
               'shutdown': Transition.TRANSITION_INACTIVE_SHUTDOWN}
        request = ChangeState.Request(transition=Transition(id=ids[name]))
        return bool(self.ros.call(ChangeState, f'{NODE}/change_state', request,
                                  timeout=180).success)


@pytest.fixture
def start(onnx_model: Path, tmp_path: Path) -> Iterator[Any]:
    clients: list[Client] = []

    def run(module: str) -> Client:
        # device cpu: with device auto the segmenter probes CUDA through torch where torch is
        # installed (the main venv); the robot venv has none, the launch tests run auto there
        node = NodeProcess(['-p', f'model:={onnx_model}', '-p', 'backend:=onnxruntime',
                            '-p', 'device:=cpu', '-p', 'threads:=1'], tmp_path / 'node.log',
                           env=dict(os.environ), module=module)
        clients.append(Client(node))
        return clients[-1]

    yield run
    for client in clients:
        client.ros.close()
        client.node.stop()


@pytest.mark.ros
def test_node_serves_onnx_without_torch(start: Any, expected: Any) -> None:
    client = start(NODE_MODULE)
    frame, ids = expected
    mask = client.answer(frame)
    assert mask is not None, f'no mask:\n{client.node.log()[-3000:]}'
    np.testing.assert_array_equal(mask, ids)
    assert _loaded_heavy_libraries(client.node.pid()) == []


@pytest.mark.ros
def test_lifecycle_node_serves_onnx_without_torch(start: Any, expected: Any) -> None:
    client = start(LIFECYCLE_MODULE)
    frame, ids = expected
    from lifecycle_msgs.srv import GetState

    ready = client.ros.node.create_client(GetState, f'{NODE}/get_state')
    assert client.ros.spin_until(ready.service_is_ready, 120, client.check)
    assert client.transition('configure') and client.transition('activate')
    mask = client.answer(frame)
    assert mask is not None, f'no mask:\n{client.node.log()[-3000:]}'
    np.testing.assert_array_equal(mask, ids)
    assert _loaded_heavy_libraries(client.node.pid()) == []
    assert client.transition('deactivate')
    assert client.answer(frame, timeout=3.0) is None  # inactive: no output
    assert client.transition('shutdown')
