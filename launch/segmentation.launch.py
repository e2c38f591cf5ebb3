"""Launch one seg_ros segmentation node.

    ros2 launch seg_ros segmentation.launch.py model:=/path/model.onnx \\
        image:=/camera/image_raw \\
        params_file:=$(ros2 pkg prefix seg_ros)/share/seg_ros/config/sfnet_lite.yaml

Arguments: model, weights, params_file, backend, image, namespace, use_lifecycle, autostart,
input_compressed, log_level. ``model``/``backend`` given here override the params file.
With ``use_lifecycle:=true`` the managed variant starts and, with ``autostart:=true`` (the
default), is configured and activated by this launch file.
"""
from __future__ import annotations

from launch.actions import DeclareLaunchArgument, EmitEvent, GroupAction, RegisterEventHandler
from launch.conditions import IfCondition, UnlessCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import LifecycleNode, Node, PushRosNamespace
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

from launch import LaunchDescription

PACKAGE = 'seg_ros'
NODE_NAME = 'segmentation_node'
DEFAULT_PARAMS = ('config', 'regseg.yaml')


def generate_launch_description() -> LaunchDescription:
    """One segmentation node (plain or lifecycle) for one camera topic."""
    model = LaunchConfiguration('model')
    weights = LaunchConfiguration('weights')
    backend = LaunchConfiguration('backend')
    params_file = LaunchConfiguration('params_file')
    image = LaunchConfiguration('image')
    use_lifecycle = LaunchConfiguration('use_lifecycle')
    autostart = LaunchConfiguration('autostart')
    compressed = LaunchConfiguration('input_compressed')
    log_level = LaunchConfiguration('log_level')

    arguments = [
        DeclareLaunchArgument('model', description='ONNX / TensorRT engine / seg_ros '
                              'checkpoint path, package://seg_ros/..., or a registered model '
                              'name (then give weights)'),
        DeclareLaunchArgument('weights', default_value='',
                              description='checkpoint for a registered model name'),
        DeclareLaunchArgument('params_file', default_value=PathJoinSubstitution(
            [FindPackageShare(PACKAGE), *DEFAULT_PARAMS]),
            description='node parameter YAML (config/regseg.yaml, sfnet_lite.yaml, '
                        'rtseg.yaml, eseg.yaml)'),
        DeclareLaunchArgument('backend', default_value='auto',
                              choices=['auto', 'tensorrt', 'onnxruntime', 'torch'],
                              description='inference backend'),
        DeclareLaunchArgument('image', default_value='/camera/image_raw',
                              description='camera image topic (its /compressed sub-topic '
                                          'with input_compressed:=true)'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace of the node and its outputs'),
        DeclareLaunchArgument('use_lifecycle', default_value='false', choices=['true', 'false'],
                              description='start segmentation_lifecycle_node instead'),
        DeclareLaunchArgument('autostart', default_value='true', choices=['true', 'false'],
                              description='configure and activate the lifecycle node'),
        DeclareLaunchArgument('input_compressed', default_value='false',
                              choices=['true', 'false'],
                              description='subscribe to IMAGE/compressed (JPEG/PNG)'),
        DeclareLaunchArgument('log_level', default_value='info',
                              description='node log level'),
    ]

    parameters = [params_file, {'model': model, 'weights': weights, 'backend': backend,
                                'input_compressed': compressed}]
    remappings = [('image', image), ('image/compressed', [image, '/compressed'])]
    # `arguments` rather than `ros_arguments`: the same on every ROS 2 release.
    ros_args = ['--ros-args', '--log-level', log_level]

    plain = Node(package=PACKAGE, executable='segmentation_node', name=NODE_NAME,
                 parameters=parameters, remappings=remappings, arguments=ros_args,
                 output='screen', emulate_tty=True, condition=UnlessCondition(use_lifecycle))
    managed = LifecycleNode(package=PACKAGE, executable='segmentation_lifecycle_node',
                            name=NODE_NAME, namespace='', parameters=parameters,
                            remappings=remappings, arguments=ros_args, output='screen',
                            emulate_tty=True, condition=IfCondition(use_lifecycle))
    # PythonExpression rather than AndSubstitution: the latter is not in every ROS 2 release.
    start_managed = PythonExpression(["'", use_lifecycle, "' == 'true' and '", autostart,
                                      "' == 'true'"])
    configure = EmitEvent(
        event=ChangeState(lifecycle_node_matcher=matches_action(managed),
                          transition_id=Transition.TRANSITION_CONFIGURE),
        condition=IfCondition(start_managed))
    # Activate once configure succeeded (loading a model or building an engine takes a while).
    activate = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=managed, goal_state='inactive',
            entities=[EmitEvent(event=ChangeState(
                lifecycle_node_matcher=matches_action(managed),
                transition_id=Transition.TRANSITION_ACTIVATE))]),
        condition=IfCondition(start_managed))

    group = GroupAction([PushRosNamespace(LaunchConfiguration('namespace')), plain, managed,
                         activate, configure])
    return LaunchDescription([*arguments, group])
