"""seg_ros.search."""
