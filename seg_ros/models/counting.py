"""Parameter and multiply-accumulate counts of a model's eval forward.

Definitions (issue 3):

* **MACs** = multiply-accumulates of every ``nn.Conv2d`` and ``nn.Linear`` call (bias and
  BN/activation/upsampling excluded), plus whatever a module reports through an
  ``extra_macs(self, inputs, output) -> int`` method (attention matmuls), batch 1.
  This equals the "conv+lin" column of ``shared/reference/README.md``; RegSeg's "39.1 GFLOPs"
  additionally counts BN, upsampling and pooling the fvcore way (38.35 G conv MACs).
* **params** = parameters of the modules that actually run in the eval forward (dead heads,
  unused classifier tails and training-only modules are not counted). Shared tensors count once.

The counting forward runs on the ``meta`` device (shapes only, no arithmetic), so a count at
1024x2048 is instant; models that cannot run on ``meta`` fall back to a real CPU forward.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ['count_macs', 'count_params', 'count', 'conv_macs']


def conv_macs(module: nn.Conv2d, output: torch.Tensor) -> int:
    """MACs of one Conv2d call for batch 1 of ``output``."""
    per_out = (module.in_channels // module.groups) * module.kernel_size[0] \
        * module.kernel_size[1]
    return int(output[0].numel()) * per_out


def _macs_hook(counter: list[int]) -> Any:
    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if isinstance(module, nn.Conv2d):
            counter[0] += conv_macs(module, output)
        elif isinstance(module, nn.Linear):
            # Leading dims are (batch, tokens...): count one sample.
            n = output.numel() // output.shape[0] if output.dim() > 1 else output.numel()
            counter[0] += int(n) * module.in_features
        extra = getattr(module, 'extra_macs', None)
        if callable(extra):
            counter[0] += int(extra(inputs, output))
    return hook


def _meta_copy(model: nn.Module) -> nn.Module:
    # Deep-copying the structure without data: replace tensors by meta tensors of the same shape.
    memo: dict[int, Any] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        meta = torch.empty_like(t, device='meta')
        memo[id(t)] = nn.Parameter(meta, requires_grad=t.requires_grad) \
            if isinstance(t, nn.Parameter) else meta
    return copy.deepcopy(model, memo)


def count(model: nn.Module, size: tuple[int, int]) -> dict[str, int]:
    """Run one batch-1 eval forward of a 3-channel ``size`` (H, W) input and count.

    Args:
        model: the model (not modified; a data-less copy is run).
        size: input (H, W).

    Returns:
        ``{'macs': int, 'params': int}``.
    """
    h, w = size
    try:
        runner, device = _meta_copy(model), torch.device('meta')
        return _count(runner, device, h, w)
    except (NotImplementedError, RuntimeError):
        # Some op without a meta kernel (or data-dependent Python code): count on the CPU.
        runner = copy.deepcopy(model).cpu()
        return _count(runner, torch.device('cpu'), h, w)


def _count(runner: nn.Module, device: torch.device, h: int, w: int) -> dict[str, int]:
    runner.eval()
    macs = [0]
    ran: list[nn.Module] = []
    handles = []
    for m in runner.modules():
        handles.append(m.register_forward_hook(_macs_hook(macs)))
        handles.append(m.register_forward_pre_hook(
            lambda mod, inp: ran.append(mod)))
    try:
        with torch.no_grad():
            runner(torch.zeros(1, 3, h, w, device=device))
    finally:
        for hd in handles:
            hd.remove()
    seen: set[int] = set()
    params = 0
    for m in ran:
        for p in m.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                params += p.numel()
    return {'macs': macs[0], 'params': params}


def count_macs(model: nn.Module, size: tuple[int, int]) -> int:
    """Conv2d + Linear (+ ``extra_macs``) multiply-accumulates of a batch-1 forward at ``size``."""
    return count(model, size)['macs']


def count_params(model: nn.Module, size: tuple[int, int]) -> int:
    """Parameters of the modules that run in the eval forward at ``size`` (H, W)."""
    return count(model, size)['params']
