"""``segmentation_lifecycle_node``: the segmentation node as a managed (lifecycle) node.

Transitions (``ros2 lifecycle set /segmentation_node configure`` etc.):

* configure: read the parameters, load the model and build or load the TensorRT engine,
  create the publishers; failure (missing model file, foreign engine ...) is logged with its
  reason and leaves the node unconfigured.
* activate: subscribe to the camera, start the worker, publish ``~/class_names``.
* deactivate: unsubscribe and stop the worker (no output while inactive; ``/diagnostics``
  keeps reporting the state).
* cleanup: destroy the publishers and free the model and cached GPU memory.
* shutdown: whatever is needed of the above, from any state.

Load-time parameters (model, backend, ``qos_*`` ...) can be set while unconfigured and are
refused with a reason once configured; the run-time ones work in every state.
"""
from __future__ import annotations

import sys
from typing import Any

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from seg_ros.errors import SegRosError
from seg_ros.ros.node import NODE_NAME, SegmentationPipeline, run


class SegmentationLifecycleNode(LifecycleNode):
    """Managed segmentation node; starts unconfigured.

    ``pipeline_class`` is what the transitions drive (the multi-camera variant sets its own).
    """

    pipeline_class: type[SegmentationPipeline] = SegmentationPipeline

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.pipeline = self.pipeline_class(self, lifecycle=True)
        self.add_on_set_parameters_callback(self.pipeline.on_set_parameters)
        self.pipeline.declare_parameters(read_only_load_time=False)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model and create the publishers."""
        try:
            self.pipeline.load()
        except SegRosError as exc:
            self.get_logger().error(f'configure failed: {exc}')
            return TransitionCallbackReturn.FAILURE
        self.pipeline.create_publishers()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Activate the publishers, then subscribe and start the worker."""
        result = super().on_activate(state)
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        self.pipeline.activate()
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the worker and unsubscribe, then deactivate the publishers."""
        self.pipeline.deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Destroy the publishers and free the model."""
        self.pipeline.destroy_publishers()
        self.pipeline.unload()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything, from whichever state the node is in."""
        self.shutdown()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything and go back to unconfigured."""
        self.get_logger().error(f'error in state {state.label}; releasing the model')
        self.shutdown()
        return TransitionCallbackReturn.SUCCESS

    def shutdown(self) -> None:
        """Stop and free whatever is running (idempotent); also used by ``run``."""
        if self.pipeline.active or self.pipeline.worker is not None:
            self.pipeline.deactivate()
        if self.pipeline.pubs:
            self.pipeline.destroy_publishers()
        if self.pipeline.seg is not None:
            self.pipeline.unload()


def main(args: list[str] | None = None) -> int:
    """Entry point of ``segmentation_lifecycle_node``."""
    return run(SegmentationLifecycleNode, args)


if __name__ == '__main__':
    sys.exit(main())
