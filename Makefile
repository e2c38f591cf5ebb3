# seg_ros developer entry points. `make demo` and `make test` work on a fresh clone:
# they create .venv (and, for `make test`, the robot-minimal .venv-jazzy) and install every
# pinned dependency first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.seg_ros_installed
# The robot-minimal install on ROS 2 Jazzy (Fast DDS 2.14): onnxruntime, numpy, OpenCV, PyYAML,
# rclpy and messages; no torch, no onnx (requirements-jazzy.txt).
JVENV := .venv-jazzy
JBIN := $(JVENV)/bin
JSTAMP := $(JVENV)/.seg_ros_installed
# An ONNX model exported in .venv (the robot venv cannot export) for the robot-minimal tests.
TEST_ONNX := build/test_models/regseg48_64x128.onnx
ROBOT_TESTS := test/test_launch_files.py test/test_launch_run.py test/test_robot_minimal.py \
	test/test_multicam_launch.py \
	test/test_ros_transport.py
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup setup-jazzy test test-exhaustive lint typecheck pytest pytest-jazzy demo clean

setup: $(STAMP)

# Re-runs only when the requirements or the package metadata change.
$(STAMP): requirements.txt setup.py setup.cfg Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# pip's warnings about this machine's local index go to the log; failures still stop make.
	$(BIN)/pip install -q -r requirements.txt 2>$(VENV)/pip.log || { cat $(VENV)/pip.log; exit 1; }
	$(BIN)/python -c 'import torch, onnxruntime, rclpy, rosbags, cv2' # fail here if an install failed
	# TensorRT type stubs for `make typecheck` (no deps: their dependency is TensorRT itself)
	$(BIN)/pip install -q --no-deps tensorrt-stubs==10.13.0.35.1
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup-jazzy: $(JSTAMP)

$(JSTAMP): requirements-jazzy.txt Makefile
	test -x $(JBIN)/python || $(PYTHON) -m venv $(JVENV)
	$(JBIN)/pip install -q -r requirements-jazzy.txt 2>$(JVENV)/pip.log || { cat $(JVENV)/pip.log; exit 1; }
	$(JBIN)/python -c 'import rclpy, onnxruntime, cv2, yaml, osrf_pycommon, colcon_core'
	# robot-minimal: the tests there prove the node needs neither
	! $(JBIN)/python -c 'import torch' 2>/dev/null
	! $(JBIN)/python -c 'import onnx' 2>/dev/null
	touch $(JSTAMP)

$(TEST_ONNX): $(STAMP) models/regseg48_synthetic.pt
	mkdir -p $(dir $@)
	$(BIN)/seg-ros export models/regseg48_synthetic.pt --size 64x128 --out $@ --overwrite

lint: setup
	$(BIN)/ruff check seg_ros test launch benchmarks setup.py

typecheck: setup
	$(BIN)/python -m seg_ros.runtime.typecheck

# The Kilted venv: the whole suite (the launch files run with Jazzy's launch on Kilted rclpy).
pytest: setup
	$(BIN)/python -m pytest --durations=15

# The robot-minimal Jazzy venv: colcon build, the launch files with Humble's and Jazzy's
# launch, the node and lifecycle node serving ONNX, large frames over Fast DDS 2.14.
# `python -m pytest` runs seg_ros from this checkout (no install into the robot venv).
pytest-jazzy: setup-jazzy $(TEST_ONNX)
	SEG_ROS_TEST_ONNX=$(abspath $(TEST_ONNX)) SEG_ROS_LAUNCH_DISTROS=humble,jazzy \
		$(JBIN)/python -m pytest $(ROBOT_TESTS)

test: lint typecheck pytest pytest-jazzy

# The rest of the model grids that `make test` samples with one model per paper: every
# registered model's exports against the TensorRT parser rules (static fp32 and dynamic fp16)
# and OpenVINO vs ONNX Runtime: about 30 minutes on 2 cores.
test-exhaustive: setup
	$(BIN)/python -m pytest -m exhaustive

# --overwrite: a second `make demo` replaces the demo_out/ of the first (only a folder the
# demo wrote; seg-ros demo refuses to write over anything else)
demo: setup
	$(BIN)/seg-ros demo --overwrite

clean:
	rm -rf $(VENV) $(JVENV) build *.egg-info demo_out .pytest_cache
