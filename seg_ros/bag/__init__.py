"""seg_ros.bag."""
