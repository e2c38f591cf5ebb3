"""Inference runtime: one segmentation pipeline over TensorRT, ONNX Runtime and PyTorch."""
