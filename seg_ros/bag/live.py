"""Live evaluation: the segmentation node in one process, the bag player in another, and this
process recording what the node publishes -- what a robot would see.

Latency is end to end: player publish -> DDS -> node (decode, inference, publish) -> DDS ->
mask received here, taken on the host's monotonic clock in both processes (one clock on Linux,
so the difference is meaningful). A frame published but never answered is a drop: the node
keeps only the newest frame while busy (one-slot buffer), so drops are the node shedding load,
not a queue building up.
"""
from __future__ import annotations

import bisect
import json
import os
from pathlib import Path
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np

from seg_ros.bag.eval_bag import (
    OUTPUT_BAG_NAME,
    EvalConfig,
    OutputBag,
    Prepared,
    check_label_shape,
    image_messages,
    sample_indices,
)
from seg_ros.bag.io import COMPRESSED_TYPE, decode_frame, stamp_to_ns
from seg_ros.bag.labels import decode_label, encode_label
from seg_ros.bag.player import INDEX_MODULUS, WARMUP_MAX_NS, index_from_stamp
from seg_ros.bag.report import Accumulator, Sample
from seg_ros.encodings import ImageDecodeError, image_to_array
from seg_ros.errors import SegRosError
from seg_ros.metadata import ModelMeta
from seg_ros.progress import progress_bar
from seg_ros.testing.ros_env import FASTDDS_PROFILE_VARIABLES, ros_environment

NODE_NAME = 'segmentation_node'
MASK_TOPIC = f'/{NODE_NAME}/mask'
WARMUP_MASKS = 3  # warm-up round trips before playback: first inferences are slow


def node_command(cfg: EvalConfig, compressed: bool) -> list[str]:
    """Command line that starts the segmentation node for this run."""
    model = cfg.model
    if Path(model).exists():
        model = str(Path(model).resolve())
    # qos_output_depth 10: a reliable depth-1 output may replace a mask before this recorder
    # fetched it, and that loss would be miscounted as the node dropping a frame.
    cmd = [sys.executable, '-m', 'seg_ros.ros.node', '--ros-args',
           '-r', f'__node:={NODE_NAME}',
           '-p', f'model:={model}', '-p', f'backend:={cfg.backend}',
           '-p', 'qos_output_depth:=10']
    if cfg.device != 'auto':
        cmd += ['-p', f'device:={cfg.device}']
    if cfg.threads:
        cmd += ['-p', f'threads:={int(cfg.threads)}']
    if cfg.weights:
        cmd += ['-p', f'weights:={Path(cfg.weights).resolve()}']
    if cfg.input_size:
        cmd += ['-p', f'input_height:={int(cfg.input_size[0])}',
                '-p', f'input_width:={int(cfg.input_size[1])}']
    if compressed:
        cmd += ['-p', 'input_compressed:=true', '-r', f'image/compressed:={cfg.image_topic}']
    else:
        cmd += ['-r', f'image:={cfg.image_topic}']
    return cmd


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors='replace').strip().splitlines()
    except OSError:
        return ''
    return ' | '.join(text[-lines:])


def _stop(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGINT (a clean rclpy shutdown), then SIGKILL if it does not exit in time."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class _Recorder:
    """Receives the node's masks and scores them as they arrive."""

    def __init__(self, prep: Prepared, acc: Accumulator, keep_masks: bool) -> None:
        self.prep = prep
        self.acc = acc
        self.keep_masks = keep_masks
        self.received_ns: dict[int, int] = {}
        self.masks: dict[int, bytes] = {}
        self.sample_masks: dict[int, np.ndarray] = {}
        # The node drops frames under load, so a sample slot takes the first frame that comes
        # back at or after its planned index rather than exactly that frame.
        self._slots = sorted(acc.sample_indices)
        self._filled: set[int] = set()
        self.warmup = 0
        self.foreign = 0
        self.error: BaseException | None = None

    def __call__(self, msg: Any) -> None:
        t = time.monotonic_ns()
        stamp = stamp_to_ns(msg.header.stamp)
        idx = index_from_stamp(stamp, self.prep.frames)
        if idx is None:
            if stamp < WARMUP_MAX_NS:
                self.warmup += 1
            else:
                self.foreign += 1
            return
        if idx in self.received_ns:
            return
        self.received_ns[idx] = t
        try:
            mask = np.array(image_to_array(msg), dtype=np.uint8, copy=True)
            label = None
            key = self.prep.label_keys[idx] if self.prep.matcher is not None else None
            if key is not None and self.prep.matcher is not None:
                label = self.prep.matcher.load(key)
                check_label_shape(mask, label, idx)
            self.acc.add(idx, None, mask, label, None)
            slot = bisect.bisect_right(self._slots, idx) - 1
            if slot >= 0 and slot not in self._filled:
                self._filled.add(slot)
                self.sample_masks[idx] = mask
            if self.keep_masks:
                self.masks[idx] = encode_label(mask)
        except (SegRosError, ImageDecodeError, ValueError) as exc:
            # Raised out of the callback would be swallowed by nothing; keep it for the loop.
            self.error = exc


def _reader(stream: Any, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line.strip())
    lines.put(None)


def evaluate_live(cfg: EvalConfig, prep: Prepared, meta: ModelMeta,
                  progress: bool = True) -> tuple[Accumulator, dict[str, Any]]:
    """Play the bag into the node and score what comes back.

    Returns:
        (accumulator, extra report fields: rates, drops, node log, errors).

    Raises:
        SegRosError: the node does not start, dies, or never answers.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    if prep.frames >= INDEX_MODULUS:
        raise SegRosError(f'live mode plays at most {INDEX_MODULUS - 1} frames; use '
                          '--max-frames')
    compressed = prep.image_msgtype == COMPRESSED_TYPE
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    env = ros_environment()  # a random domain: the run never meets a robot's own graph
    # This process joins the same isolated graph; Fast DDS reads its profile from the
    # environment when the first participant is created.
    for key in ('RMW_IMPLEMENTATION', *FASTDDS_PROFILE_VARIABLES,
                'ROS_AUTOMATIC_DISCOVERY_RANGE'):
        os.environ.setdefault(key, env[key])
    domain = int(env['ROS_DOMAIN_ID'])
    acc = Accumulator(meta.num_classes, sample_indices(prep.frames, cfg.samples,
                                                       prep.label_keys))
    recorder = _Recorder(prep, acc, keep_masks=cfg.write_bag)
    node_log = out / 'node.log'
    publish_log = out / 'published.json'
    extra: dict[str, Any] = {
        'latency_what': 'live: player publish -> node -> mask received (end to end, '
                        'across processes, host monotonic clock)',
        'node_command': node_command(cfg, compressed), 'node_log': node_log.name}

    t_start = time.monotonic()
    timing: dict[str, float] = {}
    extra['wall_s'] = timing
    context = rclpy.context.Context()
    rclpy.init(context=context, domain_id=domain)
    node_proc: subprocess.Popen | None = None
    player: subprocess.Popen | None = None
    log_fh = node_log.open('w')
    try:
        rec_node = rclpy.create_node('seg_ros_eval_recorder', context=context)
        rec_node.create_subscription(Image, MASK_TOPIC, recorder,
                                     QoSProfile(depth=100,
                                                reliability=ReliabilityPolicy.RELIABLE))
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(rec_node)
        node_proc = subprocess.Popen(extra['node_command'], env=env, stdout=log_fh,
                                     stderr=subprocess.STDOUT)
        player_cmd = [sys.executable, '-m', 'seg_ros.bag.player', str(cfg.bag),
                      '--topic', cfg.image_topic, '--rate', str(cfg.rate),
                      '--out', str(publish_log), '--max-frames', str(prep.frames)]
        player = subprocess.Popen(player_cmd, env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_reader, args=(player.stdout, lines), daemon=True).start()

        def check_node() -> None:
            if node_proc is not None and node_proc.poll() is not None:
                raise SegRosError(f'the segmentation node exited with status '
                                  f'{node_proc.returncode}: {_tail(node_log)}')
            if recorder.error is not None:
                raise recorder.error

        # 1. warm-up: wait until the node is loaded and answers.
        deadline = time.monotonic() + cfg.node_timeout_s
        player_state = ''
        while recorder.warmup < WARMUP_MASKS:
            executor.spin_once(timeout_sec=0.05)
            check_node()
            while not lines.empty():
                line = lines.get()
                if line is None or line.startswith('ERROR'):
                    raise SegRosError(f'bag player failed: {line or "exited"}')
                player_state = line
            if time.monotonic() > deadline:
                what = ('the node never subscribed to ' + cfg.image_topic
                        if player_state != 'READY' else 'the node never published a mask')
                raise SegRosError(f'live mode: {what} within {cfg.node_timeout_s:.0f} s '
                                  f'(node log: {_tail(node_log)})')
        timing['start_and_warmup'] = time.monotonic() - t_start
        assert player.stdin is not None
        player.stdin.write('GO\n')
        player.stdin.flush()

        # 2. playback: record until the player is done, then drain late masks.
        bar = progress_bar(total=prep.frames, desc='eval-bag live', unit='frame',
                           enabled=progress)
        done = False
        while not done:
            executor.spin_once(timeout_sec=0.02)
            check_node()
            bar.update(len(recorder.received_ns) - bar.n)
            while not lines.empty():
                line = lines.get()
                if line is None:
                    raise SegRosError(f'the bag player exited with status {player.poll()} '
                                      'during playback')
                if line.startswith('DONE'):
                    done = True
        timing['playback'] = time.monotonic() - t_start - timing['start_and_warmup']
        published = json.loads(publish_log.read_text())
        frames = published.get('frames', [])
        expected = {f['index'] for f in frames}
        last_new, count = time.monotonic(), len(recorder.received_ns)
        # Keep spinning (receive times are taken in the callback, so this process must never
        # block while masks may arrive) until every frame is answered or none came for 3 s.
        while not expected.issubset(recorder.received_ns):
            executor.spin_once(timeout_sec=0.02)
            check_node()
            if len(recorder.received_ns) != count:
                last_new, count = time.monotonic(), len(recorder.received_ns)
            if time.monotonic() - last_new > 3.0:  # the rest was dropped
                break
        bar.update(len(recorder.received_ns) - bar.n)
        bar.close()
        timing['drain'] = time.monotonic() - t_start - sum(timing.values())
        if recorder.error is not None:
            raise recorder.error
    finally:
        if player is not None and player.stdin is not None and player.poll() is None:
            try:
                player.stdin.write('EXIT\n')
                player.stdin.close()
                player.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        _stop(player)
        _stop(node_proc)
        log_fh.close()
        try:
            rclpy.try_shutdown(context=context)
        except Exception:  # shutting down twice is harmless here
            pass

    timing['total'] = time.monotonic() - t_start
    pub_ns = {f['index']: f['publish_ns'] for f in frames}
    lat = [(recorder.received_ns[i] - pub_ns[i]) / 1e6 for i in sorted(pub_ns)
           if i in recorder.received_ns]
    acc.latencies_ms.extend(lat)
    acc.frames_read = len(frames)
    if published.get('error'):
        extra['error'] = published['error']
    n_pub = len(frames)
    recv_times = sorted(recorder.received_ns[i] for i in pub_ns if i in recorder.received_ns)
    pub_times = sorted(pub_ns.values())

    def rate(ts: list[int]) -> float | None:
        return (len(ts) - 1) / ((ts[-1] - ts[0]) / 1e9) if len(ts) > 1 and ts[-1] > ts[0] \
            else None

    extra['rate_hz'] = {'input': rate(pub_times), 'output': rate(recv_times)}
    extra['frames'] = {'published': n_pub, 'received': len(recv_times),
                       'dropped': n_pub - len(recv_times),
                       'drop_ratio': (n_pub - len(recv_times)) / n_pub if n_pub else None}
    extra['warmup_masks'] = recorder.warmup
    _post_pass(cfg, prep, meta, acc, recorder, extra)
    return acc, extra


def _post_pass(cfg: EvalConfig, prep: Prepared, meta: ModelMeta, acc: Accumulator,
               recorder: _Recorder, extra: dict[str, Any]) -> None:
    """Second read of the bag: images for the overlay strip, and the --write-bag output."""
    wanted = set(recorder.sample_masks)
    if not wanted and not cfg.write_bag:
        return
    out_bag = (OutputBag(cfg.out_dir / OUTPUT_BAG_NAME, prep.reader.output_storage,
                         [list(c) for c in meta.palette]) if cfg.write_bag else None)
    try:
        for index, t, raw, msgtype in image_messages(cfg, prep, out_bag):
            if out_bag is not None:
                out_bag.copy(cfg.image_topic, msgtype, t, raw)
            if index in wanted or (out_bag is not None and index in recorder.masks):
                frame = decode_frame(raw, msgtype, index, t, cfg.bag, decode=index in wanted)
                if index in wanted and frame.rgb is not None:
                    key = prep.label_keys[index] if prep.matcher is not None else None
                    label = prep.matcher.load(key) if key is not None and prep.matcher else None
                    acc.samples.append(Sample.make(index, frame.rgb,
                                                   recorder.sample_masks[index], label))
                if out_bag is not None and index in recorder.masks:
                    out_bag.add_prediction(decode_label(recorder.masks[index]), frame, t)
    except SegRosError as exc:
        extra.setdefault('error', str(exc))
    except BaseException:
        if out_bag is not None:
            out_bag.abort()
        raise
    if out_bag is not None:
        extra['output_bag'] = out_bag.close()
