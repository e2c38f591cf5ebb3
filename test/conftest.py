"""Shared pytest setup: an isolated ROS 2 domain, and skipping of GPU-only tests."""
from __future__ import annotations

from collections.abc import Iterator
import os
from pathlib import Path
import sys

import pytest

from seg_ros.testing.ros_env import ros_environment

ROOT = Path(__file__).resolve().parents[1]
EXPORT_SIZE = (64, 128)  # network size of the shared test exports (conftest `exports`)

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


@pytest.fixture(scope='session')
def exports(tmp_path_factory: pytest.TempPathFactory):
    """Export cache for the session: ``get(model, dynamic, fp16)`` -> default ONNX at 64x128.

    Exporting is the slow part of the graph tests (5-140 s per model on 2 cores, the dynamo
    tracer), so the TensorRT-rules and OpenVINO suites share one export per variant. Weights
    are random but seeded per model, so every suite sees the same network.
    """
    import logging

    import torch

    from seg_ros.runtime.export import export_onnx, load_model_and_meta

    root = tmp_path_factory.mktemp('exports')
    cache: dict[tuple[str, bool, bool], Path] = {}

    def get(name: str, dynamic: bool, fp16: bool) -> Path:
        key = (name, dynamic, fp16)
        if key not in cache:
            logging.getLogger('seg_ros').setLevel(logging.ERROR)  # random-weights warning
            torch.manual_seed(0)
            net, meta = load_model_and_meta(name, num_classes=19, input_size=EXPORT_SIZE)
            cache[key] = export_onnx(net, meta, root / f'{name}_{int(dynamic)}{int(fp16)}.onnx',
                                     size=EXPORT_SIZE, dynamic_batch=dynamic, fp16=fp16)
        return cache[key]
    return get
