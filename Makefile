# seg_ros developer entry points. `make demo` and `make test` work on a fresh clone:
# they create .venv and install every pinned dependency first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.seg_ros_installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup test lint typecheck pytest demo clean

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

lint: setup
	$(BIN)/ruff check seg_ros test launch benchmarks setup.py

typecheck: setup
	$(BIN)/python -m seg_ros.runtime.typecheck

pytest: setup
	$(BIN)/python -m pytest

test: lint typecheck pytest

demo: setup
	$(BIN)/seg-ros demo

clean:
	rm -rf $(VENV) build *.egg-info demo_out .pytest_cache
