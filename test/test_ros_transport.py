"""The ROS test setup works: a 1024x2048 rgb8 image crosses processes intact."""
from __future__ import annotations

import subprocess
import textwrap
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

PUBLISHER = textwrap.dedent("""
    import sys, time
    import numpy as np
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node('big_image_publisher')
    pub = node.create_publisher(Image, 'big_image', qos_profile_sensor_data)
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (1024, 2048, 3), dtype=np.uint8)
    msg = Image(height=1024, width=2048, encoding='rgb8', step=2048 * 3)
    msg.header.frame_id = 'camera'
    msg.data = img.tobytes()
    deadline = time.monotonic() + float(sys.argv[1])
    i = 0
    while time.monotonic() < deadline:
        msg.header.stamp.sec = i
        pub.publish(msg)
        i += 1
        time.sleep(0.1)
    node.destroy_node()
    rclpy.shutdown()
""")


def test_large_image_crosses_processes_best_effort(rclpy_context, ros_env, python):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    node = rclpy.create_node('big_image_listener', context=rclpy_context)
    received: list[Image] = []
    node.create_subscription(Image, 'big_image', received.append, qos_profile_sensor_data)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    proc = subprocess.Popen([python, '-c', PUBLISHER, '30'], env=ros_env)
    try:
        deadline = time.monotonic() + 30
        while len(received) < 3 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
    finally:
        proc.kill()
        proc.wait()
        node.destroy_node()
    assert len(received) >= 3, 'large best-effort images did not arrive'
    expected = np.random.default_rng(7).integers(0, 256, (1024, 2048, 3), dtype=np.uint8)
    msg = received[-1]
    assert (msg.height, msg.width, msg.encoding, msg.step) == (1024, 2048, 'rgb8', 2048 * 3)
    assert msg.header.frame_id == 'camera'
    got = np.frombuffer(msg.data, dtype=np.uint8).reshape(1024, 2048, 3)
    np.testing.assert_array_equal(got, expected)
