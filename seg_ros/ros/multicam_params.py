"""Parameters of ``multi_camera_segmentation_node``: the single node's table plus batching.

No rclpy needed: the table, the cross-parameter rules and the camera/topic resolution are
pure functions, tested without a ROS graph and giving the same reason at start-up (or
configure) and on ``ros2 param set``.
"""
from __future__ import annotations

from dataclasses import dataclass
import re
from typing import Any

from seg_ros.errors import SegRosError
from seg_ros.ros.node_params import PARAMS, ParamSpec, validate_all, validate_value

TRIGGERS: tuple[str, ...] = ('anchor', 'period')
_NAME = re.compile(r'^[A-Za-z][A-Za-z0-9_]*$')  # one ROS name token: it becomes ~/<name>/
DEFAULT_IMAGE_SUFFIX = 'image_raw'

MULTI_ONLY_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec('cameras', (), 'camera names, e.g. [front, left, rear]; each camera publishes '
              'under ~/<name>/ and, without image_topics, reads /<name>/image_raw',
              constraints='required; unique ROS names'),
    ParamSpec('image_topics', (), 'image topic per camera, in the order of cameras; empty = '
              '/<name>/image_raw (with input_compressed: <topic>/compressed; with '
              'publish_camera_info: camera_info next to the topic)',
              constraints='empty or one per camera'),
    ParamSpec('batch_trigger', 'anchor', 'what starts a batch: a frame of anchor_camera '
              '(cameras that were in the previous batch are waited for up to '
              'camera_timeout_s), or a timer every batch_period_s (whatever is fresh)',
              choices=TRIGGERS),
    ParamSpec('anchor_camera', '', 'camera whose frames trigger batches (batch_trigger anchor)'
              "; '' = the first camera", constraints="'' or one of cameras"),
    ParamSpec('batch_period_s', 0.033, 'period of the period trigger (seconds; 0.033 = 30 Hz)',
              runtime=True, float_range=(0.001, 10.0)),
    ParamSpec('anchor_timeout_s', 0.25, 'anchor trigger: after this long without an anchor '
              'frame, any camera triggers the batch (a dead anchor never stops the others)',
              runtime=True, float_range=(0.001, 10.0)),
    ParamSpec('camera_timeout_s', 0.03, 'how long a batch waits for a camera that was in the '
              'previous batch; a camera that misses it is counted late, and is not waited '
              'for again until it delivers', runtime=True, float_range=(0.0, 1.0)),
    ParamSpec('max_stamp_spread_s', 0.0, 'largest header-stamp difference to the triggering '
              'frame inside one batch: older frames are skipped (counted), newer ones wait '
              'for the next batch; 0 = no limit', runtime=True, float_range=(0.0, 10.0)),
)

MULTI_PARAMS: tuple[ParamSpec, ...] = PARAMS + MULTI_ONLY_PARAMS
MULTI_PARAMS_BY_NAME: dict[str, ParamSpec] = {p.name: p for p in MULTI_PARAMS}
MULTI_RUNTIME_PARAMS: frozenset[str] = frozenset(p.name for p in MULTI_PARAMS if p.runtime)
SINGLE_PARAM_NAMES: frozenset[str] = frozenset(p.name for p in PARAMS)


@dataclass(frozen=True)
class Camera:
    """One camera of the multi-camera node.

    Attributes:
        name: camera name (output namespace ``~/<name>/``).
        image_topic: the raw image topic (``<topic>/compressed`` with ``input_compressed``).
        info_topic: its CameraInfo topic (beside the image topic, as image_transport has it).
    """

    name: str
    image_topic: str
    info_topic: str

    def input_topic(self, compressed: bool) -> str:
        """The topic subscribed to."""
        return self.image_topic + '/compressed' if compressed else self.image_topic


def camera_info_topic(image_topic: str) -> str:
    """``/front/image_raw`` -> ``/front/camera_info``; a bare name -> ``camera_info``."""
    head, sep, _tail = image_topic.rstrip('/').rpartition('/')
    return f'{head}/camera_info' if sep else 'camera_info'


def resolve_cameras(values: dict[str, Any]) -> list[Camera]:
    """The cameras described by ``cameras`` and ``image_topics``.

    Raises:
        SegRosError: no camera, an invalid or duplicate name, a wrong number of topics.
    """
    names = [str(n).strip() for n in values.get('cameras', ())]
    if not names:
        raise SegRosError("parameter 'cameras' is required: the camera names, e.g. "
                          "-p cameras:='[front, rear]'")
    for name in names:
        if not _NAME.match(name):
            raise SegRosError(f'camera name {name!r} is not a valid ROS name (letters, digits, '
                              f'underscores; starting with a letter)')
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SegRosError(f'camera {duplicates[0]!r} listed twice in cameras')
    topics = [str(t).strip() for t in values.get('image_topics', ())]
    if topics and len(topics) != len(names):
        raise SegRosError(f'image_topics has {len(topics)} entries for {len(names)} cameras: '
                          f'give one per camera, in the order of cameras, or none')
    if any(not t for t in topics):
        raise SegRosError('image_topics has an empty entry')
    if not topics:
        topics = [f'/{n}/{DEFAULT_IMAGE_SUFFIX}' for n in names]
    return [Camera(n, t, camera_info_topic(t)) for n, t in zip(names, topics)]


def anchor_index(values: dict[str, Any], cameras: list[Camera]) -> int:
    """Index of the anchor camera (the first one when ``anchor_camera`` is empty).

    Raises:
        SegRosError: an anchor that is not one of the cameras.
    """
    anchor = str(values.get('anchor_camera', '')).strip()
    if not anchor:
        return 0
    for i, cam in enumerate(cameras):
        if cam.name == anchor:
            return i
    raise SegRosError(f'anchor_camera {anchor!r} is not one of the cameras '
                      f'({", ".join(c.name for c in cameras)})')


def validate_multi(values: dict[str, Any]) -> list[Camera]:
    """Validate the multi-camera node's full parameter set.

    Returns:
        The cameras.

    Raises:
        SegRosError: the first problem found, as one clear sentence.
    """
    for name, value in values.items():
        if name not in SINGLE_PARAM_NAMES:
            reason = validate_value(name, value, MULTI_PARAMS_BY_NAME)
            if reason is not None:
                raise SegRosError(reason)
    validate_all({k: v for k, v in values.items() if k in SINGLE_PARAM_NAMES})
    cameras = resolve_cameras(values)
    anchor_index(values, cameras)
    return cameras
