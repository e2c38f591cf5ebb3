"""seg_ros.train."""
