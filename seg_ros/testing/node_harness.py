"""Drive a segmentation node from outside: tests and ``benchmarks/bench_node.py`` use this.

* :class:`NodeProcess`: the node in a subprocess on the caller's isolated ROS domain, its log
  in a file, stopped with SIGINT (a clean rclpy shutdown) and killed only if it hangs.
* :class:`RosClient`: an rclpy node in its own context and executor that publishes frames
  and records what comes back, keyed by header stamp.
* :func:`make_image`: a ``sensor_msgs/Image`` in any supported encoding from an RGB array,
  with optional row padding and byte order.
* :func:`build_workspace` and :class:`LaunchProcess`: seg_ros built with ``colcon`` into a
  workspace, as a robot installs it, and a launch file of that install run through the real
  ``launch`` system (a ROS install or ``shared/ros2_launch``), stopped with SIGINT, every
  process it started accounted for.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import time
from typing import Any
import uuid

import cv2
import numpy as np

NODE_MODULE = 'seg_ros.ros.node'
LIFECYCLE_MODULE = 'seg_ros.ros.lifecycle_node'
# What a colcon workspace needs of the repository to build and install the package.
PACKAGE_FILES = ('setup.py', 'setup.cfg', 'package.xml', 'resource', 'seg_ros', 'launch',
                 'config', 'models')
LAUNCH_TAG = 'SEG_ROS_LAUNCH_TAG'


class NodeProcess:
    """A segmentation node in a subprocess.

    Args:
        ros_args: arguments after ``--ros-args`` (``-p name:=value``, ``-r from:=to``).
        log_path: file receiving the node's stdout and stderr.
        env: environment (the caller's isolated ROS domain).
        module: ``seg_ros.ros.node`` or ``seg_ros.ros.lifecycle_node``.
    """

    def __init__(self, ros_args: list[str], log_path: str | os.PathLike[str],
                 env: dict[str, str] | None = None, module: str = NODE_MODULE) -> None:
        self.cmd = [sys.executable, '-m', module, '--ros-args', *ros_args]
        self.log_path = Path(log_path)
        self._log = self.log_path.open('w')
        self.proc = subprocess.Popen(self.cmd, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def log(self) -> str:
        """Everything the node printed so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors='replace')

    def pid(self) -> int:
        """Process id (for resident-memory sampling)."""
        return self.proc.pid

    def stop(self, timeout: float = 15.0) -> int:
        """SIGINT, wait, SIGKILL if needed; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)


def rss_mib(pid: int) -> float:
    """Resident set size of a process in MiB (Linux ``/proc``)."""
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024.0
    raise OSError(f'no VmRSS for pid {pid}')


def stamp_ns(header: Any) -> int:
    """Header stamp as integer nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class RosClient:
    """An rclpy node with its own context and executor.

    Messages of every :meth:`record` ed topic are kept per stamp (``client.received[topic]``),
    so a test can wait for the answer to exactly the frame it sent.
    """

    def __init__(self, name: str = 'seg_ros_test_client') -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.context.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, dict[int, Any]] = {}
        self.arrival_ns: dict[str, dict[int, int]] = {}
        self.latest: dict[str, Any] = {}
        self._subs: dict[str, Any] = {}

    def record(self, topic: str, msg_type: Any, qos: Any = 10,
               keep: bool = True) -> None:
        """Subscribe to ``topic``; keep each message by header stamp (or only the latest)."""
        self.received.setdefault(topic, {})
        self.arrival_ns.setdefault(topic, {})

        def callback(msg: Any) -> None:
            now = time.monotonic_ns()
            self.latest[topic] = msg
            header = getattr(msg, 'header', None)
            if keep and header is not None:
                key = stamp_ns(header)
                self.received[topic][key] = msg
                self.arrival_ns[topic].setdefault(key, now)

        self._subs[topic] = self.node.create_subscription(msg_type, topic, callback, qos)

    def unrecord(self, topic: str) -> None:
        """Unsubscribe from ``topic``."""
        sub = self._subs.pop(topic, None)
        if sub is not None:
            self.node.destroy_subscription(sub)

    def spin_until(self, predicate: Callable[[], bool], timeout: float,
                   check: Callable[[], None] | None = None) -> bool:
        """Spin until ``predicate()`` holds; False on timeout. ``check`` may raise."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            self.executor.spin_once(timeout_sec=0.02)
            if check is not None:
                check()
        return True

    def spin_for(self, seconds: float) -> None:
        """Process callbacks for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)

    def call(self, srv_type: Any, name: str, request: Any, timeout: float = 30.0) -> Any:
        """Call a service and wait for the response (raises TimeoutError)."""
        client = self.node.create_client(srv_type, name)
        try:
            if not self.spin_until(client.service_is_ready, timeout):
                raise TimeoutError(f'service {name} not available')
            future = client.call_async(request)
            if not self.spin_until(future.done, timeout):
                raise TimeoutError(f'service {name} did not answer within {timeout} s')
            return future.result()
        finally:
            self.node.destroy_client(client)

    def set_parameters(self, node_name: str, values: dict[str, Any],
                       timeout: float = 10.0) -> list[Any]:
        """``SetParameters`` on ``node_name``; returns one SetParametersResult per value."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        return list(self.call(SetParameters, f'{node_name}/set_parameters', request,
                              timeout).results)

    def close(self) -> None:
        """Destroy the node and shut the context down."""
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _bayer(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Mosaic an RGB image: ``pattern`` names the 2x2 colours row by row (e.g. ``rggb``)."""
    h, w = rgb.shape[:2]
    out = np.empty((h, w), np.uint8)
    index = {'r': 0, 'g': 1, 'b': 2}
    for k, ch in enumerate(pattern):
        dy, dx = divmod(k, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, index[ch]]
    return out


def _yuv422(rgb: np.ndarray, order: str) -> np.ndarray:
    """Packed 4:2:2 (``uyvy`` or ``yuyv``) as (H, W, 2) uint8, BT.601 as OpenCV decodes it."""
    yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV).astype(np.float32)
    y = yuv[..., 0]
    u = (yuv[:, 0::2, 1] + yuv[:, 1::2, 1]) / 2
    v = (yuv[:, 0::2, 2] + yuv[:, 1::2, 2]) / 2
    chroma = np.empty_like(y)
    chroma[:, 0::2] = u
    chroma[:, 1::2] = v
    pair = (chroma, y) if order == 'uyvy' else (y, chroma)
    return np.clip(np.stack(pair, axis=-1).round(), 0, 255).astype(np.uint8)


def encode_pixels(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """The raw pixel array of ``rgb`` in ``encoding`` (native byte order for 16 bit)."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    alpha = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
    if encoding == 'rgb8':
        return rgb
    if encoding in ('bgr8', '8UC3'):
        return rgb[..., ::-1]
    if encoding == 'rgba8':
        return np.concatenate([rgb, alpha], axis=-1)
    if encoding == 'bgra8':
        return np.concatenate([rgb[..., ::-1], alpha], axis=-1)
    if encoding in ('mono8', '8UC1'):
        return gray
    if encoding in ('mono16', '16UC1'):
        return gray.astype(np.uint16) * 257
    if encoding.startswith('bayer_'):
        return _bayer(rgb, encoding[len('bayer_'):-1])
    if encoding in ('yuv422', 'uyvy'):
        return _yuv422(rgb, 'uyvy')
    if encoding in ('yuyv', 'yuv422_yuy2'):
        return _yuv422(rgb, 'yuyv')
    raise ValueError(f'no encoder for {encoding!r}')


def make_image(rgb: np.ndarray, encoding: str = 'rgb8', pad: int = 0,
               bigendian: bool = False, stamp: int = 0, frame_id: str = 'camera') -> Any:
    """A ``sensor_msgs/Image`` holding ``rgb`` converted to ``encoding``.

    Args:
        rgb: (H, W, 3) uint8.
        encoding: any of :data:`seg_ros.encodings.SUPPORTED_ENCODINGS`.
        pad: extra bytes at the end of every row (``step`` > width x bytes per pixel).
        bigendian: for 16-bit encodings, store big-endian and set ``is_bigendian``.
        stamp: header stamp in nanoseconds.
        frame_id: header frame id.
    """
    from sensor_msgs.msg import Image

    pixels = encode_pixels(rgb, encoding)
    if pixels.dtype == np.uint16:
        pixels = pixels.astype('>u2' if bigendian else '<u2')
    h, w = pixels.shape[:2]
    rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(h, -1)
    if pad:
        rows = np.concatenate([rows, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    msg = Image(height=h, width=w, encoding=encoding, step=rows.shape[1],
                is_bigendian=int(bigendian and pixels.dtype.itemsize == 2))
    msg.data = rows.tobytes()
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp), 1_000_000_000)
    return msg


def random_checkpoint(path: str | os.PathLike[str], size: tuple[int, int] = (64, 128),
                      model: str = 'regseg48', seed: int = 0) -> Path:
    """A seg_ros checkpoint of ``model`` with seeded random weights (for node tests).

    Random weights give arbitrary but deterministic ids: enough to check that the node and
    the offline pipeline agree, without shipping or training a model.
    """
    import torch

    from seg_ros.metadata import ModelMeta
    from seg_ros.models.checkpoint import save_checkpoint
    from seg_ros.models.registry import create_model

    torch.manual_seed(seed)
    out = Path(path)
    save_checkpoint(out, create_model(model),
                    ModelMeta.for_dataset(model, input_size=[int(size[0]), int(size[1])]))
    return out


@contextlib.contextmanager
def offline_segmenter(checkpoint: str | os.PathLike[str]) -> Iterator[Any]:
    """The offline torch ``Segmenter`` node tests compare against (1 thread, as the node).

    Restores torch's thread count afterwards so other tests keep their setting.
    """
    import torch

    from seg_ros.runtime.segmenter import Segmenter

    threads = torch.get_num_threads()
    seg = Segmenter.from_file(str(checkpoint), backend='torch', device='cpu', threads=1)
    try:
        yield seg
    finally:
        seg.close()
        torch.set_num_threads(threads)


def build_workspace(repo_root: str | os.PathLike[str], workspace: str | os.PathLike[str],
                    log_path: str | os.PathLike[str] | None = None) -> Path:
    """Copy the package into ``workspace/src/seg_ros`` and ``colcon build`` it.

    colcon runs with the interpreter running this function (its ``colcon`` script lies next
    to it), so the installed entry points use that environment's packages.

    Returns:
        The workspace's ``install`` folder.

    Raises:
        RuntimeError: colcon is missing or the build failed (with colcon's output).
    """
    root, ws = Path(repo_root), Path(workspace)
    src = ws / 'src' / 'seg_ros'
    src.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '*.egg-info')
    for name in PACKAGE_FILES:
        if (root / name).is_dir():
            shutil.copytree(root / name, src / name, ignore=ignore, dirs_exist_ok=True)
        else:
            shutil.copy2(root / name, src / name)
    colcon = Path(sys.executable).parent / 'colcon'
    if not colcon.is_file():
        raise RuntimeError(f'colcon is not installed next to {sys.executable} '
                           f'(pip install colcon-common-extensions ros-ament-package)')
    proc = subprocess.run([str(colcon), 'build', '--base-paths', 'src'], cwd=ws,
                          capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if log_path is not None:
        Path(log_path).write_text(output)
    if proc.returncode != 0:
        raise RuntimeError(f'colcon build failed ({proc.returncode}):\n{output[-4000:]}')
    return ws / 'install'


def tagged_processes(tag: str) -> list[int]:
    """Pids of the running processes whose environment carries ``SEG_ROS_LAUNCH_TAG=tag``."""
    needle = f'{LAUNCH_TAG}={tag}'.encode()
    pids = []
    for entry in Path('/proc').iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / 'environ').read_bytes()
            state = (entry / 'stat').read_text().rsplit(')', 1)[1].split()[0]
        except OSError:  # gone meanwhile, or not ours
            continue
        if state != 'Z' and needle in environ.split(b'\0'):
            pids.append(int(entry.name))
    return pids


class LaunchProcess:
    """A launch file of a colcon install, run the way ``ros2 launch`` runs it.

    The command sources ``install/setup.bash`` (as a user does) and runs ``run_launch.py``
    (``shared/ros2_launch``: ``launch.LaunchService`` on an ``IncludeLaunchDescription``).
    Every process it starts inherits a unique ``SEG_ROS_LAUNCH_TAG``, so :meth:`leftovers`
    finds any that survive the launch's shutdown.

    Args:
        install: the workspace's ``install`` folder (:func:`build_workspace`).
        launch_file: file name in ``install/seg_ros/share/seg_ros/launch``.
        arguments: ``name:=value`` launch arguments.
        runner: ``run_launch.py``.
        pythonpath: folders that provide ``launch`` / ``launch_ros`` (empty on a ROS
            install).
        log_path: file receiving the launch output (the nodes print there too).
        env: base environment (the caller's isolated ROS domain).
    """

    def __init__(self, install: str | os.PathLike[str], launch_file: str, arguments: list[str],
                 runner: str | os.PathLike[str], pythonpath: list[Path],
                 log_path: str | os.PathLike[str], env: dict[str, str] | None = None) -> None:
        self.install = Path(install)
        self.tag = uuid.uuid4().hex
        environment = dict(os.environ if env is None else env)
        environment[LAUNCH_TAG] = self.tag
        environment['PYTHONPATH'] = os.pathsep.join(
            [str(p) for p in pythonpath] + [p for p in [environment.get('PYTHONPATH', '')]
                                            if p])
        path = self.install / 'seg_ros' / 'share' / 'seg_ros' / 'launch' / launch_file
        script = 'source "$0/setup.bash" && exec "$@"'
        self.cmd = ['bash', '-c', script, str(self.install), sys.executable, str(runner),
                    str(path), *arguments]
        self.log_path = Path(log_path)
        self._log = self.log_path.open('w')
        self.proc = subprocess.Popen(self.cmd, env=environment, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        """True while the launch runs."""
        return self.proc.poll() is None

    def log(self) -> str:
        """Everything printed so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors='replace')

    def stop(self, timeout: float = 60.0) -> int:
        """SIGINT (Ctrl-C), wait; SIGKILL the launch and anything it left if it hangs.

        Returns:
            The launch's exit status (negative: killed by that signal).
        """
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)

    def leftovers(self, grace: float = 10.0) -> list[int]:
        """Processes of this launch still running ``grace`` seconds after it stopped."""
        deadline = time.monotonic() + grace
        while (pids := tagged_processes(self.tag)) and time.monotonic() < deadline:
            time.sleep(0.2)
        return pids

    def kill_leftovers(self) -> None:
        """SIGKILL whatever :meth:`leftovers` found (so a failed test cleans up)."""
        for pid in tagged_processes(self.tag):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
