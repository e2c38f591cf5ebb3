"""Parameters of the segmentation nodes: one table, one validator, no rclpy needed.

The table is the single source of truth for ``segmentation_node``, the lifecycle variant,
the parameter files in ``config/`` (a test checks that every key there is declared here and
valid) and ``docs/node.md``. Validation lives here as pure functions so it can be tested
without a ROS graph and gives the same reason at start-up and on ``ros2 param set``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import re
from typing import Any

from seg_ros.errors import SegRosError
from seg_ros.metadata import PALETTES

BACKENDS: tuple[str, ...] = ('auto', 'tensorrt', 'onnxruntime', 'openvino', 'torch')
PRECISIONS: tuple[str, ...] = ('auto', 'fp32', 'fp16', 'bf16', 'int8')
RESIZE_MODES: tuple[str, ...] = ('stretch', 'letterbox')
OUTPUT_SIZES: tuple[str, ...] = ('input', 'network')
RELIABILITIES: tuple[str, ...] = ('best_effort', 'reliable', 'system_default')
DURABILITIES: tuple[str, ...] = ('volatile', 'transient_local', 'system_default')
HISTORIES: tuple[str, ...] = ('keep_last', 'keep_all', 'system_default')
PALETTE_FROM_MODEL = 'model'
MAX_INPUT_PIXELS = 7680 * 4320  # 8K UHD: the largest camera frame a robot plausibly sends
_DEVICE = re.compile(r'^(auto|cpu|cuda(:\d+)?)$')


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter.

    Attributes:
        name: parameter name.
        default: default value; its Python type is the ROS parameter type.
        description: one line for ``ros2 param describe`` and the docs.
        runtime: changeable while the node runs (``ros2 param set``); the others are read at
            start-up (or, in the lifecycle node, at configure).
        choices: allowed string values.
        int_range: inclusive (min, max) for integers.
        float_range: inclusive (min, max) for floats.
        constraints: extra human-readable constraints.
    """

    name: str
    default: Any
    description: str
    runtime: bool = False
    choices: tuple[str, ...] = ()
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None
    constraints: str = ''

    @property
    def type_name(self) -> str:
        """ROS parameter type: bool, integer, double, string or string array."""
        return {bool: 'bool', int: 'integer', float: 'double', str: 'string',
                tuple: 'string array'}[type(self.default)]

    def constraint_text(self) -> str:
        """Constraints as one line (choices, range, free text)."""
        parts = []
        if self.choices:
            parts.append('one of ' + ', '.join(self.choices))
        if self.int_range is not None:
            parts.append(f'{self.int_range[0]}..{self.int_range[1]}')
        if self.float_range is not None:
            parts.append(f'{self.float_range[0]:g}..{self.float_range[1]:g}')
        if self.constraints:
            parts.append(self.constraints)
        return '; '.join(parts)


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec('model', '', 'model to run: an .onnx / .engine / seg_ros checkpoint .pt path '
              '(package://PKG/relative/path allowed) or a registered model name (then '
              '`weights` names the checkpoint)', constraints='required'),
    ParamSpec('weights', '', 'seg_ros checkpoint for a registered model name; empty when '
              '`model` is a file'),
    ParamSpec('backend', 'auto', 'inference backend; auto = TensorRT if available and a GPU '
              'is present, else CUDA torch, else OpenVINO on the CPU when installed, else ONNX '
              'Runtime', choices=BACKENDS),
    ParamSpec('device', 'auto', 'compute device; auto = CUDA when available, else the CPU',
              constraints='auto, cpu, cuda or cuda:N'),
    ParamSpec('precision', 'auto', 'inference precision; auto = fp16 on CUDA, bf16 under '
              'OpenVINO on CPUs with native bf16 (AVX512_BF16/AMX), int8 for a file from '
              'seg-ros quantize, else fp32 (the choice and its reason are logged and in '
              '/diagnostics); explicit values are obeyed or refused at start-up',
              choices=PRECISIONS),
    ParamSpec('input_width', 0, 'network input width in pixels; 0 = the size stored with the '
              'model', int_range=(0, 8192), constraints='set together with input_height'),
    ParamSpec('input_height', 0, 'network input height in pixels; 0 = the size stored with '
              'the model', int_range=(0, 8192), constraints='set together with input_width'),
    ParamSpec('resize_mode', 'stretch', 'how camera frames are fitted to the network input '
              '(letterbox keeps the aspect ratio and is undone exactly on the way back)',
              choices=RESIZE_MODES),
    ParamSpec('engine_cache_dir', '', 'folder for cached TensorRT engines (and ONNX exports '
              'of checkpoints); empty = ~/.cache/seg_ros or $SEG_ROS_CACHE'),
    ParamSpec('build_engine_on_start', True, 'build (or rebuild a stale) TensorRT engine at '
              'start-up when no valid cached engine exists; false = fail instead (passed to '
              'the TensorRT loader when it has the switch, else a warning says it cannot be '
              'honoured)'),
    ParamSpec('threads', 0, 'CPU threads for inference; 0 = backend default (torch: the '
              'free cores at start-up, CPU count minus load average)',
              int_range=(0, 256)),
    ParamSpec('input_compressed', False, 'subscribe to image/compressed '
              '(sensor_msgs/CompressedImage, JPEG or PNG) instead of image'),
    ParamSpec('max_input_pixels', MAX_INPUT_PIXELS, 'largest camera frame accepted, in pixels '
              '(width x height; default 8K UHD): larger raw frames and compressed images whose '
              'PNG/JPEG header declares more are rejected and counted before any decoding, so '
              'a decompression bomb costs milliseconds, not gigabytes', runtime=True,
              int_range=(1, 1 << 30)),
    ParamSpec('output_size', 'input', 'resolution of the published images: the camera '
              "frame's (input) or the network's (network; nearest-neighbour for ids)",
              choices=OUTPUT_SIZES),
    ParamSpec('publish_camera_info', False, 'subscribe to camera_info and republish it on '
              '~/camera_info with each mask (same header, rescaled to the output size)'),
    ParamSpec('max_rate_hz', 0.0, 'upper bound on the processing rate; frames arriving '
              'faster are dropped (counted); 0 = as fast as inference allows',
              runtime=True, float_range=(0.0, 1000.0)),
    ParamSpec('overlay_alpha', 0.5, 'weight of the class colour in ~/overlay (0 = camera '
              'image only, 1 = colour only)', runtime=True, float_range=(0.0, 1.0)),
    ParamSpec('publish_color', True, 'publish ~/color (computed only while subscribed)',
              runtime=True),
    ParamSpec('publish_overlay', True, 'publish ~/overlay (computed only while subscribed)',
              runtime=True),
    ParamSpec('publish_confidence', True, 'publish ~/confidence, max softmax x 255 '
              '(computed only while subscribed)', runtime=True),
    ParamSpec('palette', PALETTE_FROM_MODEL, 'class colours for ~/color, ~/overlay and '
              '~/class_names', runtime=True,
              constraints='model (the palette stored with the model), '
              + ', '.join(PALETTES) + ' or a palette YAML file'),
    ParamSpec('qos_reliability', 'best_effort', 'input subscription reliability',
              choices=RELIABILITIES),
    ParamSpec('qos_durability', 'volatile', 'input subscription durability',
              choices=DURABILITIES),
    ParamSpec('qos_history', 'keep_last', 'input subscription history', choices=HISTORIES),
    ParamSpec('qos_depth', 1, 'input subscription queue depth (the node itself keeps only the '
              'newest frame)', int_range=(1, 1000)),
    ParamSpec('qos_output_depth', 1, 'queue depth of the reliable output publishers',
              int_range=(1, 1000)),
    ParamSpec('diagnostics_period', 1.0, 'seconds between /diagnostics messages',
              float_range=(0.1, 60.0)),
    ParamSpec('no_input_warn_s', 5.0, 'warn (log and diagnostics) after this many seconds '
              'without an input frame; 0 = never', float_range=(0.0, 3600.0)),
)

PARAMS_BY_NAME: dict[str, ParamSpec] = {p.name: p for p in PARAMS}
RUNTIME_PARAMS: frozenset[str] = frozenset(p.name for p in PARAMS if p.runtime)


def validate_value(name: str, value: Any,
                   table: dict[str, ParamSpec] | None = None) -> str | None:
    """Check one parameter value.

    Args:
        name: parameter name.
        value: proposed value.
        table: the node's parameters by name (default: the single-camera node's).

    Returns:
        None when valid, else the reason (one sentence naming the parameter).
    """
    spec = (PARAMS_BY_NAME if table is None else table).get(name)
    if spec is None:
        return f'unknown parameter {name!r}'
    expected = type(spec.default)
    if expected is float and type(value) is int:
        value = float(value)
    if expected is tuple:  # string array: rclpy hands over a list (None while unset)
        if value is None:
            return None
        if not isinstance(value, (list, tuple)) or not all(type(v) is str for v in value):
            return f'{name} must be a string array, got {type(value).__name__} {value!r}'
        return None
    if type(value) is not expected:
        return (f'{name} must be a {spec.type_name}, got {type(value).__name__} '
                f'{value!r}')
    if spec.choices and value not in spec.choices:
        return f'{name} must be one of {", ".join(spec.choices)}, got {value!r}'
    if spec.int_range is not None and not spec.int_range[0] <= value <= spec.int_range[1]:
        return f'{name} must be in {spec.int_range[0]}..{spec.int_range[1]}, got {value}'
    if spec.float_range is not None and not (
            spec.float_range[0] <= value <= spec.float_range[1]):
        return (f'{name} must be in {spec.float_range[0]:g}..{spec.float_range[1]:g}, '
                f'got {value}')
    if name == 'device' and not _DEVICE.match(value):
        return f'device must be auto, cpu, cuda or cuda:N, got {value!r}'
    if name == 'palette' and value != PALETTE_FROM_MODEL and value not in PALETTES:
        if not Path(value).is_file():
            return (f'palette must be {PALETTE_FROM_MODEL}, {", ".join(PALETTES)} or an '
                    f'existing YAML file, got {value!r}')
    return None


def validate_all(values: dict[str, Any]) -> None:
    """Validate a full parameter set, including cross-parameter rules.

    Raises:
        SegRosError: the first problem found, as one clear sentence.
    """
    for name, value in values.items():
        reason = validate_value(name, value)
        if reason is not None:
            raise SegRosError(reason)
    if not str(values.get('model', '')).strip():
        raise SegRosError("parameter 'model' is required: an .onnx/.engine/.pt file or a "
                          "registered model name (e.g. -p model:=regseg48 -p weights:=CKPT)")
    width, height = int(values.get('input_width', 0)), int(values.get('input_height', 0))
    if (width == 0) != (height == 0):
        raise SegRosError(f'set input_width and input_height together (got {width}x{height});'
                          ' 0 for both uses the size stored with the model')


def markdown_table(specs: tuple[ParamSpec, ...] | None = None) -> str:
    """A parameter table of ``docs/node.md`` (a test keeps the page in sync).

    Args:
        specs: the parameters to list (default: the single-camera node's).
    """
    lines = ['| parameter | type | default | range / choices | run time | description |',
             '|---|---|---|---|---|---|']
    for p in (PARAMS if specs is None else specs):
        if isinstance(p.default, tuple):
            default = '[' + ', '.join(p.default) + ']'
        elif isinstance(p.default, bool):
            default = str(p.default).lower()
        elif isinstance(p.default, str):
            default = repr(p.default)
        else:
            default = str(p.default)
        lines.append(f'| `{p.name}` | {p.type_name} | `{default}` | {p.constraint_text()} | '
                     f'{"yes" if p.runtime else "no"} | {p.description} |')
    return '\n'.join(lines) + '\n'
