"""``segmentation_node``: semantic segmentation of a camera topic.

Run it with ``ros2 run seg_ros segmentation_node --ros-args -p model:=model.onnx
-r image:=/camera/image_raw`` or ``python -m seg_ros.ros.node --ros-args ...``.

Threading: the subscription callback only stores the newest frame in a one-slot buffer
(:class:`~seg_ros.ros.node_utils.FrameSlot`; an unprocessed older frame is dropped and
counted), and one worker thread decodes, runs the :class:`~seg_ros.runtime.segmenter.Segmenter` and
publishes. Latency therefore never grows because of a queue: under overload the node
processes the newest frame and drops the rest. The executor thread stays free for
parameters, services, QoS events and diagnostics.

The pipeline (:class:`SegmentationPipeline`) is shared with the lifecycle variant
(``seg_ros.ros.lifecycle_node``); this module's :class:`SegmentationNode` loads and starts it in
the constructor.
"""
from __future__ import annotations

from dataclasses import dataclass
import gc
import logging
import os
import sys
import threading
import time
from typing import Any

import cv2
from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String

from seg_ros.encodings import (
    ImageDecodeError,
    array_to_image_fields,
    compressed_to_rgb,
    image_to_rgb,
)
from seg_ros.errors import SegRosError
from seg_ros.metadata import load_palette
from seg_ros.ros.diagnostics import PipelineStats, diagnostic_status
from seg_ros.ros.node_params import (
    PALETTE_FROM_MODEL,
    PARAMS,
    PARAMS_BY_NAME,
    RUNTIME_PARAMS,
    ParamSpec,
    validate_all,
    validate_value,
)
from seg_ros.ros.node_utils import (
    ErrorThrottle,
    FrameSlot,
    class_names_json,
    resolve_model_path,
    scale_camera_info_fields,
)

try:  # rclpy >= Iron; Humble only has rclpy.qos_event (deprecated later)
    from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
except ImportError:  # pragma: no cover - Humble
    from rclpy.qos_event import (  # type: ignore[no-redef]
        PublisherEventCallbacks,
        SubscriptionEventCallbacks,
    )

try:  # optional: vision_msgs/LabelInfo is published when vision_msgs is installed
    from vision_msgs.msg import LabelInfo, VisionClass
except ImportError:
    LabelInfo = None
    VisionClass = None

NODE_NAME = 'segmentation_node'
THROTTLE_S = 5.0  # one log line per kind of bad frame every few seconds, never a flood
# The rate limiter re-reads max_rate_hz at least this often, so no setting (1e-6 Hz means a
# 12-day period) can park the worker beyond what the current value asks for.
RATE_WAIT_SLICE_S = 0.5

_TYPE = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
         float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
         tuple: ParameterType.PARAMETER_STRING_ARRAY}
OUTPUTS = ('mask', 'color', 'overlay', 'confidence')
_RELIABILITY = {'best_effort': ReliabilityPolicy.BEST_EFFORT,
                'reliable': ReliabilityPolicy.RELIABLE,
                'system_default': ReliabilityPolicy.SYSTEM_DEFAULT}
_DURABILITY = {'volatile': DurabilityPolicy.VOLATILE,
               'transient_local': DurabilityPolicy.TRANSIENT_LOCAL,
               'system_default': DurabilityPolicy.SYSTEM_DEFAULT}
_HISTORY = {'keep_last': HistoryPolicy.KEEP_LAST, 'keep_all': HistoryPolicy.KEEP_ALL,
            'system_default': HistoryPolicy.SYSTEM_DEFAULT}


def declare_parameters(node: Node, read_only_load_time: bool,
                       specs: tuple[ParamSpec, ...] = PARAMS) -> None:
    """Declare every parameter of ``specs`` on ``node``.

    Args:
        node: the node.
        read_only_load_time: mark the parameters that are read only at start-up read-only
            (plain node), so ``ros2 param set`` says so instead of silently doing nothing.
        specs: the parameter table (default :data:`seg_ros.ros.node_params.PARAMS`).
    """
    for spec in specs:
        desc = ParameterDescriptor(
            name=spec.name, type=_TYPE[type(spec.default)], description=spec.description,
            additional_constraints=spec.constraint_text(),
            read_only=read_only_load_time and not spec.runtime)
        if spec.int_range is not None:
            desc.integer_range = [IntegerRange(from_value=spec.int_range[0],
                                               to_value=spec.int_range[1], step=1)]
        if spec.float_range is not None:
            desc.floating_point_range = [FloatingPointRange(
                from_value=spec.float_range[0], to_value=spec.float_range[1], step=0.0)]
        default: Any = spec.default
        if isinstance(default, tuple):
            # rclpy types an empty list as a byte array: declare the type, value unset
            default = list(default) if default else Parameter.Type.STRING_ARRAY
        node.declare_parameter(spec.name, default, desc)


def input_qos(values: dict[str, Any]) -> QoSProfile:
    """Input subscription QoS from the ``qos_*`` parameters (sensor data by default)."""
    return QoSProfile(depth=int(values['qos_depth']),
                      history=_HISTORY[values['qos_history']],
                      reliability=_RELIABILITY[values['qos_reliability']],
                      durability=_DURABILITY[values['qos_durability']])


def _policy_name(kind: Any) -> str:
    try:
        from rclpy.qos import qos_policy_name_from_kind

        return str(qos_policy_name_from_kind(kind))
    except Exception:  # older rclpy or an unknown kind: the number still helps
        return str(kind)


@dataclass(frozen=True)
class RuntimeSettings:
    """The parameters that may change while frames flow (swapped atomically)."""

    overlay_alpha: float
    publish_color: bool
    publish_overlay: bool
    publish_confidence: bool
    max_rate_hz: float
    max_input_pixels: int
    palette: str
    lut: np.ndarray
    class_names: tuple[str, ...]
    colours: tuple[tuple[int, int, int], ...]


class _RosLogHandler(logging.Handler):
    """Forwards the runtime's Python ``logging`` (engine builds, cache hits) to the node log."""

    def __init__(self, logger: Any) -> None:
        super().__init__(logging.INFO)
        self.ros_logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno >= logging.ERROR:
                self.ros_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self.ros_logger.warning(text)
            else:
                self.ros_logger.info(text)
        except Exception:  # noqa: BLE001 - logging must never break the node
            self.handleError(record)


def forward_runtime_logs(logger: Any) -> None:
    """Route ``seg_ros.*`` Python log records (INFO and up) to ``logger`` (once per process)."""
    root = logging.getLogger('seg_ros')
    if not any(isinstance(h, _RosLogHandler) for h in root.handlers):
        root.addHandler(_RosLogHandler(logger))
        root.setLevel(logging.INFO)
        root.propagate = False


def load_segmenter(values: dict[str, Any], logger: Any, batch: int = 1) -> Any:
    """Create the :class:`Segmenter` described by the parameters and warm it up.

    Args:
        values: the parameters of :data:`~seg_ros.ros.node_params.PARAMS`.
        logger: the node's logger.
        batch: frames per inference (the multi-camera node's camera count): a TensorRT
            engine gets a profile tuned for it, torch accepts it, and the warm-up runs it.

    Raises:
        SegRosError: invalid parameters, a missing model file, an unusable backend or engine.
    """
    validate_all(values)
    model = resolve_model_path(values['model'])  # before the heavy imports: fail fast
    weights = resolve_model_path(values['weights']) if values['weights'] else None
    forward_runtime_logs(logger)
    from seg_ros.runtime.segmenter import Segmenter

    size = ((int(values['input_height']), int(values['input_width']))
            if values['input_width'] else None)
    kwargs: dict[str, Any] = dict(
        backend=values['backend'], device=values['device'], precision=values['precision'],
        input_size=size, resize_mode=values['resize_mode'], weights=weights,
        engine_cache_dir=values['engine_cache_dir'] or None,
        threads=int(values['threads']) or None)
    kwargs.update(_engine_build_option(values, model, logger))
    kwargs.update(_batch_options(values, model, batch))
    logger.info(f'loading {model} (backend {values["backend"]}, device {values["device"]}, '
                f'precision {values["precision"]})')
    t0 = time.monotonic()
    seg = None
    try:
        seg = Segmenter.from_file(model, **kwargs)
        # The first inference allocates buffers and picks kernels: now, not on frame 1.
        h, w = (int(v) for v in seg.input_size)
        has_confidence = bool(getattr(seg.backend, 'has_confidence', True))
        seg(np.zeros((h, w, 3), np.uint8), color_order='rgb', confidence=has_confidence)
        if batch > 1:  # ONNX Runtime / OpenVINO plan each new batch shape on first use
            seg.segment_batch([np.zeros((h, w, 3), np.uint8)] * batch, color_order='rgb',
                              confidence=has_confidence)
    except Exception as exc:  # noqa: BLE001
        if seg is not None:
            seg.close()
        if isinstance(exc, SegRosError):
            raise
        # Backends raise their own types (onnxruntime's InvalidProtobuf for a damaged file,
        # torch's unpickling errors ...): at start-up the user gets one clear line.
        raise SegRosError(f'cannot load model {model!r} with backend {values["backend"]}: '
                          f'{type(exc).__name__}: {exc}') from exc
    if not has_confidence and values['publish_confidence']:
        logger.warning(f'{model} has no confidence output: ~/confidence stays silent '
                       '(re-export without --no-confidence to get it)')
    logger.info(f'model {seg.meta.model} ({seg.meta.num_classes} classes) on '
                f'{seg.backend_name} {seg.precision} ({seg.precision_reason}), input {h}x{w} '
                f'(HxW) {values["resize_mode"]}, ready in '
                f'{time.monotonic() - t0:.1f} s')
    return seg


def _batch_options(values: dict[str, Any], model: str, batch: int) -> dict[str, Any]:
    """Backend options that let one inference take ``batch`` frames.

    TensorRT: an optimisation profile 1..batch with opt = batch (the batch a multi-camera
    node runs whenever every camera delivers; :func:`~seg_ros.runtime.engine_cache.
    profile_shapes`), which needs a dynamic-batch ONNX (``seg-ros export --dynamic-batch``; a
    checkpoint is exported that way). torch: its largest accepted batch. ONNX Runtime: no
    memory patterns (one planned block per batch size seen, each kept for good; see
    :func:`~seg_ros.runtime.backends.ort_session_options`). OpenVINO on the CPU: one stream
    per thread, up to ``batch`` (``threads`` 0: one per CPU), so the parts of a batch run at
    the same time instead of every layer being split over the threads
    (:class:`~seg_ros.runtime.openvino_backend.OpenVinoBackend`'s ``streams``).
    """
    if batch <= 1:
        return {}
    from seg_ros.runtime.backends import cuda_available, resolve_backend
    from seg_ros.runtime.segmenter import model_kind

    device = values['device']
    if device == 'auto':
        device = 'cuda' if cuda_available() else 'cpu'
    try:
        name = resolve_backend(values['backend'], model_kind(model), device)
    except Exception:  # noqa: BLE001 - Segmenter.from_file reports the real problem
        return {}
    if name == 'tensorrt':
        if model_kind(model) == 'onnx':
            try:
                from seg_ros.runtime.engine_cache import onnx_input_shape

                static_batch, _shape = onnx_input_shape(model)
            except Exception:  # noqa: BLE001 - the TensorRT loader reports a bad file
                return {}
            if static_batch is not None:
                return {}  # a fixed-batch file: the engine keeps its batch (frames in turn)
        return {'max_batch': batch, 'opt_batch': batch}
    if name == 'torch':
        return {'max_batch': max(batch, 8)}
    if name == 'onnxruntime':
        return {'memory_pattern': False}
    if name == 'openvino' and values['device'] in ('auto', 'cpu'):  # not an Intel GPU
        # (a fixed-batch file runs one stream: the backend cannot split its batch of 1)
        threads = int(values.get('threads') or 0) or os.cpu_count() or 1
        return {'streams': min(batch, threads)} if threads > 1 else {}
    return {}


def _engine_build_option(values: dict[str, Any], model: str, logger: Any) -> dict[str, Any]:
    """``build_engine_on_start`` as the TensorRT loader's keyword, where it has one.

    Only TensorRT builds engines: the option is passed on only when the backend resolves to
    TensorRT and its loader declares a build switch, so other backends never see an unknown
    keyword. Without such a switch, ``false`` cannot be honoured and a warning says so.
    """
    if values['backend'] not in ('auto', 'tensorrt'):
        return {}  # and no torch import just to probe for CUDA
    import inspect

    from seg_ros.runtime.backends import cuda_available, resolve_backend
    from seg_ros.runtime.segmenter import model_kind

    device = values['device']
    if device == 'auto':
        device = 'cuda' if cuda_available() else 'cpu'
    try:
        if resolve_backend(values['backend'], model_kind(model), device) != 'tensorrt':
            return {}
        from seg_ros.runtime import trt_backend

        params = inspect.signature(trt_backend.TrtBackend.from_onnx).parameters
    except Exception:  # noqa: BLE001 - Segmenter.from_file reports the real problem
        return {}
    flag = bool(values['build_engine_on_start'])
    for name in ('build', 'allow_build', 'build_engine'):
        if name in params:
            return {name: flag}
    if not flag:
        logger.warning('build_engine_on_start:=false is not supported by this TensorRT '
                       'backend: a missing or stale engine will be built')
    return {}


class CameraOutputs:
    """The per-camera outputs (``mask``, ``color``, ``overlay``, ``confidence`` and, with
    ``publish_camera_info``, ``camera_info``) under one prefix, and how a result goes out.

    The single-camera node has one under ``~``, the multi-camera node one per camera under
    ``~/<camera>``; both publish through :meth:`publish`, so headers, lazy outputs,
    ``output_size`` and camera_info rescaling behave the same.

    Args:
        node: the node (plain or lifecycle).
        lifecycle: create lifecycle publishers.
        prefix: topic prefix (``~`` or ``~/front``).
        values: the node's parameters (``qos_output_depth``, ``publish_camera_info``).
        on_incompatible: publisher QoS-event callback.
    """

    def __init__(self, node: Node, lifecycle: bool, prefix: str, values: dict[str, Any],
                 on_incompatible: Any) -> None:
        self.node = node
        self.lifecycle = lifecycle
        make = node.create_lifecycle_publisher if lifecycle else node.create_publisher
        qos = QoSProfile(depth=int(values['qos_output_depth']),
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        events = PublisherEventCallbacks(incompatible_qos=on_incompatible)
        self.pubs: dict[str, Any] = {}
        for name in OUTPUTS:
            self.pubs[name] = make(Image, f'{prefix}/{name}', qos, event_callbacks=events)
        if values['publish_camera_info']:
            self.pubs['camera_info'] = make(CameraInfo, f'{prefix}/camera_info', qos)

    def destroy(self) -> None:
        """Destroy the publishers."""
        for pub in self.pubs.values():
            if self.lifecycle:
                self.node.destroy_lifecycle_publisher(pub)
            else:
                self.node.destroy_publisher(pub)
        self.pubs = {}

    def wanted(self, settings: RuntimeSettings) -> tuple[bool, bool, bool]:
        """(confidence, color, overlay): enabled and subscribed (computed only then)."""
        pubs = self.pubs
        return (settings.publish_confidence and pubs['confidence'].get_subscription_count() > 0,
                settings.publish_color and pubs['color'].get_subscription_count() > 0,
                settings.publish_overlay and pubs['overlay'].get_subscription_count() > 0)

    def publish(self, settings: RuntimeSettings, header: Any, rgb: np.ndarray, ids: np.ndarray,
                conf: np.ndarray | None, want_color: bool, want_overlay: bool,
                network_size: tuple[int, int] | None, camera_info: CameraInfo | None,
                published: dict[str, int], on_error: Any) -> tuple[int, int]:
        """Publish one frame's outputs with ``header`` unchanged.

        Args:
            settings: the run-time settings.
            header: the camera frame's header.
            rgb: the decoded frame (for ``~/overlay``).
            ids: class ids at the frame's resolution.
            conf: confidence at the frame's resolution, or None.
            want_color: publish ``color``.
            want_overlay: publish ``overlay``.
            network_size: (h, w) to publish at (``output_size:=network``), or None.
            camera_info: the camera's latest CameraInfo, or None.
            published: per-output counters, incremented.
            on_error: called with a message when camera_info cannot be rescaled.

        Returns:
            The (width, height) published.
        """
        if network_size is not None:
            h, w = network_size
            if ids.shape != (h, w):
                ids = cv2.resize(ids, (w, h), interpolation=cv2.INTER_NEAREST)
                if conf is not None:
                    conf = cv2.resize(conf, (w, h), interpolation=cv2.INTER_LINEAR)
                if want_overlay:
                    rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        pubs = self.pubs
        pubs['mask'].publish(Image(header=header, **array_to_image_fields(ids, 'mono8')))
        published['mask'] += 1
        if want_color or want_overlay:
            from seg_ros.runtime.colorize import colorize, overlay

            color = colorize(ids, settings.lut)
            if want_color:
                pubs['color'].publish(Image(header=header,
                                            **array_to_image_fields(color, 'rgb8')))
                published['color'] += 1
            if want_overlay:
                blended = overlay(rgb, color, settings.overlay_alpha)
                pubs['overlay'].publish(Image(header=header,
                                              **array_to_image_fields(blended, 'rgb8')))
                published['overlay'] += 1
        if conf is not None:
            pubs['confidence'].publish(Image(header=header,
                                             **array_to_image_fields(conf, 'mono8')))
            published['confidence'] += 1
        if 'camera_info' in pubs and camera_info is not None:
            self._publish_camera_info(camera_info, header, ids.shape[1], ids.shape[0],
                                      on_error)
        return ids.shape[1], ids.shape[0]

    def _publish_camera_info(self, src: CameraInfo, header: Any, width: int, height: int,
                             on_error: Any) -> None:
        info = CameraInfo(header=header, distortion_model=src.distortion_model, d=src.d,
                          r=src.r, k=src.k, p=src.p, binning_x=src.binning_x,
                          binning_y=src.binning_y, roi=src.roi, width=width, height=height)
        if (src.width, src.height) != (width, height):
            try:
                info.k, info.p = scale_camera_info_fields(src.width, src.height, src.k, src.p,
                                                          width, height)
            except SegRosError as exc:
                on_error(f'camera_info not republished: {exc}')
                return
        self.pubs['camera_info'].publish(info)


class SegmentationPipeline:
    """Subscription -> one-slot buffer -> worker (decode, segment, publish), for one node.

    Owned by :class:`SegmentationNode` or the lifecycle node, which call, in order:
    :meth:`load`, :meth:`create_publishers`, :meth:`activate`, and on the way down
    :meth:`deactivate`, :meth:`destroy_publishers`, :meth:`unload`.
    """

    # The node's parameter table; the multi-camera pipeline extends it.
    param_specs: tuple[ParamSpec, ...] = PARAMS
    params_by_name: dict[str, ParamSpec] = PARAMS_BY_NAME
    runtime_params: frozenset[str] = RUNTIME_PARAMS

    def __init__(self, node: Node, lifecycle: bool = False) -> None:
        self.node = node
        self.lifecycle = lifecycle
        self.log = node.get_logger()
        self.slot: FrameSlot[tuple[Any, float]] = FrameSlot()
        self.stats = PipelineStats()
        self.throttle = ErrorThrottle(THROTTLE_S)
        self.seg: Any = None
        self.values: dict[str, Any] = {}
        self.settings: RuntimeSettings | None = None
        self.pubs: dict[str, Any] = {}
        self.outputs: CameraOutputs | None = None
        self.sub: Any = None
        self.info_sub: Any = None
        self.camera_info: CameraInfo | None = None
        self.timer: Any = None
        self.worker: threading.Thread | None = None
        self.active = False
        # messages sent per output: diagnostics show that lazy outputs really stay idle
        self.published = dict.fromkeys(('mask', 'color', 'overlay', 'confidence'), 0)
        self._stop = threading.Event()
        self._wake = threading.Event()  # set on stop and on run-time parameter changes
        self._reported = (0, 0)  # rejects, errors at the previous diagnostics message
        self._idle_warned = False

    # ---------------------------------------------------------------- parameters
    def declare_parameters(self, read_only_load_time: bool) -> None:
        """Declare this pipeline's parameters on its node."""
        declare_parameters(self.node, read_only_load_time, self.param_specs)

    def read_parameters(self) -> dict[str, Any]:
        """Current values of all declared parameters (an unset string array: its default)."""
        from rclpy.exceptions import ParameterUninitializedException

        values: dict[str, Any] = {}
        for spec in self.param_specs:
            try:
                value = self.node.get_parameter(spec.name).value
            except ParameterUninitializedException:
                value = spec.default
            values[spec.name] = tuple(value) if isinstance(spec.default, tuple) else value
        return values

    def on_set_parameters(self, params: list[Any]) -> SetParametersResult:
        """Validate a parameter change; apply the run-time ones when all are valid."""
        changes = {p.name: p.value for p in params if p.name in self.params_by_name}
        for name, value in changes.items():
            reason = validate_value(name, value, self.params_by_name)
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
            if name not in self.runtime_params and self.seg is not None:
                where = ('configure (cleanup first)' if self.lifecycle else 'start-up '
                         '(restart the node)')
                return SetParametersResult(successful=False,
                                           reason=f'{name} is read at {where}')
        if self.seg is None or not any(n in self.runtime_params for n in changes):
            return SetParametersResult(successful=True)
        merged = {**self.values, **changes}
        try:
            settings = self._make_settings(merged)
        except SegRosError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        palette_changed = self.settings is None or settings.palette != self.settings.palette
        self.values = merged
        self.settings = settings
        self._wake.set()  # a waiting rate limiter re-reads max_rate_hz now
        if palette_changed and self.active:
            self._publish_class_names()
        self.log.info('parameters updated: ' + ', '.join(f'{k}={v}' for k, v in changes.items()))
        return SetParametersResult(successful=True)

    def _make_settings(self, values: dict[str, Any]) -> RuntimeSettings:
        """The run-time settings for ``values``.

        Raises:
            SegRosError: for any problem with the palette, whatever the reader raised (a
                binary or UTF-16 file, a 5000-deep YAML, an infinite colour ...): the caller
                rejects the change or stops with one line, the node never dies of it.
        """
        from seg_ros.runtime.colorize import palette_lut

        meta = self.seg.meta
        if values['palette'] == PALETTE_FROM_MODEL:
            names, colours = list(meta.class_names), [list(c) for c in meta.palette]
        else:
            try:
                _, colours = load_palette(values['palette'], meta.num_classes)
            except Exception as exc:  # noqa: BLE001 - see the docstring
                reason = str(exc) if isinstance(exc, SegRosError) else (
                    f'{type(exc).__name__}: {exc}')
                raise SegRosError(f'cannot use palette {values["palette"]!r}: '
                                  f'{reason}') from exc
            names = list(meta.class_names)  # the model defines the classes, the file colours
        colours = colours[:meta.num_classes]
        return RuntimeSettings(
            overlay_alpha=float(values['overlay_alpha']),
            publish_color=bool(values['publish_color']),
            publish_overlay=bool(values['publish_overlay']),
            publish_confidence=bool(values['publish_confidence']),
            max_rate_hz=float(values['max_rate_hz']),
            max_input_pixels=int(values['max_input_pixels']), palette=str(values['palette']),
            lut=palette_lut(colours), class_names=tuple(names),
            colours=tuple(tuple(int(v) for v in c) for c in colours))

    # ---------------------------------------------------------------- lifecycle of the parts
    def load(self) -> None:
        """Read the parameters and load the model (raises SegRosError with the reason)."""
        values = self.read_parameters()
        self.seg = load_segmenter(values, self.log)
        self.values = values
        try:
            self.settings = self._make_settings(values)
        except SegRosError:
            self.unload()
            raise

    def unload(self) -> None:
        """Free the model and, where one was used, cached GPU memory."""
        seg, self.seg = self.seg, None
        self.settings = None
        if seg is not None:
            seg.close()
            del seg
        gc.collect()
        torch = sys.modules.get('torch')
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def create_publishers(self) -> None:
        """Output publishers (reliable), the latched class names and diagnostics."""
        self.outputs = CameraOutputs(self.node, self.lifecycle, '~', self.values,
                                     self._on_subscriber_incompatible)
        self.pubs.update(self.outputs.pubs)
        self.create_shared_publishers()

    def create_shared_publishers(self) -> None:
        """The latched class names, diagnostics and its timer (one set per node)."""
        node = self.node
        make = node.create_lifecycle_publisher if self.lifecycle else node.create_publisher
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pubs['class_names'] = make(String, '~/class_names', latched)
        if LabelInfo is not None:
            self.pubs['label_info'] = make(LabelInfo, '~/label_info', latched)
        # Diagnostics keep flowing while a lifecycle node is inactive: that is when an
        # operator most wants to see why nothing comes out.
        self.pubs['diagnostics'] = node.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.timer = node.create_timer(float(self.values['diagnostics_period']),
                                       self._publish_diagnostics)

    def destroy_publishers(self) -> None:
        """Undo :meth:`create_publishers`."""
        node = self.node
        if self.timer is not None:
            node.destroy_timer(self.timer)
            self.timer = None
        for name, pub in self.pubs.items():
            if self.lifecycle and name != 'diagnostics':
                node.destroy_lifecycle_publisher(pub)
            else:
                node.destroy_publisher(pub)
        self.pubs = {}
        self.outputs = None

    def activate(self) -> None:
        """Subscribe and start the worker; publishers must exist (and be active)."""
        node, values = self.node, self.values
        qos = input_qos(values)
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_publisher_incompatible)
        if values['input_compressed']:
            self.sub = node.create_subscription(CompressedImage, 'image/compressed',
                                                self._on_frame, qos, event_callbacks=events)
        else:
            self.sub = node.create_subscription(Image, 'image', self._on_frame, qos,
                                                event_callbacks=events)
        if values['publish_camera_info']:
            self.info_sub = node.create_subscription(CameraInfo, 'camera_info',
                                                     self._on_camera_info, qos)
        self.slot.reopen()
        self._stop.clear()
        self._wake.clear()
        self.stats.reset_input_clock()
        self.active = True
        self.worker = threading.Thread(target=self._run, name='segmentation_worker',
                                       daemon=True)
        self.worker.start()
        self._publish_class_names()
        self.log.info(f'segmenting {self.sub.topic_name} -> {node.get_fully_qualified_name()}'
                      f'/{{mask,color,overlay,confidence}} (input QoS '
                      f'{values["qos_reliability"]}, depth {values["qos_depth"]})')

    def deactivate(self) -> None:
        """Unsubscribe and stop the worker (the frame in flight finishes first)."""
        self.active = False
        self._stop.set()
        self._wake.set()
        self.slot.close()
        if self.worker is not None:
            self.worker.join(timeout=30.0)
            if self.worker.is_alive():
                self.log.warning('the worker did not stop within 30 s')
            self.worker = None
        for sub in (self.sub, self.info_sub):
            if sub is not None:
                self.node.destroy_subscription(sub)
        self.sub = self.info_sub = None

    # ---------------------------------------------------------------- callbacks
    def _on_frame(self, msg: Any) -> None:
        # Executor thread: O(1), never blocks on inference.
        if self.active:
            self.stats.frame_received()
            self.slot.put((msg, time.monotonic()))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.camera_info = msg

    def _on_publisher_incompatible(self, info: Any) -> None:
        q = self.values
        self.log.warning(
            f'a publisher on {self.sub.topic_name if self.sub else "the input"} offers a QoS '
            f'incompatible with this subscription ({_policy_name(info.last_policy_kind)}; '
            f'{info.total_count} so far): no data will arrive from it. This node requests '
            f'reliability={q["qos_reliability"]}, durability={q["qos_durability"]}; set '
            f'qos_reliability:=best_effort to accept any publisher.')

    def _on_subscriber_incompatible(self, info: Any) -> None:
        self.log.warning(
            f'a subscriber requests a QoS this node does not offer on its outputs '
            f'({_policy_name(info.last_policy_kind)}; {info.total_count} so far): it will get '
            f'nothing. Outputs are reliable + volatile; subscribe with those or best effort.')

    # ---------------------------------------------------------------- worker
    def _run(self) -> None:
        last_start: float | None = None  # when the previous frame's processing began
        while not self._stop.is_set():
            try:
                if self._rate_limited(last_start):
                    continue  # waited (bounded); re-read the settings and the stop flag
                item = self.slot.take(timeout=0.5)
                if item is None:
                    continue
                last_start = time.monotonic()
                self._process(*item)
            except Exception as exc:  # noqa: BLE001 - the node must survive any one frame
                if not self.node.context.ok() or self._stop.is_set():
                    break
                reason = f'{type(exc).__name__}: {exc}'
                self.stats.inference_failed(reason)
                self._error(f'processing a frame failed: {reason}')

    def _rate_limited(self, last_start: float | None) -> bool:
        """Wait while ``max_rate_hz`` forbids the next frame; True when it waited.

        Frames stay in the slot meanwhile, so the newest one is served when the period ends
        and every one it replaced is counted as dropped. The wait is a slice of at most
        :data:`RATE_WAIT_SLICE_S` that a parameter change or a stop ends early: the period is
        always computed from the current value, so lowering or clearing the limit takes
        effect at once and no value can overflow a timeout.
        """
        settings = self.settings
        if last_start is None or settings is None or settings.max_rate_hz <= 0:
            return False
        wait = last_start + 1.0 / settings.max_rate_hz - time.monotonic()
        if wait <= 0:
            return False
        self._wake.wait(min(wait, RATE_WAIT_SLICE_S))
        self._wake.clear()
        return True

    def _error(self, message: str) -> None:
        text = self.throttle.check(message)
        if text is not None:
            self.log.error(text)

    def _decode(self, msg: Any, max_pixels: int) -> np.ndarray:
        if isinstance(msg, CompressedImage):
            return compressed_to_rgb(msg.data, msg.format, max_pixels)
        return image_to_rgb(msg, max_pixels)

    def _process(self, msg: Any, received: float) -> None:
        settings = self.settings
        if settings is None or self.seg is None:
            return
        try:
            rgb = self._decode(msg, settings.max_input_pixels)
        except ImageDecodeError as exc:
            self.stats.frame_rejected(str(exc))
            self._error(f'rejected frame (frame_id {msg.header.frame_id!r}): {exc}')
            return
        outputs = self.outputs
        assert outputs is not None
        want_conf, want_color, want_overlay = outputs.wanted(settings)
        try:
            result = self.seg(rgb, color_order='rgb', confidence=want_conf)
        except SegRosError as exc:
            self.stats.frame_rejected(str(exc))
            self._error(f'rejected frame (frame_id {msg.header.frame_id!r}): {exc}')
            return
        header = msg.header
        if not self.active:
            return  # deactivated while this frame was in inference
        outputs.publish(settings, header, rgb, result.ids,
                        result.confidence if want_conf else None, want_color, want_overlay,
                        self.network_output_size(), self.camera_info, self.published,
                        self._error)
        stamp_ns = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        now_ns = self.node.get_clock().now().nanoseconds
        self.stats.frame_published(
            (now_ns - stamp_ns) / 1e6 if stamp_ns > 0 else None,
            (time.monotonic() - received) * 1e3,
            result.timings.get('inference_ms') if result.timings else None)

    def network_output_size(self) -> tuple[int, int] | None:
        """(h, w) of the network input with ``output_size:=network``, else None."""
        if self.values['output_size'] != 'network' or self.seg is None:
            return None
        h, w = (int(v) for v in self.seg.input_size)
        return h, w

    # ---------------------------------------------------------------- latched and periodic
    def _publish_class_names(self) -> None:
        settings = self.settings
        if settings is None or 'class_names' not in self.pubs:
            return
        text = class_names_json(self.seg.meta.model, settings.class_names, settings.colours)
        self.pubs['class_names'].publish(String(data=text))
        if 'label_info' in self.pubs and LabelInfo is not None:
            msg = LabelInfo(class_map=[VisionClass(class_id=i, class_name=n)
                                       for i, n in enumerate(settings.class_names)])
            msg.header.stamp = self.node.get_clock().now().to_msg()
            self.pubs['label_info'].publish(msg)

    def frames_dropped(self) -> int:
        """Frames never processed: replaced in the slot (under load or ``max_rate_hz``)."""
        return self.slot.dropped

    def _publish_diagnostics(self) -> None:
        snap = self.stats.snapshot(self.frames_dropped())
        rejects, errors = self._reported
        self._reported = (snap.frames_rejected, snap.inference_errors)
        topic = self.sub.topic_name if self.sub is not None else (
            'image/compressed' if self.values.get('input_compressed') else 'image')
        seg = self.seg
        info = {
            'state': 'active' if self.active else 'inactive',
            'backend': seg.backend_name if seg is not None else 'none',
            'model': seg.meta.model if seg is not None else 'none',
            'model file': str(self.values.get('model', '')),
            'device': str(self.values.get('device', '')),
            'precision': (f'{seg.precision} ({seg.precision_reason})' if seg is not None
                          else str(self.values.get('precision', ''))),
            'network input': ('x'.join(str(v) for v in reversed(seg.input_size))
                              if seg is not None else 'n/a'),
            'input topic': topic,
            'max rate (Hz)': (f'{self.settings.max_rate_hz:g}' if self.settings is not None
                              and self.settings.max_rate_hz > 0 else 'unlimited'),
            **{f'published {k}': str(v) for k, v in self.published.items()},
        }
        warn_s = float(self.values.get('no_input_warn_s', 0.0)) if self.active else 0.0
        status = diagnostic_status(
            snap, f'{self.node.get_fully_qualified_name()}: segmentation',
            f'{info["backend"]}/{info["device"]}', info, warn_s, topic,
            snap.frames_rejected - rejects, snap.inference_errors - errors)
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.pubs['diagnostics'].publish(msg)
        idle = (warn_s > 0 and snap.seconds_since_input is not None
                and snap.seconds_since_input > warn_s)
        if idle and not self._idle_warned:  # once per idle period; diagnostics keep WARN
            self._warn_no_input(topic, snap.seconds_since_input)
        self._idle_warned = idle

    def _warn_no_input(self, topic: str, seconds: float) -> None:
        n = self.node.count_publishers(topic)
        if n == 0:
            hint = 'nobody publishes it (remap image:=/your/camera/topic?)'
        else:
            hint = (f'{n} publisher(s) on it; if they are publishing, check their QoS (this '
                    f'node requests {self.values["qos_reliability"]}) and, for large images, '
                    'the Fast DDS profile: FASTRTPS_DEFAULT_PROFILES_FILE (Humble, Jazzy) '
                    'and FASTDDS_DEFAULT_PROFILES_FILE (Kilted) = share/seg_ros/config/'
                    'fastdds_profile.xml')
        self.log.warning(f'no frames on {topic} for {seconds:.0f} s: {hint} '
                         '(logged once until frames arrive again)')


class SegmentationNode(Node):
    """The segmentation node: loads the model at construction and starts processing.

    Raises:
        SegRosError: from the constructor, for invalid parameters or a model that cannot be
            loaded (``main`` turns it into one log line and exit status 1).
    """

    # the multi-camera node reuses this class with its own pipeline and name
    pipeline_class: type = SegmentationPipeline
    default_name = NODE_NAME

    def __init__(self, node_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(node_name or self.default_name, **kwargs)
        self.pipeline = self.pipeline_class(self, lifecycle=False)
        self.add_on_set_parameters_callback(self.pipeline.on_set_parameters)
        self.pipeline.declare_parameters(read_only_load_time=True)
        self.pipeline.load()
        self.pipeline.create_publishers()
        self.pipeline.activate()

    def shutdown(self) -> None:
        """Stop the worker and free the model (before ``destroy_node``)."""
        self.pipeline.deactivate()
        self.pipeline.unload()


def _parameter_exceptions() -> tuple[type[BaseException], ...]:
    from rclpy import exceptions

    return tuple(getattr(exceptions, n) for n in ('ParameterException',
                                                   'InvalidParameterValueException',
                                                   'InvalidParameterTypeException')
                 if hasattr(exceptions, n))


def run(node_factory: Any, args: list[str] | None = None) -> int:
    """Init rclpy, build the node, spin until Ctrl-C; one clear line on start-up errors.

    Returns:
        0 after a normal shutdown, 1 when the node could not start.
    """
    from rclpy.executors import SingleThreadedExecutor

    try:
        from rclpy.executors import ExternalShutdownException
    except ImportError:  # pragma: no cover - very old rclpy
        ExternalShutdownException = KeyboardInterrupt  # type: ignore[misc,assignment]  # noqa: N806

    rclpy.init(args=args)
    node = None
    logger = rclpy.logging.get_logger(NODE_NAME)
    try:
        node = node_factory()
        logger = node.get_logger()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (SegRosError, *_parameter_exceptions()) as exc:
        logger.fatal(f'cannot start: {exc}')
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def main(args: list[str] | None = None) -> int:
    """Entry point of ``segmentation_node`` / ``python -m seg_ros.ros.node``."""
    return run(SegmentationNode, args)


if __name__ == '__main__':
    sys.exit(main())
