"""``multi_camera_segmentation_lifecycle_node``: the multi-camera node as a managed node.

The transitions are those of ``segmentation_lifecycle_node``
(:mod:`seg_ros.ros.lifecycle_node`): configure loads the model for a batch of every camera
and creates the per-camera publishers, activate subscribes to every camera and starts the
batching worker, deactivate stops both, cleanup frees the model. Load-time parameters
(``cameras``, ``image_topics``, ``batch_trigger`` ...) can be set while unconfigured.
"""
from __future__ import annotations

import sys
from typing import Any

from seg_ros.ros.lifecycle_node import SegmentationLifecycleNode
from seg_ros.ros.multicam_node import NODE_NAME, MultiCameraPipeline
from seg_ros.ros.node import run


class MultiCameraLifecycleNode(SegmentationLifecycleNode):
    """Managed multi-camera segmentation node; starts unconfigured."""

    pipeline_class = MultiCameraPipeline

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``multi_camera_segmentation_lifecycle_node``."""
    return run(MultiCameraLifecycleNode, args)


if __name__ == '__main__':
    sys.exit(main())
