"""seg_ros checkpoint format: model name + weights metadata + state_dict in one file.

A checkpoint is a plain dict (loadable with ``torch.load(weights_only=True)``)::

    {'format': 'seg_ros.checkpoint/1', 'meta': ModelMeta.to_dict(),
     'state_dict': {...}, 'extra': {...}}

``extra`` holds optional training state (optimizer, scheduler, epoch, ...). Files are written
atomically: a temporary file in the same folder, fsync, then ``os.replace``, so a crash while
writing leaves the previous checkpoint intact.
"""
from __future__ import annotations

from collections.abc import Mapping
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seg_ros.errors import SegRosError, first_line
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
    """Load a seg_ros checkpoint with ``weights_only=True`` and check its structure.

    Returns:
        dict with ``meta`` (:class:`ModelMeta`), ``state_dict`` and ``extra``.

    Raises:
        SegRosError: missing or unreadable file, not a seg_ros checkpoint, or metadata /
            state_dict / extra of the wrong type (the message names the field).
    """
    path = Path(path)
    if not path.is_file():
        raise SegRosError(f'checkpoint not found: {path}')
    if path.suffix.lower() in ('.onnx', '.engine', '.plan'):
        raise SegRosError(f'{path}: an exported model, not a checkpoint; this needs the .pt '
                          'checkpoint it was exported from (or a registered model name)')
    try:
        data = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        why = first_line(exc)
        if 'weights_only' in why:  # torch's advice to unpickle untrusted code: not for users
            why = 'holds objects other than tensors, or is not a torch file'
        raise SegRosError(f'{path}: not a readable checkpoint ({why})') from None
    if not isinstance(data, dict) or data.get('format') != FORMAT:
        raise SegRosError(f'{path}: not a seg_ros checkpoint (for official RegSeg/SFNet-Lite '
                          f'weights run `seg-ros convert-official` first)')
    if 'meta' not in data:
        raise SegRosError(f'{path}: damaged checkpoint: no "meta" entry')
    try:
        meta = ModelMeta.from_dict(data['meta'])
    except SegRosError as exc:
        raise SegRosError(f'{path}: bad metadata: {exc}') from None
    state = data.get('state_dict')
    if not isinstance(state, Mapping) or not state:
        raise SegRosError(f'{path}: damaged checkpoint: "state_dict" must be a non-empty '
                          f'mapping of tensors, got {type(state).__name__}')
    bad = [str(k) for k, v in state.items()
           if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise SegRosError(f'{path}: damaged checkpoint: {len(bad)} state_dict entries are not '
                          f'named tensors (e.g. {", ".join(bad[:3])})')
    extra = data.get('extra', {})
    if extra is None:
        extra = {}
    if not isinstance(extra, dict):
        raise SegRosError(f'{path}: damaged checkpoint: "extra" must be a mapping, got '
                          f'{type(extra).__name__}')
    return {'meta': meta, 'state_dict': dict(state), 'extra': extra}


def restamp_checkpoint(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                       input_size: tuple[int, int]) -> ModelMeta:
    """Copy a checkpoint with another serving size in its metadata; the weights are unchanged.

    The size a checkpoint stores is the default network input of everything that runs it (the
    node, ``eval``, ``export``). A fully convolutional model trained on crops runs at other
    sizes too; this records a size chosen after training (e.g. on validation frames) so that
    the file runs at it with no option.

    Args:
        src: seg_ros checkpoint to read.
        dst: checkpoint to write (atomically; may be ``src``).
        input_size: (height, width) to store.

    Returns:
        The metadata written.

    Raises:
        SegRosError: ``src`` is not a readable seg_ros checkpoint, or the size is not two
            sides within ModelMeta's range.
    """
    data = load_checkpoint(src)
    # ModelMeta checks the size (two integer sides within range) like every other field
    meta = ModelMeta.from_dict({**data['meta'].to_dict(), 'input_size': list(input_size)})
    atomic_torch_save({'format': FORMAT, 'meta': meta.to_dict(), 'state_dict': data['state_dict'],
                       'extra': data['extra']}, dst)
    return meta


def build_model(meta: ModelMeta, state_dict: Mapping[str, torch.Tensor],
                source: str | os.PathLike[str] = 'checkpoint') -> nn.Module:
    """The eval-mode model ``meta`` describes, holding ``state_dict``.

    Args:
        meta: weights metadata (model name, classes, ``arch`` overrides).
        state_dict: the weights (every tensor must fit the model).
        source: file name for the error messages.

    Raises:
        SegRosError: ``meta.arch`` holds keywords or values the architecture does not take,
            or the weights do not fit it (missing, unexpected or mis-shaped tensors).
    """
    from seg_ros.models import create_model

    try:
        model = create_model(meta.model, num_classes=meta.num_classes, **meta.arch)
    except SegRosError as exc:
        raise SegRosError(f'{source}: {exc}') from None
    except Exception as exc:  # the architecture's config refuses the overrides
        raise SegRosError(f'{source}: metadata "arch" {sorted(meta.arch)} does not fit '
                          f'{meta.model} ({type(exc).__name__}: {first_line(exc)})') from None
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except Exception as exc:  # size mismatches are a RuntimeError listing every tensor
        raise SegRosError(f'{source}: weights do not fit {meta.model} '
                          f'({first_line(exc)} {_shape_hint(exc)})'.rstrip()) from None
    if missing or unexpected:
        raise SegRosError(f'{source}: weights do not fit {meta.model}: missing {missing[:3]}, '
                          f'unexpected {unexpected[:3]}')
    return model.eval()


def _shape_hint(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if 'size mismatch' in line]
    return f'{lines[0]}, ...' if lines else ''


def model_from_checkpoint(path: str | os.PathLike[str]) -> tuple[nn.Module, ModelMeta]:
    """Rebuild the eval-mode model stored in a checkpoint."""
    ckpt = load_checkpoint(path)
    meta: ModelMeta = ckpt['meta']
    return build_model(meta, ckpt['state_dict'], path), meta
