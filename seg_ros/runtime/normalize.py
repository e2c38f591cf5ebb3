"""The one input normalisation: uint8 NHWC RGB in, float NCHW normalised out.

Training, the torch backend and the exported ONNX graph all run this module, so pixels are
normalised the same way everywhere (and the ONNX graph takes raw uint8 frames).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float ``(x / 255 - mean) / std``.

    Args:
        mean: RGB mean on [0, 1] images.
        std: RGB std on [0, 1] images.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1)
        std_t = torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1)
        # Folded into one multiply-add: x * scale + shift.
        self.register_buffer('scale', 1.0 / (255.0 * std_t), persistent=False)
        self.register_buffer('shift', -mean_t / std_t, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # Cast before anything else: TensorRT accepts UINT8 only as a network input or output
        # (NvInferRuntimeBase.h DataType::kUINT8; onnx-tensorrt ModelImporter.cpp rejects a
        # UINT8 intermediate tensor), so the graph input may feed nothing but this Cast. A
        # permute first would make a UINT8 Transpose (refused at node 0 by every TensorRT).
        x = images.to(self.scale.dtype).permute(0, 3, 1, 2)
        return x * self.scale + self.shift
