"""An isolated ROS 2 environment for tests, benchmarks and the demo.

Every process started with :func:`ros_environment` talks on its own random ``ROS_DOMAIN_ID``
over the shipped Fast DDS profile (large shared-memory segment + loopback UDP), so runs on one
machine never see each other and 6 MB images arrive over best-effort QoS. The profile is named
in both variables Fast DDS reads: ``FASTRTPS_DEFAULT_PROFILES_FILE`` (Fast DDS 2.x: Humble,
Jazzy) and ``FASTDDS_DEFAULT_PROFILES_FILE`` (Fast DDS 3: Kilted and later); each release
ignores the other's.

:func:`ros2_launch_path` finds the real ``launch`` / ``launch_ros`` packages for the launch
tests: a ROS install, else the copies in ``../shared/ros2_launch``.
"""
from __future__ import annotations

import os
from pathlib import Path
import random

FASTDDS_PROFILE_NAME = 'fastdds_profile.xml'
# Fast DDS 2.x (Humble, Jazzy) reads the first, Fast DDS 3 (Kilted+) the second.
FASTDDS_PROFILE_VARIABLES: tuple[str, ...] = ('FASTRTPS_DEFAULT_PROFILES_FILE',
                                              'FASTDDS_DEFAULT_PROFILES_FILE')
LAUNCH_DISTROS: tuple[str, ...] = ('humble', 'jazzy')


def fastdds_profile_path() -> Path:
    """The shipped profile: from the source tree, else from the installed share folder."""
    source = Path(__file__).resolve().parents[2] / 'config' / FASTDDS_PROFILE_NAME
    if source.is_file():
        return source
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory('seg_ros')) / 'config' / FASTDDS_PROFILE_NAME
    except Exception as exc:  # not on an ament install either
        raise FileNotFoundError(f'cannot find {FASTDDS_PROFILE_NAME}') from exc


def ros_environment(domain_id: int | None = None,
                    base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables for an isolated local ROS 2 graph.

    Args:
        domain_id: ROS_DOMAIN_ID to use; random in 1..101 when None (the range whose DDS
            ports stay clear of Linux ephemeral ports).
        base: environment to extend (default: ``os.environ``).
    """
    env = dict(os.environ if base is None else base)
    env['ROS_DOMAIN_ID'] = str(domain_id if domain_id is not None else random.randint(1, 101))
    env['RMW_IMPLEMENTATION'] = 'rmw_fastrtps_cpp'
    for variable in FASTDDS_PROFILE_VARIABLES:
        env[variable] = str(fastdds_profile_path())
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'  # Jazzy+; Humble ignores it
    env['PYTHONUNBUFFERED'] = '1'
    return env


def ros2_launch_path(distro: str, repo_root: str | os.PathLike[str] | None = None,
                     ) -> list[Path] | None:
    """``PYTHONPATH`` entries that make ``launch`` / ``launch_ros`` of ``distro`` importable.

    Looks in ``$SEG_ROS_ROS2_LAUNCH``, then in ``shared/ros2_launch`` beside the repository
    (``<clone>/../shared``, where CI puts it) and under the repository. Each holds one folder
    per distro plus ``stubs/`` (see its README).

    Args:
        distro: ``humble`` or ``jazzy``.
        repo_root: the repository root (default: the source tree this module lies in).

    Returns:
        ``[<distro folder>, <stubs>]``, or None when no copy is found.
    """
    root = Path(repo_root) if repo_root is not None else Path(__file__).resolve().parents[2]
    candidates = [Path(p) for p in [os.environ.get('SEG_ROS_ROS2_LAUNCH', '')] if p]
    candidates += [root.parent / 'shared' / 'ros2_launch', root / 'shared' / 'ros2_launch']
    for base in candidates:
        if (base / distro / 'launch_ros').is_dir() and (base / 'stubs').is_dir():
            return [base / distro, base / 'stubs']
    return None


def ros2_launch_runner(repo_root: str | os.PathLike[str] | None = None) -> Path | None:
    """``run_launch.py`` of the ``shared/ros2_launch`` copy :func:`ros2_launch_path` uses."""
    paths = ros2_launch_path(LAUNCH_DISTROS[-1], repo_root)
    if paths is None:
        return None
    runner = paths[0].parent / 'run_launch.py'
    return runner if runner.is_file() else None
