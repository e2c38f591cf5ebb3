"""``multi_camera.launch.py batched:=true`` run for real: colcon install, the real launch.

As ``test/test_launch_run.py`` does: seg_ros is built with ``colcon build`` into a temporary
workspace and the launch file of that install runs through ``launch.LaunchService``
(``run_launch.py`` of ``../shared/ros2_launch`` or ``$SEG_ROS_ROS2_LAUNCH``, or a ROS install).
One process must serve every camera (plain and lifecycle with autostart), each camera's mask
equal to an offline ONNX Runtime run of the same model; SIGINT must leave no process behind.
``SEG_ROS_LAUNCH_DISTROS`` picks the launch releases (default ``jazzy``), ``SEG_ROS_TEST_ONNX``
the model (default: the shipped ONNX model).
"""
from __future__ import annotations

from collections.abc import Iterator
import os
from pathlib import Path
import time
from typing import Any

import numpy as np
import pytest

from seg_ros.testing.node_harness import (
    LaunchProcess,
    RosClient,
    build_workspace,
    make_image,
    stamp_ns,
    tagged_processes,
)
from seg_ros.testing.ros_env import ros2_launch_path, ros2_launch_runner

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_ONNX = ROOT / 'models' / 'regseg48_synthetic.onnx'
NODE = '/multi_camera_segmentation_node'
H, W = 96, 160
DISTROS = [d.strip() for d in os.environ.get('SEG_ROS_LAUNCH_DISTROS', 'jazzy').split(',')
           if d.strip()]


def _launch_setup(distro: str) -> tuple[Path, list[Path]]:
    runner, paths = ros2_launch_runner(ROOT), ros2_launch_path(distro, ROOT)
    if runner is not None and paths is not None:
        return runner, paths
    try:
        import launch_ros  # noqa: F401
    except ImportError:
        pytest.skip(f'no ROS install and no ../shared/ros2_launch/{distro} (launch / '
                    f'launch_ros are not on PyPI)')
    if runner is None:
        pytest.skip('ROS install found but no shared/ros2_launch/run_launch.py')
    return runner, []


@pytest.fixture(scope='module')
def install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp('colcon_ws_multicam')
    return build_workspace(ROOT, ws, ws / 'colcon.log')


@pytest.fixture(scope='module')
def expected() -> Iterator[tuple[np.ndarray, np.ndarray, Path]]:
    from seg_ros.data.synthetic import SyntheticDrive
    from seg_ros.runtime.segmenter import Segmenter

    model = Path(os.environ.get('SEG_ROS_TEST_ONNX', '') or SHIPPED_ONNX)
    assert model.is_file(), f'test model {model} missing'
    frame = SyntheticDrive(size=(H, W), seed=11).frame(0)[0]
    seg = Segmenter.from_file(str(model), backend='onnxruntime', device='cpu', threads=1)
    try:
        yield frame, seg(frame).ids, model
    finally:
        seg.close()


def test_install_has_the_multicam_executables(install: Path) -> None:
    lib = install / 'seg_ros' / 'lib' / 'seg_ros'
    for exe in ('multi_camera_segmentation_node', 'multi_camera_segmentation_lifecycle_node'):
        assert os.access(lib / exe, os.X_OK), f'{exe} not in lib/seg_ros'


@pytest.mark.parametrize('distro', DISTROS)
@pytest.mark.parametrize('lifecycle', ['false', 'true'])
def test_batched_mode_serves_every_camera_from_one_process(
        distro: str, lifecycle: str, install: Path, expected: Any, tmp_path: Path) -> None:
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    frame, ids, model = expected
    runner, pythonpath = _launch_setup(distro)
    launch = LaunchProcess(install, 'multi_camera.launch.py',
                           ['cameras:=front,rear:/rear_cam/image_raw', f'model:={model}',
                            'backend:=onnxruntime', 'batched:=true',
                            f'use_lifecycle:={lifecycle}'],
                           runner, pythonpath, tmp_path / 'launch.log')
    client = RosClient('multicam_launch_client')
    try:
        topics = {'front': '/front/image_raw', 'rear': '/rear_cam/image_raw'}
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        pubs = {c: client.node.create_publisher(Image, t, qos_profile_sensor_data)
                for c, t in topics.items()}
        for c in topics:
            client.record(f'{NODE}/{c}/mask', Image, reliable)
        msg = make_image(frame, 'rgb8', stamp=4_000 * 10**9)
        key = stamp_ns(msg.header)
        stores = [client.received[f'{NODE}/{c}/mask'] for c in topics]
        deadline = time.monotonic() + 180.0
        while not all(key in s for s in stores):
            assert launch.alive(), f'the launch exited:\n{launch.log()[-4000:]}'
            assert time.monotonic() < deadline, f'no masks:\n{launch.log()[-4000:]}'
            for pub in pubs.values():
                pub.publish(msg)  # again: the node may not be up yet, best effort
            client.spin_until(lambda: all(key in s for s in stores), 1.0)
        for store in stores:
            mask = store[key]
            assert (mask.height, mask.width) == (H, W)
            np.testing.assert_array_equal(
                np.frombuffer(mask.data, np.uint8).reshape(H, W), ids)
        # one node process for both cameras: the launch's only child (besides bash/python)
        node_pids = [p for p in tagged_processes(launch.tag)
                     if b'multi_camera_segmentation' in Path(f'/proc/{p}/cmdline').read_bytes()]
        assert len(node_pids) == 1, node_pids
    finally:
        client.close()
        rc = launch.stop()
        left = launch.leftovers()
        launch.kill_leftovers()
    log = launch.log()
    assert not left, f'processes left after the launch stopped: {left}'
    assert rc == 0, f'launch exited {rc}:\n{log[-4000:]}'
    assert log.count('process started with pid') == 1, log[-4000:]
    assert log.count('process has finished cleanly') == 1, log[-4000:]
