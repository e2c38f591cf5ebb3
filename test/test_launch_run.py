"""The launch files run for real: colcon install, the real launch system, nodes that answer.

seg_ros is built with ``colcon build`` into a temporary workspace (as a robot installs it) and
each launch file of that install runs through ``launch.LaunchService`` (``run_launch.py`` of
``../shared/ros2_launch``, or a ROS install's launch). Every node started must answer a
published frame with a mask equal to an offline ONNX Runtime run of the same model; SIGINT
must leave no process behind. ``SEG_ROS_LAUNCH_DISTROS`` (comma-separated, default
``jazzy``) picks the launch releases to run; ``SEG_ROS_TEST_ONNX`` the model (default: the
shipped ONNX model).
"""
from __future__ import annotations

from collections.abc import Iterator
import os
from pathlib import Path
import time
from typing import Any

import numpy as np
import pytest
import yaml

from seg_ros.testing.node_harness import (
    LaunchProcess,
    RosClient,
    build_workspace,
    make_image,
    stamp_ns,
)
from seg_ros.testing.ros_env import ros2_launch_path, ros2_launch_runner

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_ONNX = ROOT / 'models' / 'regseg48_synthetic.onnx'
NODE = 'segmentation_node'
H, W = 96, 160


def _distros() -> list[str]:
    return [d.strip() for d in os.environ.get('SEG_ROS_LAUNCH_DISTROS', 'jazzy').split(',')
            if d.strip()]


def _launch_setup(distro: str) -> tuple[Path, list[Path]]:
    """(run_launch.py, PYTHONPATH entries) for ``distro``; skips where neither exists."""
    runner = ros2_launch_runner(ROOT)
    paths = ros2_launch_path(distro, ROOT)
    if runner is not None and paths is not None:
        return runner, paths
    try:  # a ROS install: its own launch, the runner still needed
        import launch_ros  # noqa: F401
    except ImportError:
        pytest.skip(f'no ROS install and no ../shared/ros2_launch/{distro} beside the '
                    f'repository (launch / launch_ros are not on PyPI)')
    if runner is None:
        pytest.skip('ROS install found but no shared/ros2_launch/run_launch.py')
    return runner, []


@pytest.fixture(scope='module')
def install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp('colcon_ws')
    return build_workspace(ROOT, ws, ws / 'colcon.log')


@pytest.fixture(scope='module')
def onnx_model() -> Path:
    path = Path(os.environ.get('SEG_ROS_TEST_ONNX', '') or SHIPPED_ONNX)
    assert path.is_file(), f'test model {path} missing'
    return path


@pytest.fixture(scope='module')
def expected(onnx_model: Path) -> Iterator[Any]:
    """The offline ids of the test frame: the node must publish exactly these."""
    from seg_ros.data.synthetic import SyntheticDrive
    from seg_ros.runtime.segmenter import Segmenter

    frame = SyntheticDrive(size=(H, W), seed=11).frame(0)[0]
    seg = Segmenter.from_file(str(onnx_model), backend='onnxruntime', device='cpu', threads=1)
    try:
        yield frame, seg(frame).ids
    finally:
        seg.close()


@pytest.fixture
def params_file(tmp_path: Path) -> Any:
    def write(**values: Any) -> Path:
        path = tmp_path / 'params.yaml'
        path.write_text(yaml.safe_dump({'/**': {'ros__parameters': values}}))
        return path
    return write


class Launched:
    """A running launch plus a client that talks to its nodes."""

    def __init__(self, launch: LaunchProcess) -> None:
        self.launch = launch
        self.client = RosClient('launch_test_client')
        self.stamp = 3_000 * 1_000_000_000

    def check(self) -> None:
        if not self.launch.alive():
            raise AssertionError(f'the launch exited:\n{self.launch.log()[-4000:]}')

    def answer(self, namespace: str, frame: np.ndarray, compressed: bool = False,
               timeout: float = 180.0) -> np.ndarray:
        """Publish ``frame`` to the node in ``namespace`` until its mask comes back."""
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image

        from seg_ros.encodings import encode_compressed

        prefix = f'/{namespace}' if namespace else ''
        topic = f'{prefix}/{NODE}/mask'
        self.client.record(topic, Image, QoSProfile(depth=10,
                                                    reliability=ReliabilityPolicy.RELIABLE))
        image_topic = (f'/{namespace}/image_raw' if namespace else '/camera/image_raw')
        if compressed:
            pub = self.client.node.create_publisher(CompressedImage,
                                                    image_topic + '/compressed', 10)
        else:
            pub = self.client.node.create_publisher(Image, image_topic,
                                                    qos_profile_sensor_data)
        self.stamp += 1_000_000
        if compressed:
            msg = CompressedImage(format='png')
            msg.data = encode_compressed(frame, 'png')
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(self.stamp, 10**9)
        else:
            msg = make_image(frame, 'rgb8', stamp=self.stamp)
        key = stamp_ns(msg.header)
        store = self.client.received[topic]
        deadline = time.monotonic() + timeout
        while key not in store:
            assert time.monotonic() < deadline, (
                f'no mask on {topic}:\n{self.launch.log()[-4000:]}')
            pub.publish(msg)  # again: the node may not be up yet, best effort may drop it
            self.client.spin_until(lambda: key in store, 1.0, self.check)
        self.client.node.destroy_publisher(pub)
        mask = store[key]
        assert mask.encoding == 'mono8' and (mask.height, mask.width) == frame.shape[:2]
        return np.frombuffer(mask.data, np.uint8).reshape(mask.height, mask.width)

    def parameters(self, node: str, names: list[str]) -> dict[str, Any]:
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        response = self.client.call(GetParameters, f'{node}/get_parameters',
                                    GetParameters.Request(names=names))
        return {n: parameter_value_to_python(v) for n, v in zip(names, response.values)}

    def state(self, node: str) -> str:
        from lifecycle_msgs.srv import GetState

        return str(self.client.call(GetState, f'{node}/get_state',
                                    GetState.Request()).current_state.label)


@pytest.fixture
def run_launch(install: Path, tmp_path: Path) -> Iterator[Any]:
    started: list[Launched] = []

    def start(distro: str, launch_file: str, *arguments: str) -> Launched:
        runner, pythonpath = _launch_setup(distro)
        launch = LaunchProcess(install, launch_file, list(arguments), runner, pythonpath,
                               tmp_path / f'launch{len(started)}.log')
        started.append(Launched(launch))
        return started[-1]

    yield start
    for launched in started:
        launched.client.close()
        rc = launched.launch.stop()
        left = launched.launch.leftovers()
        launched.launch.kill_leftovers()
        assert not left, f'processes left after the launch stopped: {left}'
        assert rc == 0, f'launch exited {rc}:\n{launched.launch.log()[-4000:]}'
        log = launched.launch.log()
        # every node ended on the SIGINT the launch forwarded, none killed by SIGTERM
        assert 'failed to terminate' not in log and 'process has died' not in log, log[-4000:]
        started_nodes = log.count('process started with pid')
        assert started_nodes and log.count('process has finished cleanly') == started_nodes, (
            log[-4000:])


DISTROS = pytest.mark.parametrize('distro', _distros())


@DISTROS
def test_single_camera_plain_command_line_overrides_params_file(
        distro: str, run_launch: Any, onnx_model: Path, expected: Any,
        params_file: Any) -> None:
    # the file asks for torch; backend:= on the command line must win
    params = params_file(backend='torch', threads=1, overlay_alpha=0.25)
    run = run_launch(distro, 'segmentation.launch.py', f'model:={onnx_model}',
                     'backend:=onnxruntime', f'params_file:={params}')
    frame, ids = expected
    np.testing.assert_array_equal(run.answer('', frame), ids)
    values = run.parameters(f'/{NODE}', ['backend', 'model', 'threads', 'overlay_alpha'])
    assert values == {'backend': 'onnxruntime', 'model': str(onnx_model), 'threads': 1,
                      'overlay_alpha': 0.25}


@DISTROS
def test_single_camera_lifecycle_autostart(distro: str, run_launch: Any, onnx_model: Path,
                                           expected: Any) -> None:
    # the default params file (config/segmentation.yaml) of the install
    run = run_launch(distro, 'segmentation.launch.py', f'model:={onnx_model}',
                     'use_lifecycle:=true')
    frame, ids = expected
    np.testing.assert_array_equal(run.answer('', frame), ids)
    assert run.state(f'/{NODE}') == 'active'


@DISTROS
@pytest.mark.parametrize('lifecycle', ['false', 'true'])
def test_multi_camera_front_rear(distro: str, lifecycle: str, run_launch: Any,
                                 onnx_model: Path, expected: Any, params_file: Any) -> None:
    params = params_file(threads=1)
    run = run_launch(distro, 'multi_camera.launch.py', 'cameras:=front,rear',
                     f'model:={onnx_model}', 'backend:=onnxruntime', f'params_file:={params}',
                     f'use_lifecycle:={lifecycle}')
    frame, ids = expected
    for camera in ('front', 'rear'):
        np.testing.assert_array_equal(run.answer(camera, frame), ids)
        if lifecycle == 'true':
            assert run.state(f'/{camera}/{NODE}') == 'active'


@DISTROS
def test_params_file_values_reach_the_node(distro: str, run_launch: Any, onnx_model: Path,
                                           expected: Any, params_file: Any) -> None:
    # no model/backend/input_compressed arguments: the file decides all three
    params = params_file(model=str(onnx_model), backend='onnxruntime', input_compressed=True,
                         threads=1, max_rate_hz=50.0, publish_overlay=False)
    run = run_launch(distro, 'segmentation.launch.py', f'params_file:={params}')
    frame, ids = expected
    np.testing.assert_array_equal(run.answer('', frame, compressed=True), ids)
    names = ['model', 'backend', 'input_compressed', 'threads', 'max_rate_hz',
             'publish_overlay']
    assert run.parameters(f'/{NODE}', names) == {
        'model': str(onnx_model), 'backend': 'onnxruntime', 'input_compressed': True,
        'threads': 1, 'max_rate_hz': 50.0, 'publish_overlay': False}


def test_install_layout_and_ros2_run_executables(install: Path) -> None:
    """What `ros2 run seg_ros <executable>` and `ros2 launch seg_ros ...` find after colcon."""
    import subprocess

    lib = install / 'seg_ros' / 'lib' / 'seg_ros'
    for exe in ('seg-ros', 'segmentation_node', 'segmentation_lifecycle_node'):
        assert os.access(lib / exe, os.X_OK), f'{exe} not in lib/seg_ros'
    share = install / 'seg_ros' / 'share'
    assert (share / 'ament_index' / 'resource_index' / 'packages' / 'seg_ros').is_file()
    for rel in ('package.xml', 'launch/segmentation.launch.py', 'launch/multi_camera.launch.py',
                'config/segmentation.yaml', 'config/regseg.yaml', 'config/fastdds_profile.xml'):
        assert (share / 'seg_ros' / rel).is_file(), rel
    # the offline CLI through the install, as `ros2 run seg_ros seg-ros --help` runs it
    proc = subprocess.run(['bash', '-c', 'source "$0/setup.bash" && exec "$1" --help',
                           str(install), str(lib / 'seg-ros')], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and 'eval-bag' in proc.stdout, proc.stderr[-2000:]
