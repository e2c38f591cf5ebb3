"""Helpers for tests and benchmarks that run real ROS 2 processes on one machine."""
