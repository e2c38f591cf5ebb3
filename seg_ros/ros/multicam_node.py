"""``multi_camera_segmentation_node``: N cameras, one model in memory, one batched inference.

Run it with ``ros2 run seg_ros multi_camera_segmentation_node --ros-args -p model:=m.onnx
-p cameras:='[front, left, rear]'`` (or ``python -m seg_ros.ros.multicam_node``); the managed
variant is ``multi_camera_segmentation_lifecycle_node``. Camera ``NAME`` is read from
``/NAME/image_raw`` (``image_topics`` overrides, ``input_compressed`` as in the single node) and
its outputs go to ``~/NAME/{mask,color,overlay,confidence,camera_info}`` with that camera's
header unchanged.

Threading: each camera's subscription callback decodes its frame and fits it into the
network input at once (preprocessing on arrival overlaps the running inference), then puts
it in that camera's one-slot buffer of the :class:`~seg_ros.ros.multicam_batcher.Batcher`
(drop-oldest, latest frame only). The inference thread waits for the batch trigger (the
anchor camera's frame or a period) and runs one inference over every camera with a fresh
frame; the publishing thread colours, blends and publishes each camera's outputs of that
batch while the next one is already in inference (one batch ahead at most: a slow
subscriber delays the next inference, it never piles up batches). A bad frame is rejected
in its own camera's callback, so it never reaches a batch; a dead or slow camera is waited
for at most ``camera_timeout_s`` once, then reported. Parameters, publishers, the model
loading and the diagnostics are those of the single-camera node
(:class:`~seg_ros.ros.node.SegmentationPipeline`, which this extends).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
import functools
import queue
import sys
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from seg_ros.encodings import ImageDecodeError
from seg_ros.errors import SegRosError
from seg_ros.ros.diagnostics import PipelineStats, diagnostic_status
from seg_ros.ros.multicam_batcher import Batch, Batcher, BatchPolicy
from seg_ros.ros.multicam_params import (
    MULTI_PARAMS,
    MULTI_PARAMS_BY_NAME,
    MULTI_RUNTIME_PARAMS,
    SINGLE_PARAM_NAMES,
    Camera,
    anchor_index,
    validate_multi,
)
from seg_ros.ros.node import (
    OUTPUTS,
    CameraOutputs,
    SegmentationNode,
    SegmentationPipeline,
    _policy_name,
    input_qos,
    load_segmenter,
    run,
)

try:  # rclpy >= Iron; Humble only has rclpy.qos_event (deprecated later)
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # pragma: no cover - Humble
    from rclpy.qos_event import SubscriptionEventCallbacks  # type: ignore[no-redef]

NODE_NAME = 'multi_camera_segmentation_node'
BATCH_SIZES_KEPT = 200  # mean batch size over the last batches (diagnostics)
HANDOFF_WAIT_S = 0.5  # how often a thread waiting on the other one re-checks for a stop


@dataclass
class _Frame:
    """A camera frame decoded and preprocessed on arrival."""

    header: Any
    rgb: np.ndarray
    prepared: Any
    received: float


@dataclass
class _Inferred:
    """A batch out of inference, on its way to the publishing thread."""

    batch: Batch
    order: list[int]
    frames: list[_Frame]
    results: list[Any]
    wanted: dict[int, tuple[bool, bool, bool]]
    confidence: bool


class _CameraState:
    """Everything the node keeps per camera: statistics, outputs, subscriptions."""

    def __init__(self, camera: Camera) -> None:
        self.camera = camera
        self.stats = PipelineStats()
        self.outputs: CameraOutputs | None = None
        self.sub: Any = None
        self.info_sub: Any = None
        self.camera_info: CameraInfo | None = None
        self.published = dict.fromkeys(OUTPUTS, 0)
        self.reported = (0, 0)  # rejects, errors at the previous diagnostics message
        self.idle_warned = False


class MultiCameraPipeline(SegmentationPipeline):
    """Subscriptions -> per-camera slots -> batch trigger -> one inference -> per-camera outputs.

    The same lifecycle of parts as :class:`~seg_ros.ros.node.SegmentationPipeline`:
    :meth:`load`, :meth:`create_publishers`, :meth:`activate`, then :meth:`deactivate`,
    :meth:`destroy_publishers`, :meth:`unload`.
    """

    param_specs = MULTI_PARAMS
    params_by_name = MULTI_PARAMS_BY_NAME
    runtime_params = MULTI_RUNTIME_PARAMS

    def __init__(self, node: Node, lifecycle: bool = False) -> None:
        super().__init__(node, lifecycle)
        self.cams: list[_CameraState] = []
        self.batcher = Batcher(0)
        self.batch_stats = PipelineStats()
        self.batch_sizes: deque[int] = deque(maxlen=BATCH_SIZES_KEPT)
        self.batch_errors = 0
        self._batch_reported = 0
        self.publisher: threading.Thread | None = None
        self._handoff: queue.Queue[_Inferred] = queue.Queue(maxsize=1)

    # ---------------------------------------------------------------- lifecycle of the parts
    def load(self) -> None:
        """Read and validate the parameters, load the model for a batch of every camera."""
        values = self.read_parameters()
        cameras = validate_multi(values)
        single = {k: v for k, v in values.items() if k in SINGLE_PARAM_NAMES}
        self.seg = load_segmenter(single, self.log, batch=len(cameras))
        self.values = values
        try:
            self.settings = self._make_settings(values)
        except SegRosError:
            self.unload()
            raise
        self.cams = [_CameraState(c) for c in cameras]
        self.batcher = Batcher(len(cameras))
        self.batch_stats = PipelineStats()
        self.batch_sizes.clear()
        max_batch = int(getattr(self.seg.backend, 'max_batch', 1))
        if max_batch < len(cameras):
            self.log.warning(
                f'{self.values["model"]} takes batches of at most {max_batch}: the '
                f'{len(cameras)} cameras run in {-(-len(cameras) // max_batch)} inferences per '
                'batch (export with `seg-ros export --dynamic-batch` for one)')
        self.log.info(f'{len(cameras)} cameras: ' + ', '.join(
            f'{c.name} <- {c.input_topic(bool(values["input_compressed"]))}' for c in cameras))

    def create_publishers(self) -> None:
        """Per camera ``~/<name>/...``; one class names, label info and diagnostics."""
        for cam in self.cams:
            cam.outputs = CameraOutputs(self.node, self.lifecycle, f'~/{cam.camera.name}',
                                        self.values, self._on_subscriber_incompatible)
            self.pubs.update({f'{cam.camera.name}/{k}': v for k, v in cam.outputs.pubs.items()})
        self.create_shared_publishers()

    def destroy_publishers(self) -> None:
        """Undo :meth:`create_publishers`."""
        super().destroy_publishers()
        for cam in self.cams:
            cam.outputs = None

    def activate(self) -> None:
        """Subscribe to every camera and start the worker."""
        node, values = self.node, self.values
        qos = input_qos(values)
        compressed = bool(values['input_compressed'])
        msg_type = CompressedImage if compressed else Image
        for i, cam in enumerate(self.cams):
            events = SubscriptionEventCallbacks(
                incompatible_qos=functools.partial(self._on_camera_incompatible, i))
            cam.sub = node.create_subscription(
                msg_type, cam.camera.input_topic(compressed),
                functools.partial(self._on_camera_frame, i), qos, event_callbacks=events)
            if values['publish_camera_info']:
                cam.info_sub = node.create_subscription(
                    CameraInfo, cam.camera.info_topic,
                    functools.partial(self._on_camera_info_of, i), qos)
            cam.stats.reset_input_clock()
        self.batcher.reopen()
        self._stop.clear()
        self._wake.clear()
        self.batch_stats.reset_input_clock()
        self.active = True
        self._handoff = queue.Queue(maxsize=1)
        self.worker = threading.Thread(target=self._run, name='multicam_inference',
                                       daemon=True)
        self.publisher = threading.Thread(target=self._run_publisher, name='multicam_publish',
                                          daemon=True)
        self.worker.start()
        self.publisher.start()
        self._publish_class_names()
        self.log.info(f'segmenting {len(self.cams)} cameras -> '
                      f'{node.get_fully_qualified_name()}/<camera>/{{mask,color,overlay,'
                      f'confidence}} (trigger {values["batch_trigger"]}, input QoS '
                      f'{values["qos_reliability"]}, depth {values["qos_depth"]})')

    def deactivate(self) -> None:
        """Unsubscribe and stop both threads (the inference in flight finishes first; its
        outputs and a batch waiting to be published are dropped)."""
        self.active = False
        self._stop.set()
        self._wake.set()
        self.batcher.close()
        for attr in ('worker', 'publisher'):
            thread = getattr(self, attr)
            if thread is not None:
                thread.join(timeout=30.0)
                if thread.is_alive():
                    self.log.warning(f'the {thread.name} thread did not stop within 30 s')
                setattr(self, attr, None)
        for cam in self.cams:
            for sub in (cam.sub, cam.info_sub):
                if sub is not None:
                    self.node.destroy_subscription(sub)
            cam.sub = cam.info_sub = None

    # ---------------------------------------------------------------- callbacks
    def _on_camera_frame(self, index: int, msg: Any) -> None:
        # Executor thread: decode and fit into the network input now, so the batch only
        # stacks; a bad frame stays this camera's problem.
        if not self.active:
            return
        cam = self.cams[index]
        cam.stats.frame_received()
        settings, seg = self.settings, self.seg
        if settings is None or seg is None:
            return
        received = time.monotonic()
        try:
            rgb = self._decode(msg, settings.max_input_pixels)
            prepared = seg.prepare_frame(rgb, color_order='rgb')
        except (ImageDecodeError, SegRosError) as exc:
            cam.stats.frame_rejected(str(exc))
            self._error(f'camera {cam.camera.name}: rejected frame (frame_id '
                        f'{msg.header.frame_id!r}): {exc}')
            return
        except Exception as exc:  # noqa: BLE001 - one camera's frame never kills the node
            reason = f'{type(exc).__name__}: {exc}'
            cam.stats.frame_rejected(reason)
            self._error(f'camera {cam.camera.name}: rejected frame: {reason}')
            return
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self.batcher.put(index, _Frame(msg.header, rgb, prepared, received), stamp)

    def _on_camera_info_of(self, index: int, msg: CameraInfo) -> None:
        self.cams[index].camera_info = msg

    def _on_camera_incompatible(self, index: int, info: Any) -> None:
        sub = self.cams[index].sub
        q = self.values
        self.log.warning(
            f'a publisher on {sub.topic_name if sub else "the input"} offers a QoS '
            f'incompatible with this subscription ({_policy_name(info.last_policy_kind)}; '
            f'{info.total_count} so far): no data will arrive from it. This node requests '
            f'reliability={q["qos_reliability"]}, durability={q["qos_durability"]}; set '
            f'qos_reliability:=best_effort to accept any publisher.')

    # ---------------------------------------------------------------- worker
    def policy(self) -> BatchPolicy:
        """The batching parameters as they are now (run-time changes apply per batch)."""
        v = self.values
        return BatchPolicy(trigger=str(v['batch_trigger']),
                           anchor=anchor_index(v, [c.camera for c in self.cams]),
                           period_s=float(v['batch_period_s']),
                           anchor_timeout_s=float(v['anchor_timeout_s']),
                           timeout_s=float(v['camera_timeout_s']),
                           max_spread_s=float(v['max_stamp_spread_s']))

    def _run(self) -> None:
        """Inference thread: trigger -> one inference -> hand the batch to the publisher."""
        last_start: float | None = None
        while not self._stop.is_set():
            try:
                if self._rate_limited(last_start):
                    continue
                batch = self.batcher.next_batch(self.policy(), wait_s=0.5)
                if batch is None or not batch.frames:
                    continue
                last_start = time.monotonic()
                inferred = self._infer_batch(batch)
                if inferred is not None:
                    self._hand_over(inferred)
            except Exception as exc:  # noqa: BLE001 - the node must survive any one batch
                if not self.node.context.ok() or self._stop.is_set():
                    break
                self._batch_failed(exc)

    def _run_publisher(self) -> None:
        """Publishing thread: each camera's outputs of a batch, while the next one infers."""
        while not self._stop.is_set():
            try:
                inferred = self._handoff.get(timeout=HANDOFF_WAIT_S)
            except queue.Empty:
                continue
            if not self.active:
                continue  # deactivated while this batch waited: dropped, like one in inference
            try:
                self._publish_batch(inferred)
            except Exception as exc:  # noqa: BLE001 - the node must survive any one batch
                if not self.node.context.ok() or self._stop.is_set():
                    break
                self._batch_failed(exc)

    def _hand_over(self, inferred: _Inferred) -> None:
        # Waits while the publisher still has the previous batch: inference runs one batch
        # ahead at most, so frames are never older than two batches.
        while not self._stop.is_set():
            try:
                self._handoff.put(inferred, timeout=HANDOFF_WAIT_S)
                return
            except queue.Full:
                continue

    def _batch_failed(self, exc: Exception) -> None:
        reason = f'{type(exc).__name__}: {exc}'
        self.batch_errors += 1
        self.batch_stats.inference_failed(reason)
        self._error(f'processing a batch failed: {reason}')

    def _infer_batch(self, batch: Batch) -> _Inferred | None:
        settings, seg = self.settings, self.seg
        if settings is None or seg is None:
            return None
        self.batch_stats.frame_received()
        order = sorted(batch.frames)
        frames: list[_Frame] = [batch.frames[i].item for i in order]
        wanted = {}
        for i in order:
            outputs = self.cams[i].outputs
            assert outputs is not None
            wanted[i] = outputs.wanted(settings)
        has_confidence = bool(getattr(seg.backend, 'has_confidence', True))
        want_conf = has_confidence and any(w[0] for w in wanted.values())
        try:
            results = seg.segment_prepared([f.prepared for f in frames], confidence=want_conf)
        except Exception as exc:  # noqa: BLE001 - every camera in the batch is told why
            reason = f'{type(exc).__name__}: {exc}'
            for i in order:
                self.cams[i].stats.inference_failed(reason)
            raise
        if not self.active:
            return None  # deactivated while this batch was in inference
        return _Inferred(batch, order, frames, results, wanted, want_conf)

    def _publish_batch(self, inferred: _Inferred) -> None:
        settings = self.settings
        if settings is None:
            return
        network = self.network_output_size()
        now_ns = self.node.get_clock().now().nanoseconds
        latencies = []
        results = inferred.results
        inference_ms = sum(r.timings.get('inference_ms', 0.0) for r in results)
        for i, frame, result in zip(inferred.order, inferred.frames, results):
            cam = self.cams[i]
            conf_i, color_i, overlay_i = inferred.wanted[i]
            try:
                assert cam.outputs is not None
                cam.outputs.publish(settings, frame.header, frame.rgb, result.ids,
                                    result.confidence if conf_i and inferred.confidence
                                    else None,
                                    color_i, overlay_i, network, cam.camera_info,
                                    cam.published, self._error)
            except Exception as exc:  # noqa: BLE001 - the other cameras still get theirs
                reason = f'{type(exc).__name__}: {exc}'
                cam.stats.inference_failed(reason)
                self._error(f'camera {cam.camera.name}: publishing failed: {reason}')
                continue
            stamp = frame.header.stamp.sec * 1_000_000_000 + frame.header.stamp.nanosec
            latency = (now_ns - stamp) / 1e6 if stamp > 0 else None
            if latency is not None:
                latencies.append(latency)
            cam.stats.frame_published(latency, (time.monotonic() - frame.received) * 1e3,
                                      inference_ms)
        self.batch_sizes.append(len(inferred.order))
        self.batch_stats.frame_published(max(latencies) if latencies else None,
                                         (time.monotonic() - inferred.batch.triggered_at) * 1e3,
                                         inference_ms)

    # ---------------------------------------------------------------- diagnostics
    def frames_dropped(self) -> int:
        """Frames replaced in their camera's slot before a batch took them (all cameras)."""
        return sum(self.batcher.dropped)

    def _camera_state(self, index: int, idle: bool) -> str:
        if idle:
            return 'stopped'
        if self.batcher.received[index] == 0:
            return 'no frame yet'
        return 'late' if self.batcher.late_now[index] else 'live'

    def _publish_diagnostics(self) -> None:
        seg = self.seg
        hardware = (f'{seg.backend_name if seg is not None else "none"}/'
                    f'{self.values.get("device", "")}')
        fqn = self.node.get_fully_qualified_name()
        warn_s = float(self.values.get('no_input_warn_s', 0.0)) if self.active else 0.0
        compressed = bool(self.values.get('input_compressed', False))
        statuses = []
        stopped = []
        for i, cam in enumerate(self.cams):
            snap = cam.stats.snapshot(self.batcher.dropped[i])
            rejects, errors = cam.reported
            cam.reported = (snap.frames_rejected, snap.inference_errors)
            topic = cam.sub.topic_name if cam.sub is not None else cam.camera.input_topic(
                compressed)
            idle = (warn_s > 0 and snap.seconds_since_input is not None
                    and snap.seconds_since_input > warn_s)
            state = self._camera_state(i, idle) if self.active else 'inactive'
            if state == 'stopped':
                stopped.append(cam.camera.name)
            info = {'camera': cam.camera.name, 'state': state, 'input topic': topic,
                    'late frames': str(self.batcher.late[i]),
                    'skipped frames': str(self.batcher.skipped[i]),
                    **{f'published {k}': str(v) for k, v in cam.published.items()}}
            status = diagnostic_status(snap, f'{fqn}: camera {cam.camera.name}', hardware,
                                       info, warn_s, topic, snap.frames_rejected - rejects,
                                       snap.inference_errors - errors)
            if status.level == DiagnosticStatus.OK and state == 'late':
                status.level = DiagnosticStatus.WARN
                status.message = (f'late: missed the last batch ({self.batcher.late[i]} late '
                                  f'frames)')
            statuses.append(status)
            if idle and not cam.idle_warned:
                self.log.warning(f'camera {cam.camera.name}: no frames on {topic} for '
                                 f'{snap.seconds_since_input:.0f} s; the other cameras carry '
                                 'on (logged once until frames arrive again)')
            cam.idle_warned = idle
        statuses.append(self._batch_status(fqn, hardware, stopped))
        msg = DiagnosticArray(status=statuses)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.pubs['diagnostics'].publish(msg)

    def _batch_status(self, fqn: str, hardware: str, stopped: list[str]) -> Any:
        """One status for the batching: rate, latency, batch size, drops, late and skipped."""
        snap = self.batch_stats.snapshot(self.frames_dropped())
        new_errors = snap.inference_errors - self._batch_reported
        self._batch_reported = snap.inference_errors
        seg = self.seg
        fmt = (lambda v: 'n/a' if v is None else f'{v:.2f}')  # noqa: E731
        sizes = list(self.batch_sizes)
        status = DiagnosticStatus(name=f'{fqn}: batch', hardware_id=hardware)
        if new_errors:
            status.level = DiagnosticStatus.ERROR
            status.message = f'{new_errors} batch errors: {snap.last_reject_reason}'
        elif stopped and self.active:
            status.level = DiagnosticStatus.WARN
            status.message = (f'{len(stopped)} of {len(self.cams)} cameras stopped '
                              f'({", ".join(stopped)}); {snap.output_rate_hz:.1f} batches/s')
        else:
            status.level = DiagnosticStatus.OK
            status.message = (f'{snap.output_rate_hz:.1f} batches/s, latency p99 '
                              f'{fmt(snap.latency_p99_ms)} ms')
        values = {
            'state': 'active' if self.active else 'inactive',
            'cameras': ', '.join(c.camera.name for c in self.cams),
            'trigger': str(self.values.get('batch_trigger', '')),
            'batch rate (Hz)': fmt(snap.output_rate_hz),
            'mean batch size': fmt(float(np.mean(sizes)) if sizes else None),
            'latency p50 (ms)': fmt(snap.latency_p50_ms),
            'latency p99 (ms)': fmt(snap.latency_p99_ms),
            'batch processing p50 (ms)': fmt(snap.processing_p50_ms),
            'batch inference p50 (ms)': fmt(snap.inference_p50_ms),
            'batch inference p99 (ms)': fmt(snap.inference_p99_ms),
            'batches': str(self.batcher.batches),
            'partial batches': str(self.batcher.partial_batches),
            'frames dropped': str(sum(self.batcher.dropped)),
            'late frames': str(sum(self.batcher.late)),
            'skipped frames': str(sum(self.batcher.skipped)),
            'batch errors': str(snap.inference_errors),
            'last error': snap.last_reject_reason or 'none',
            'stopped cameras': ', '.join(stopped) or 'none',
            'backend': seg.backend_name if seg is not None else 'none',
            'model': seg.meta.model if seg is not None else 'none',
            'model file': str(self.values.get('model', '')),
            'precision': (f'{seg.precision} ({seg.precision_reason})' if seg is not None
                          else str(self.values.get('precision', ''))),
            'network input': ('x'.join(str(v) for v in reversed(seg.input_size))
                              if seg is not None else 'n/a'),
            'model max batch': (str(getattr(seg.backend, 'max_batch', 1)) if seg is not None
                                and seg.backend is not None else 'n/a'),
            'inference streams': (str(getattr(seg.backend, 'streams', 1)) if seg is not None
                                  and seg.backend is not None else 'n/a'),
        }
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        return status


class MultiCameraSegmentationNode(SegmentationNode):
    """The multi-camera node: the single node's start-up and shutdown, with the multi-camera
    pipeline.

    Raises:
        SegRosError: from the constructor, for invalid parameters or a model that cannot be
            loaded (``main`` turns it into one log line and exit status 1).
    """

    pipeline_class = MultiCameraPipeline
    default_name = NODE_NAME


def main(args: list[str] | None = None) -> int:
    """Entry point of ``multi_camera_segmentation_node``."""
    return run(MultiCameraSegmentationNode, args)


if __name__ == '__main__':
    sys.exit(main())
