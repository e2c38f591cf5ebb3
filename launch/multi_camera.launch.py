"""Launch seg_ros for several cameras: one node per camera, or one batched node for all.

    ros2 launch seg_ros multi_camera.launch.py model:=/path/model.onnx \\
        cameras:='front,rear:/rear_cam/image_raw'
    ros2 launch seg_ros multi_camera.launch.py model:=/path/model.onnx \\
        cameras:='front,left,rear' batched:=true

``cameras`` is a comma-separated list of ``NAME`` or ``NAME:IMAGE_TOPIC`` entries. Each camera
gets its own node in namespace ``/NAME`` (outputs ``/NAME/segmentation_node/mask`` ...)
subscribed to IMAGE_TOPIC, default ``/NAME/<image_suffix>``. Every node is an instance of
``segmentation.launch.py`` with the shared arguments forwarded, so the lifecycle option and
the parameter file work the same way (``model``, ``weights``, ``backend`` and
``input_compressed`` override the params file only when given). Each node loads its own copy
of the model.

With ``batched:=true`` one ``multi_camera_segmentation_node`` (or, with ``use_lifecycle``, its
managed variant, configured and activated when ``autostart``) serves every camera in one
process with one model: parameters ``cameras`` and ``image_topics`` come from ``cameras``,
outputs are ``/multi_camera_segmentation_node/NAME/mask`` and so on.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
import re
from types import ModuleType

from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    GroupAction,
    IncludeLaunchDescription,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.events import matches_action
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

from launch import LaunchContext, LaunchDescription

PACKAGE = 'seg_ros'
SINGLE_CAMERA_LAUNCH = ('launch', 'segmentation.launch.py')
DEFAULT_PARAMS = ('config', 'segmentation.yaml')
FORWARDED = ('model', 'weights', 'params_file', 'backend', 'use_lifecycle', 'autostart',
             'input_compressed', 'log_level')
_NAME = re.compile(r'^[A-Za-z][A-Za-z0-9_]*$')
BATCHED_NODE_NAME = 'multi_camera_segmentation_node'


def parse_cameras(spec: str, image_suffix: str = 'image_raw') -> list[tuple[str, str]]:
    """``'front,rear:/rear_cam/image_raw'`` -> ``[(name, image topic), ...]``.

    Raises:
        ValueError: an empty list, a name that is not a valid ROS namespace or a duplicate.
    """
    cameras: list[tuple[str, str]] = []
    for entry in (e.strip() for e in spec.split(',')):
        if not entry:
            continue
        name, _, topic = entry.partition(':')
        name = name.strip()
        if not _NAME.match(name):
            raise ValueError(f'camera name {name!r} is not a valid ROS name')
        if any(name == n for n, _ in cameras):
            raise ValueError(f'camera {name!r} listed twice')
        cameras.append((name, topic.strip() or f'/{name}/{image_suffix}'))
    if not cameras:
        raise ValueError('cameras is empty: give e.g. cameras:=front,rear')
    return cameras


def _nodes(context: LaunchContext) -> list[GroupAction]:
    spec = LaunchConfiguration('cameras').perform(context)
    suffix = LaunchConfiguration('image_suffix').perform(context)
    forwarded = {k: LaunchConfiguration(k) for k in FORWARDED}
    groups = []
    for name, topic in parse_cameras(spec, suffix):
        # One source per camera: a source caches the description it loaded, so a shared one
        # would hand every include the same actions ("executed more than once").
        source = PythonLaunchDescriptionSource(
            PathJoinSubstitution([FindPackageShare(PACKAGE), *SINGLE_CAMERA_LAUNCH]))
        include = IncludeLaunchDescription(
            source, launch_arguments={**forwarded, 'namespace': name, 'image': topic}.items())
        # scoped: each include's launch configurations stay inside its own group
        groups.append(GroupAction([include], scoped=True))
    return groups


def _single_camera_launch() -> ModuleType:
    """segmentation.launch.py beside this file: its parameter-override rules are reused."""
    path = Path(__file__).resolve().with_name(SINGLE_CAMERA_LAUNCH[1])
    spec = importlib.util.spec_from_file_location('seg_ros_segmentation_launch', path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _batched_node(context: LaunchContext) -> list:
    """One multi-camera node (plain or managed) for every camera."""
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    single = _single_camera_launch()
    cameras = parse_cameras(arg('cameras'), arg('image_suffix'))
    overrides = single.parameter_overrides({k: arg(k) for k in single.NODE_PARAM_ARGUMENTS})
    overrides.update({'cameras': [n for n, _ in cameras],
                      'image_topics': [t for _, t in cameras]})
    common = dict(package=PACKAGE, name=BATCHED_NODE_NAME, namespace='',
                  parameters=[arg('params_file'), overrides],
                  arguments=['--ros-args', '--log-level', arg('log_level')], output='screen',
                  emulate_tty=True, sigterm_timeout=LaunchConfiguration(
                      'sigterm_timeout', default=single.SIGTERM_TIMEOUT_S))
    if arg('use_lifecycle') != 'true':
        return [Node(executable='multi_camera_segmentation_node', **common)]
    managed = LifecycleNode(executable='multi_camera_segmentation_lifecycle_node', **common)
    if arg('autostart') != 'true':
        return [managed]
    configure = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(managed),
                                            transition_id=Transition.TRANSITION_CONFIGURE))
    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=managed, goal_state='inactive',
        entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(managed),
                                              transition_id=Transition.TRANSITION_ACTIVATE))]))
    return [managed, activate, configure]


def _launch(context: LaunchContext) -> list:
    if LaunchConfiguration('batched').perform(context) == 'true':
        return _batched_node(context)
    return _nodes(context)


def generate_launch_description() -> LaunchDescription:
    """One segmentation node per camera in ``cameras``, or one batched node."""
    return LaunchDescription([
        DeclareLaunchArgument('cameras', description='comma-separated NAME or '
                              'NAME:IMAGE_TOPIC entries, e.g. front,rear:/rear_cam/image_raw'),
        DeclareLaunchArgument('image_suffix', default_value='image_raw',
                              description='image topic of a camera given by NAME only: '
                                          '/NAME/<image_suffix>'),
        # model, weights, backend, input_compressed: '' = not given, the params file decides
        DeclareLaunchArgument('model', default_value='',
                              description='model file or registered name (shared)'),
        DeclareLaunchArgument('weights', default_value=''),
        DeclareLaunchArgument('params_file', default_value=PathJoinSubstitution(
            [FindPackageShare(PACKAGE), *DEFAULT_PARAMS])),
        DeclareLaunchArgument('backend', default_value=''),
        DeclareLaunchArgument('use_lifecycle', default_value='false'),
        DeclareLaunchArgument('autostart', default_value='true'),
        DeclareLaunchArgument('input_compressed', default_value=''),
        DeclareLaunchArgument('log_level', default_value='info'),
        DeclareLaunchArgument('batched', default_value='false', choices=['true', 'false'],
                              description='one multi_camera_segmentation_node for all cameras '
                                          '(one model, batched inference) instead of one '
                                          'node per camera'),
        OpaqueFunction(function=_launch),
    ])
