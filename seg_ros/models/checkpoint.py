"""seg_ros checkpoint format: model name + weights metadata + state_dict in one file.

A checkpoint is a plain dict (loadable with ``torch.load(weights_only=True)``)::

    {'format': 'seg_ros.checkpoint/1', 'meta': ModelMeta.to_dict(),
     'state_dict': {...}, 'extra': {...}}

``extra`` holds optional training state (optimizer, scheduler, epoch, ...). Files are written
atomically: a temporary file in the same folder, fsync, then ``os.replace``, so a crash while
writing leaves the previous checkpoint intact.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seg_ros.errors import SegRosError
from seg_ros.fileio import atomic_write
from seg_ros.metadata import ModelMeta

FORMAT = 'seg_ros.checkpoint/1'


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to a temp file beside ``path``, fsync, then rename over ``path``."""
    atomic_write(path, lambda f: torch.save(obj, f))


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module | dict[str, torch.Tensor],
                    meta: ModelMeta, extra: dict[str, Any] | None = None) -> None:
    """Write a seg_ros checkpoint atomically.

    Args:
        path: destination file.
        model: the model (its ``state_dict`` is saved) or a state_dict.
        meta: weights metadata (classes, palette, normalisation, input size, arch overrides).
        extra: optional training state made of tensors and builtins.
    """
    state = model.state_dict() if isinstance(model, nn.Module) else model
    # DDP / torch.compile wrappers prefix keys; store clean names.
    state = {_strip_prefix(k): v.detach().cpu() for k, v in state.items()}
    atomic_torch_save({'format': FORMAT, 'meta': meta.to_dict(), 'state_dict': state,
                       'extra': extra or {}}, path)


def _strip_prefix(key: str) -> str:
    for prefix in ('module.', '_orig_mod.'):
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a seg_ros checkpoint with ``weights_only=True``.

    Returns:
        dict with ``meta`` (:class:`ModelMeta`), ``state_dict`` and ``extra``.
    """
    path = Path(path)
    if not path.is_file():
        raise SegRosError(f'checkpoint not found: {path}')
    try:
        data = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise SegRosError(f'{path}: not a readable checkpoint ({type(exc).__name__}: '
                          f'{str(exc).splitlines()[0] if str(exc) else ""})') from exc
    if not isinstance(data, dict) or data.get('format') != FORMAT:
        raise SegRosError(f'{path}: not a seg_ros checkpoint (for official RegSeg/SFNet-Lite '
                          f'weights run `seg-ros convert-official` first)')
    return {'meta': ModelMeta.from_dict(data['meta']), 'state_dict': data['state_dict'],
            'extra': data.get('extra', {})}


def model_from_checkpoint(path: str | os.PathLike[str]) -> tuple[nn.Module, ModelMeta]:
    """Rebuild the eval-mode model stored in a checkpoint."""
    from seg_ros.models import create_model

    ckpt = load_checkpoint(path)
    meta: ModelMeta = ckpt['meta']
    model = create_model(meta.model, num_classes=meta.num_classes, **meta.arch)
    missing, unexpected = model.load_state_dict(ckpt['state_dict'], strict=False)
    if missing or unexpected:
        raise SegRosError(f'{path}: weights do not fit {meta.model}: missing {missing[:3]}, '
                          f'unexpected {unexpected[:3]}')
    return model.eval(), meta
