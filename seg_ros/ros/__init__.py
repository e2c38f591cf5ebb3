"""The ROS 2 room: the segmentation node, its lifecycle variant, parameters and diagnostics.

Everything here needs rclpy; the rooms below (runtime, models, data, eval, bag) do not.
"""
