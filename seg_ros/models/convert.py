"""Convert checkpoints of the official RegSeg and SFSegNets (SFNet / SFNet-Lite) code.

Accepted inputs (see ``shared/reference/README.md`` for the official layouts):

* a raw state_dict, or a dict wrapping it under ``'model'`` (RegSeg ``train.py``) or
  ``'state_dict'`` (SFSegNets ``utils/misc.py``), with or without ``module.`` prefixes
  (DataParallel / DDP);
* RegSeg ``exp48_decoder26`` (-> ``regseg48``; keys are identical to ours);
* SFNet-Lite R18 / STDC1 / STDC2 and the original SFNet R18 (``--model sfnet_r18``): the
  ResNet ``layer0..4`` keys move under ``backbone.``; the STDC ``backbone.x2..x32`` aliases
  (duplicates of ``backbone.features``) and the dead tensors (STDC ImageNet classifier
  ``backbone.conv_last/fc/bn/linear``, the never-applied ``head.dsn``, the unused R18
  ``head.fpn_in.2``) are dropped.

Every tensor our model needs must be present with the right shape, and every tensor of the
checkpoint must be either used or known dead; anything else is a :class:`SegRosError` naming
the keys, so a wrong file or a wrong ``--model`` never loads silently.
"""
from __future__ import annotations

from collections.abc import Mapping
import os
from pathlib import Path
import re
from typing import Any

import torch

from seg_ros.errors import SegRosError, first_line, strip_ansi

__all__ = ['FAMILIES', 'load_official_state_dict', 'unwrap_state_dict', 'detect_model',
           'map_official_keys', 'convert_state_dict', 'convert_official']

FAMILIES = ('regseg', 'sfnet-lite')
_FAMILY_MODELS = {
    'regseg': ('regseg48', 'regseg_dnas'),
    'sfnet-lite': ('sfnet_lite_r18', 'sfnet_lite_stdc1', 'sfnet_lite_stdc2', 'sfnet_r18'),
}
# Official tensors that never take part in the eval forward.
_DEAD_SFNET = re.compile(
    r'^(backbone\.x(2|4|8|16|32)\.|backbone\.(conv_last|fc|bn|linear)\.|head\.dsn\.)')
_DEAD_R18_LITE = re.compile(r'^head\.fpn_in\.2\.')
_CLASSIFIER_KEYS = ('decoder.classifier.weight', 'head.conv_last.1.weight')


def numpy_safe_globals() -> list[Any]:
    """The numpy globals an official checkpoint's side data needs under ``weights_only=True``.

    SFSegNets' ``utils/misc.py`` stores ``mean_iu = np.nanmean(iu)``: a numpy scalar, pickled
    as ``numpy._core.multiarray.scalar(dtype, bytes)`` with a ``numpy.dtype`` (numpy 2: one
    class per dtype, e.g. ``numpy.dtypes.Float64DType``). These rebuild a number from raw
    bytes and run no code; arrays (``ndarray``, ``_reconstruct``) and everything else stay
    refused.
    """
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    dtype_classes = {type(np.dtype(code)) for code in '?bBhHiIlLqQefdgFDG'}
    return [scalar, np.dtype, *sorted(dtype_classes, key=lambda t: t.__name__)]


_UNSAFE_GLOBAL = re.compile(r'Unsupported global: GLOBAL ([\w.]+)')


def _load_error(path: Path, exc: Exception) -> SegRosError:
    """One line naming what ``weights_only=True`` refused (torch's text is many lines with
    terminal colour codes)."""
    text = strip_ansi(str(exc))
    refused = _UNSAFE_GLOBAL.search(text)
    if refused:
        return SegRosError(
            f'{path}: torch.load(weights_only=True) refused the global {refused.group(1)} '
            f'stored in the checkpoint (only tensors, builtins and numpy scalars are '
            f'allowed, so no code runs); if you trust the file, re-save just its weights: '
            f'torch.save(ckpt["state_dict"], "weights.pth")')
    first = first_line(text)
    return SegRosError(f'{path}: cannot be read as a PyTorch checkpoint with '
                       f'weights_only=True ({type(exc).__name__}: {first})')


def load_official_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """``torch.load`` an official checkpoint (``weights_only=True``, numpy scalars allowed as
    :func:`numpy_safe_globals` lists) and unwrap its state_dict."""
    path = Path(path)
    if not path.is_file():
        raise SegRosError(f'checkpoint not found: {path}')
    try:
        with torch.serialization.safe_globals(numpy_safe_globals()):
            data = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # torch raises many exception types for foreign files
        raise _load_error(path, exc) from None
    return unwrap_state_dict(data, str(path))


def unwrap_state_dict(data: Any, source: str = 'checkpoint') -> dict[str, torch.Tensor]:
    """Return the tensor dict inside ``data`` (raw, ``'model'`` or ``'state_dict'``), with
    ``module.`` prefixes removed."""
    if not isinstance(data, Mapping):
        raise SegRosError(f'{source}: expected a dict, got {type(data).__name__}')
    for key in ('model', 'state_dict'):
        inner = data.get(key)
        if isinstance(inner, Mapping) and inner and all(
                isinstance(v, torch.Tensor) for v in inner.values()):
            data = inner
            break
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise SegRosError(f'{source}: no tensors found (expected a state_dict, or one under '
                          f"'model' or 'state_dict'; top-level keys: {sorted(data)[:8]})")
    out: dict[str, torch.Tensor] = {}
    for k, v in tensors.items():
        while k.startswith('module.'):
            k = k[len('module.'):]
        out[k] = v
    return out


def detect_model(family: str, state: Mapping[str, torch.Tensor]) -> str:
    """Guess our model name for an official state_dict of ``family``."""
    if family not in FAMILIES:
        raise SegRosError(f'unknown family {family!r}; valid: {", ".join(FAMILIES)}')
    if family == 'regseg':
        return 'regseg48'
    if 'layer0.0.0.weight' in state:
        return 'sfnet_r18' if any(k.startswith('head.fpn_out_align.') for k in state) \
            else 'sfnet_lite_r18'
    idx = [int(m.group(1)) for k in state
           if (m := re.match(r'backbone\.features\.(\d+)\.', k))]
    if not idx:
        raise SegRosError('not an SFNet checkpoint: neither ResNet keys (layer0.*) nor STDC '
                          'keys (backbone.features.*) found')
    n = max(idx) + 1
    if n == 8:
        return 'sfnet_lite_stdc1'
    if n == 14:
        return 'sfnet_lite_stdc2'
    raise SegRosError(f'STDC backbone with {n} feature blocks: not STDC1 (8) or STDC2 (14)')


def map_official_keys(model_name: str, state: Mapping[str, torch.Tensor]
                      ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename official keys to ours and drop the dead ones.

    Returns:
        (mapped state_dict, list of dropped official keys).
    """
    if model_name.startswith('regseg'):
        return dict(state), []
    mapped: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for k, v in state.items():
        if _DEAD_SFNET.match(k) or (model_name == 'sfnet_lite_r18' and _DEAD_R18_LITE.match(k)):
            dropped.append(k)
        elif re.match(r'layer[0-4]\.', k):
            mapped['backbone.' + k] = v
        else:
            mapped[k] = v
    return mapped, dropped


def infer_num_classes(state: Mapping[str, torch.Tensor]) -> int:
    """Number of classes from the classifier weight of an official state_dict."""
    for key in _CLASSIFIER_KEYS:
        if key in state:
            return int(state[key].shape[0])
    raise SegRosError(f'no classifier weight found (looked for {", ".join(_CLASSIFIER_KEYS)})')


def convert_state_dict(family: str, state: Mapping[str, torch.Tensor],
                       model_name: str | None = None) -> tuple[torch.nn.Module, list[str]]:
    """Build our model and load an official state_dict into it, strictly.

    Args:
        family: 'regseg' or 'sfnet-lite'.
        state: official state_dict (already unwrapped, ``module.`` stripped).
        model_name: our model name; detected from the keys if None.

    Returns:
        (eval-mode model holding the official weights, dropped official keys).

    Raises:
        SegRosError: missing, unexpected or mis-shaped tensors, or a model of another family.
    """
    from seg_ros.models import create_model

    if family not in FAMILIES:
        raise SegRosError(f'unknown family {family!r}; valid: {", ".join(FAMILIES)}')
    name = model_name or detect_model(family, state)
    if name not in _FAMILY_MODELS[family]:
        raise SegRosError(f'model {name!r} is not in family {family!r} '
                          f'(valid: {", ".join(_FAMILY_MODELS[family])})')
    mapped, dropped = map_official_keys(name, state)
    model = create_model(name, num_classes=infer_num_classes(state))
    ours = model.state_dict()
    missing = [k for k in ours if k not in mapped]
    unexpected = [k for k in mapped if k not in ours]
    bad_shape = [f'{k}: checkpoint {tuple(mapped[k].shape)} vs model {tuple(ours[k].shape)}'
                 for k in ours if k in mapped and mapped[k].shape != ours[k].shape]
    problems = []
    if missing:
        problems.append(f'{len(missing)} missing tensors (e.g. {", ".join(missing[:4])})')
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected tensors (e.g. '
                        f'{", ".join(unexpected[:4])})')
    if bad_shape:
        problems.append(f'{len(bad_shape)} mis-shaped tensors ({"; ".join(bad_shape[:3])})')
    if problems:
        raise SegRosError(f'checkpoint does not match {name}: ' + '; '.join(problems))
    model.load_state_dict({k: mapped[k] for k in ours}, strict=True)
    return model.eval(), dropped


def convert_official(family: str, ckpt: str | os.PathLike[str], out: str | os.PathLike[str],
                     model_name: str | None = None, dataset: str = 'cityscapes',
                     input_size: tuple[int, int] = (1024, 2048)) -> dict[str, Any]:
    """Convert an official checkpoint file into a seg_ros checkpoint.

    Args:
        family: 'regseg' or 'sfnet-lite'.
        ckpt: official checkpoint path.
        out: destination (written atomically).
        model_name: our model name (detected if None).
        dataset: class set of the weights ('cityscapes' or 'camvid').
        input_size: (H, W) the weights were trained/evaluated at, stored in the metadata.

    Returns:
        Summary dict: model, num_classes, tensors, dropped keys, output path.
    """
    from seg_ros.metadata import ModelMeta
    from seg_ros.models.checkpoint import save_checkpoint

    state = load_official_state_dict(ckpt)
    model, dropped = convert_state_dict(family, state, model_name)
    name = model_name or detect_model(family, state)
    meta = ModelMeta.for_dataset(name, dataset, input_size=list(input_size))
    n_cls = model.state_dict()[next(k for k in _CLASSIFIER_KEYS
                                    if k in model.state_dict())].shape[0]
    if meta.num_classes != n_cls:
        raise SegRosError(f'checkpoint has {n_cls} classes but {dataset} has '
                          f'{meta.num_classes}; pass the matching --dataset')
    save_checkpoint(out, model, meta, extra={'converted_from': str(ckpt), 'family': family})
    return {'model': name, 'num_classes': int(n_cls), 'tensors': len(model.state_dict()),
            'dropped': dropped, 'out': str(out)}
