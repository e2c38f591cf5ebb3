"""Shared pytest setup: an isolated ROS 2 domain, and skipping of GPU-only tests."""
from __future__ import annotations

from collections.abc import Iterator
import os
from pathlib import Path
import sys

import pytest

from seg_ros.testing.ros_env import ros_environment

ROOT = Path(__file__).resolve().parents[1]

# One random ROS_DOMAIN_ID and the large-message Fast DDS profile for this whole test run:
# set before any test imports rclpy, inherited by every subprocess the tests start.
os.environ.update(ros_environment())


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any('gpu' in item.keywords for item in items) and not _cuda_available():
        skip = pytest.mark.skip(reason='needs a CUDA GPU')
        for item in items:
            if 'gpu' in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope='session')
def repo_root() -> Path:
    """The repository root (for config/, launch/, models/)."""
    return ROOT


@pytest.fixture
def ros_env() -> dict[str, str]:
    """Environment for subprocesses that must share the test's ROS domain."""
    return dict(os.environ)


@pytest.fixture
def rclpy_context():
    """A fresh rclpy context for one test; shut down afterwards."""
    rclpy = pytest.importorskip('rclpy')
    context = rclpy.context.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        if context.ok():
            rclpy.shutdown(context=context)


@pytest.fixture
def python() -> str:
    """The interpreter running the tests (for subprocess nodes)."""
    return sys.executable


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run a test with one torch intra-op thread, restored afterwards.

    Small search models run ~100x faster on one thread than on two when the 2-core CI machine
    is loaded (OpenMP threads spin-wait on each other).
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
