"""Evaluation: the one confusion-matrix implementation, mIoU, and the eval command."""
