"""Launch one seg_ros segmentation node.

    ros2 launch seg_ros segmentation.launch.py model:=/path/model.onnx \\
        image:=/camera/image_raw \\
        params_file:=$(ros2 pkg prefix seg_ros)/share/seg_ros/config/sfnet_lite.yaml

Arguments: model, weights, params_file, backend, image, namespace, use_lifecycle, autostart,
input_compressed, log_level. ``model``, ``weights``, ``backend`` and ``input_compressed``
override the params file only when given on the command line: left out, the params file's
value (or the node's default) holds. With ``use_lifecycle:=true`` the managed variant starts
and, with ``autostart:=true`` (the default), is configured and activated by this launch file.
"""
from __future__ import annotations

from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node, PushRosNamespace
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

from launch import LaunchContext, LaunchDescription

PACKAGE = 'seg_ros'
NODE_NAME = 'segmentation_node'
DEFAULT_PARAMS = ('config', 'segmentation.yaml')
# Launch arguments that are also node parameters. Their default '' means "not given": the
# params file (or the node's default) decides. A launch default such as backend:=auto would
# otherwise override every params file's `backend:`.
NODE_PARAM_ARGUMENTS = ('model', 'weights', 'backend', 'input_compressed')
UNSET = ''
# Seconds from Ctrl-C (SIGINT) to launch's SIGTERM. Releasing a model (a TensorRT engine and its
# CUDA context, or torch) can take longer than launch's default 5 s; the node then exits
# cleanly instead of being killed. Any launch's own sigterm_timeout:=N still wins.
SIGTERM_TIMEOUT_S = '20'


def parameter_overrides(values: dict[str, str]) -> dict[str, str | bool]:
    """The node parameters given as launch arguments: ``{name: value}`` of the non-empty ones.

    ``input_compressed`` becomes a bool (the node declares it as one).

    Raises:
        ValueError: input_compressed that is not true/false.
    """
    out: dict[str, str | bool] = {}
    for name in NODE_PARAM_ARGUMENTS:
        value = values.get(name, UNSET).strip()
        if value == UNSET:
            continue
        if name == 'input_compressed':
            if value.lower() not in ('true', 'false'):
                raise ValueError(f'input_compressed must be true or false, got {value!r}')
            out[name] = value.lower() == 'true'
        else:
            out[name] = value
    return out


def _node(context: LaunchContext) -> list:
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    overrides = parameter_overrides({k: arg(k) for k in NODE_PARAM_ARGUMENTS})
    parameters: list = [arg('params_file')] + ([overrides] if overrides else [])
    image = arg('image')
    remappings = [('image', image), ('image/compressed', image + '/compressed')]
    # `arguments` rather than `ros_arguments`: the same on every ROS 2 release.
    ros_args = ['--ros-args', '--log-level', arg('log_level')]
    sigterm_timeout = LaunchConfiguration('sigterm_timeout', default=SIGTERM_TIMEOUT_S)
    common = dict(package=PACKAGE, name=NODE_NAME, parameters=parameters,
                  remappings=remappings, arguments=ros_args, output='screen', emulate_tty=True,
                  sigterm_timeout=sigterm_timeout)
    namespace = PushRosNamespace(arg('namespace'))
    if arg('use_lifecycle') != 'true':
        return [namespace, Node(executable='segmentation_node', **common)]
    managed = LifecycleNode(executable='segmentation_lifecycle_node', namespace='', **common)
    if arg('autostart') != 'true':
        return [namespace, managed]
    configure = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(managed),
                                            transition_id=Transition.TRANSITION_CONFIGURE))
    # Activate once configure succeeded (loading a model or building an engine takes a while).
    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=managed, goal_state='inactive',
        entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(managed),
                                              transition_id=Transition.TRANSITION_ACTIVATE))]))
    return [namespace, managed, activate, configure]


def generate_launch_description() -> LaunchDescription:
    """One segmentation node (plain or lifecycle) for one camera topic."""
    return LaunchDescription([
        DeclareLaunchArgument('model', default_value=UNSET,
                              description='ONNX / TensorRT engine / seg_ros checkpoint path, '
                              'package://seg_ros/..., or a registered model name (then give '
                              'weights); default: the params file model'),
        DeclareLaunchArgument('weights', default_value=UNSET,
                              description='checkpoint for a registered model name; default: '
                                          'the params file'),
        DeclareLaunchArgument('params_file', default_value=PathJoinSubstitution(
            [FindPackageShare(PACKAGE), *DEFAULT_PARAMS]),
            description='node parameter YAML (config/segmentation.yaml; per family: '
                        'regseg.yaml, sfnet_lite.yaml, '
                        'rtseg.yaml, eseg.yaml)'),
        DeclareLaunchArgument('backend', default_value=UNSET,
                              choices=[UNSET, 'auto', 'tensorrt', 'onnxruntime', 'torch'],
                              description='inference backend; default: the params file'),
        DeclareLaunchArgument('image', default_value='/camera/image_raw',
                              description='camera image topic (its /compressed sub-topic '
                                          'with input_compressed:=true)'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace of the node and its outputs'),
        DeclareLaunchArgument('use_lifecycle', default_value='false', choices=['true', 'false'],
                              description='start segmentation_lifecycle_node instead'),
        DeclareLaunchArgument('autostart', default_value='true', choices=['true', 'false'],
                              description='configure and activate the lifecycle node'),
        DeclareLaunchArgument('input_compressed', default_value=UNSET,
                              choices=[UNSET, 'true', 'false'],
                              description='subscribe to IMAGE/compressed (JPEG/PNG); '
                                          'default: the params file'),
        DeclareLaunchArgument('log_level', default_value='info',
                              description='node log level'),
        OpaqueFunction(function=_node),
    ])
