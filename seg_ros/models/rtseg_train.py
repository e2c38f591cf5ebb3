"""Training-only parts of RTSeg: the auxiliary segmentation heads ("performance boosters").

Paper (``shared/papers/rtseg.txt``, "Performance Boosters"): "We plug several auxiliary
segmentation heads after each downsampling stage of the semantic branch and compute the
auxiliary loss with the ground truth label", weighted by gamma = 1.0 (Eq. 12), and the
supernet's output distils into both the main output and the auxiliary heads (Eq. 10-12; the
KL loss itself is the training engineer's). The positions follow BiSeNetV2 (which RTSeg builds
on): after the stem (H/4) and after each of the three segment stages (H/8, H/16, H/32).

Kept out of :mod:`seg_ros.models.rtseg` so that the eval model, its parameter count, its
``state_dict`` and the ONNX export never contain them. The wrapped model's parameter names are
unchanged under the ``model.`` prefix; :meth:`RTSegTrain.eval_state_dict` returns exactly the
eval model's ``state_dict``.
"""
from __future__ import annotations

import torch
from torch import nn

from seg_ros.models.blocks import ConvBnAct, resize_to
from seg_ros.models.rtseg import RTSeg

__all__ = ['AuxHead', 'RTSegTrain']


class AuxHead(nn.Module):
    """conv3x3-BN-ReLU, dropout, conv1x1 to classes, bilinear to the label size."""

    def __init__(self, cin: int, hidden: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv = ConvBnAct(cin, hidden, 3)
        self.drop = nn.Dropout(dropout)
        self.cls = nn.Conv2d(hidden, num_classes, 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
        return resize_to(self.cls(self.drop(self.conv(x))), size)


class RTSegTrain(nn.Module):
    """RTSeg plus auxiliary heads for training.

    Args:
        model: the eval model (any RTSeg configuration: supernet or subnet).
        hidden: width of every auxiliary head (BiSeNetV2 uses 128).

    ``forward(x)`` returns ``(logits, [aux logits stem, stage H/8, H/16, H/32])``, all at the
    input resolution.
    """

    def __init__(self, model: RTSeg, hidden: int = 128) -> None:
        super().__init__()
        if not isinstance(model, RTSeg):
            raise TypeError(f'RTSegTrain wraps an RTSeg model, got {type(model).__name__}')
        self.model = model
        cfg = model.cfg
        widths = [cfg.stem] + [st.channels for st in cfg.stages]
        self.aux = nn.ModuleList(AuxHead(c, hidden, cfg.num_classes, cfg.dropout)
                                 for c in widths)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        size = x.shape[-2:]
        feat, seg_feats = self.model.forward_features(x)
        logits = resize_to(self.model.decoder(feat), size)
        aux = [head(f, size) for head, f in zip(self.aux, seg_feats)]
        return logits, aux

    def eval_state_dict(self) -> dict[str, torch.Tensor]:
        """The wrapped eval model's ``state_dict`` (no auxiliary heads), for checkpoints."""
        return self.model.state_dict()
