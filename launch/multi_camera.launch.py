"""Launch one seg_ros segmentation node per camera.

    ros2 launch seg_ros multi_camera.launch.py model:=/path/model.onnx \\
        cameras:='front,rear:/rear_cam/image_raw'

``cameras`` is a comma-separated list of ``NAME`` or ``NAME:IMAGE_TOPIC`` entries. Each camera
gets its own node in namespace ``/NAME`` (outputs ``/NAME/segmentation_node/mask`` ...)
subscribed to IMAGE_TOPIC, default ``/NAME/<image_suffix>``. Every node is an instance of
``segmentation.launch.py`` with the shared arguments forwarded, so the lifecycle option and
the parameter file work the same way (``model``, ``weights``, ``backend`` and
``input_compressed`` override the params file only when given). Each node loads its own copy
of the model.
"""
from __future__ import annotations

import re

from launch.actions import (
    DeclareLaunchArgument,
    GroupAction,
    IncludeLaunchDescription,
    OpaqueFunction,
)
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

from launch import LaunchContext, LaunchDescription

PACKAGE = 'seg_ros'
SINGLE_CAMERA_LAUNCH = ('launch', 'segmentation.launch.py')
DEFAULT_PARAMS = ('config', 'segmentation.yaml')
FORWARDED = ('model', 'weights', 'params_file', 'backend', 'use_lifecycle', 'autostart',
             'input_compressed', 'log_level')
_NAME = re.compile(r'^[A-Za-z][A-Za-z0-9_]*$')


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


def generate_launch_description() -> LaunchDescription:
    """One segmentation node per camera in ``cameras``."""
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
        OpaqueFunction(function=_nodes),
    ])
