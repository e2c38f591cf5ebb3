"""The network-side pipeline shared by the ONNX export and the torch backend.

``SegmentationPipeline(model, meta)`` wraps a segmentation network so that it takes raw frames
and returns what the host needs, with no float work left for the host::

    (N, H, W, 3) uint8 RGB -> Normalize -> model -> argmax -> (N, H, W) uint8 class ids
                                                  \\-> max softmax * 255 -> (N, H, W) uint8

Exported to ONNX it becomes the whole graph (so ONNX Runtime and TensorRT compute exactly what
the torch backend computes), and the torch backend runs the very same module.
"""
from __future__ import annotations

import torch
from torch import nn

from seg_ros.metadata import ModelMeta
from seg_ros.runtime.normalize import Normalize


class SegmentationPipeline(nn.Module):
    """uint8 NHWC RGB frames in, uint8 class ids (and optionally confidence) out.

    Args:
        model: network mapping (N, 3, H, W) float to (N, C, H, W) logits at input resolution.
        meta: weights metadata; its mean/std parameterise the normalisation.
        confidence: also return the max-softmax confidence map (uint8, 255 = certain).
    """

    def __init__(self, model: nn.Module, meta: ModelMeta, confidence: bool = True) -> None:
        super().__init__()
        self.normalize = Normalize(meta.mean, meta.std)
        self.model = model
        self.confidence = confidence
        self.num_classes = meta.num_classes

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Segment a batch.

        Args:
            images: (N, H, W, 3) uint8 RGB.

        Returns:
            ``(ids,)`` or ``(ids, confidence)``, each (N, H, W) uint8.
        """
        x = self.normalize(images)
        logits = self.model(x)
        # Reduce over classes once: the max gives both the argmax and, with the log-sum-exp
        # trick, the max softmax = 1 / sum(exp(logit - max)) without a full softmax tensor.
        top, ids = logits.max(dim=1)
        # Through float32: TensorRT converts to/from UINT8 only from/to FP32/FP16 (every
        # release's NvInferRuntimeBase.h DataType::kUINT8; the 8.5 Cast importer asserts it),
        # so an INT64 -> UINT8 Cast is refused. Class ids < 256 are exact in float32.
        ids_u8 = ids.to(torch.float32).to(torch.uint8)
        if not self.confidence:
            return (ids_u8,)
        denom = torch.exp(logits - top.unsqueeze(1)).sum(dim=1)
        # float32 for the last step so fp16 graphs round the same way as fp32 ones.
        conf = torch.round(255.0 / denom.float()).clamp(0, 255).to(torch.uint8)
        return ids_u8, conf
