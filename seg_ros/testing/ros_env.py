"""An isolated ROS 2 environment for tests, benchmarks and the demo.

Every process started with :func:`ros_environment` talks on its own random ``ROS_DOMAIN_ID``
over the shipped Fast DDS profile (large shared-memory segment + loopback UDP), so runs on one
machine never see each other and 6 MB images arrive over best-effort QoS.
"""
from __future__ import annotations

import os
from pathlib import Path
import random

FASTDDS_PROFILE_NAME = 'fastdds_profile.xml'


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
    env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(fastdds_profile_path())
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'  # Jazzy+; Humble ignores it
    env['PYTHONUNBUFFERED'] = '1'
    return env
