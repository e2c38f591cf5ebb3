"""seg_ros.data."""
