"""Bag player for live evaluation: publishes a bag's image topic like a camera driver would.

Run by ``seg-ros eval-bag --live`` in its own process (so publishing never shares a Python
interpreter, GIL or executor with the recorder)::

    python -m seg_ros.bag.player BAG --topic /camera/image_raw --publish-topic T --rate 1.0 \
        --out published.json

Protocol on stdin/stdout (one line each):

* the player prints ``READY`` once its publisher sees a subscriber (the node);
* it then publishes the first frame every 0.25 s as a warm-up (stamps below 10 s, which the
  recorder ignores) until it reads ``GO``: the node is loaded and warm when its masks come back;
* it plays the bag at its recorded timing divided by ``--rate``, writes the publish log, prints
  ``DONE <n>`` and keeps its publisher until it reads ``EXIT`` (or stdin closes).

Every frame is restamped: the header stamp becomes the wall clock at publish time (so the
node's own latency diagnostics are meaningful) rounded down to the millisecond, with the frame
index in the sub-millisecond digits, ``stamp_ns = ms * 1e6 + index % 1e6``, so a mask coming
back is matched to its frame without any side channel. ``--out`` receives, per frame, the index,
the sent stamp, the original stamp and the publish time on the host's monotonic clock.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import queue
import sys
import threading
import time
from typing import Any

from seg_ros.bag.io import COMPRESSED_TYPE, BagReader, BagReadError, typestore

WARMUP_MAX_NS = 10 * 1_000_000_000
INDEX_MODULUS = 1_000_000


def live_stamp(wall_ns: int, index: int) -> int:
    """Wall clock (ms resolution) with the frame index in the sub-millisecond digits."""
    return (wall_ns // 1_000_000) * 1_000_000 + index % INDEX_MODULUS


def index_from_stamp(stamp_ns: int, frames: int) -> int | None:
    """Frame index encoded by :func:`live_stamp`; None for warm-up or foreign stamps.

    Live runs are limited to ``INDEX_MODULUS`` frames (9 hours at 30 Hz), so the index is
    unambiguous.
    """
    if stamp_ns < WARMUP_MAX_NS:
        return None
    idx = stamp_ns % INDEX_MODULUS
    return idx if idx < frames else None


def _to_rclpy(msg: Any, msgtype: str) -> Any:
    """rosbags message -> rclpy message (data assigned as bytes: the fast path)."""
    if msgtype == COMPRESSED_TYPE:
        from sensor_msgs.msg import CompressedImage

        out = CompressedImage()
        out.format = str(msg.format)
    else:
        from sensor_msgs.msg import Image

        out = Image()
        out.height, out.width = int(msg.height), int(msg.width)
        out.encoding, out.step = str(msg.encoding), int(msg.step)
        out.is_bigendian = int(msg.is_bigendian)
    out.header.frame_id = str(msg.header.frame_id)
    out.data = bytes(msg.data)
    return out


def _reader_thread(bag: Path, topic: str, max_frames: int | None, q: queue.Queue) -> None:
    """Deserialise ahead of the publisher (bounded queue: memory stays flat on long bags)."""
    try:
        with BagReader(bag) as reader:
            for i, (_, t, raw, msgtype) in enumerate(reader.raw_messages([topic])):
                if max_frames is not None and i >= max_frames:
                    break
                msg = typestore().deserialize_cdr(raw, msgtype)
                orig = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
                q.put((i, t, orig, _to_rclpy(msg, msgtype)))
    except BagReadError as exc:
        q.put(('error', str(exc)))
    except Exception as exc:  # a corrupt message: report it, the main side decides
        q.put(('error', f'{type(exc).__name__}: {exc}'))
    q.put(None)


def main(argv: list[str] | None = None) -> int:
    """Entry point (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('bag', type=Path)
    ap.add_argument('--topic', required=True, help='image topic in the bag')
    ap.add_argument('--publish-topic', help='topic to publish on (default: --topic)')
    ap.add_argument('--rate', type=float, default=1.0, help='playback speed factor')
    ap.add_argument('--out', type=Path, required=True, help='publish log (JSON)')
    ap.add_argument('--max-frames', type=int)
    ap.add_argument('--warmup-period', type=float, default=0.25)
    args = ap.parse_args(argv)

    import rclpy
    from rclpy.qos import qos_profile_sensor_data

    with BagReader(args.bag) as reader:
        msgtype = reader.require_topic(args.topic).msgtype
    if msgtype == COMPRESSED_TYPE:
        from sensor_msgs.msg import CompressedImage as MsgClass
    else:
        from sensor_msgs.msg import Image as MsgClass

    q: queue.Queue = queue.Queue(maxsize=32)
    threading.Thread(target=_reader_thread, args=(args.bag, args.topic, args.max_frames, q),
                     daemon=True).start()
    go, leave = threading.Event(), threading.Event()

    def read_commands() -> None:
        for line in sys.stdin:
            if line.strip() == 'GO':
                go.set()
            elif line.strip() == 'EXIT':
                break
        # EXIT or stdin closed (the parent is gone): stop waiting in any phase
        go.set()
        leave.set()

    rclpy.init()
    node = rclpy.create_node('seg_ros_bag_player')
    # Camera drivers publish best effort (sensor data QoS); so does the player.
    pub = node.create_publisher(MsgClass, args.publish_topic or args.topic,
                                qos_profile_sensor_data)
    log: list[dict[str, int]] = []
    error = ''
    try:
        while pub.get_subscription_count() == 0:
            time.sleep(0.05)
        print('READY', flush=True)
        threading.Thread(target=read_commands, daemon=True).start()
        first = q.get()
        if first is None or first[0] == 'error':
            error = 'no frame to play' if first is None else first[1]
            print(f'ERROR {error}', flush=True)
            return 1
        warm = first[3]
        k = 0
        while not go.is_set():
            k += 1
            warm.header.stamp.sec, warm.header.stamp.nanosec = 1, k
            pub.publish(warm)
            go.wait(args.warmup_period)
        item: Any = first
        t_start = time.monotonic_ns()
        log0 = first[1]
        while item is not None:
            if item[0] == 'error':
                error = item[1]
                break
            i, t, orig, msg = item
            target = t_start + int((t - log0) / args.rate)
            delay = (target - time.monotonic_ns()) / 1e9
            if delay > 0:
                time.sleep(delay)
            stamp = live_stamp(time.time_ns(), i)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            t_pub = time.monotonic_ns()
            pub.publish(msg)
            log.append({'index': i, 'stamp': stamp, 'orig_stamp': orig, 'publish_ns': t_pub})
            item = q.get()
        args.out.write_text(json.dumps({'frames': log, 'error': error}))
        print(f'DONE {len(log)}', flush=True)
        # Keep the publisher alive until the parent has drained the last answers: destroying
        # it right after a best-effort publish can lose that sample in flight.
        leave.wait(60.0)
    finally:
        if not args.out.exists():
            args.out.write_text(json.dumps({'frames': log, 'error': error or 'interrupted'}))
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
