"""Optimiser, learning-rate schedule and weight EMA of the papers' recipes.

* SGD with momentum 0.9; weight decay only on conv / linear weights -- RegSeg Sec. 4.2 "we do
  not decay BatchNorm parameters" (biases are not decayed either, as usual).
* Schedule: linear warm-up from ``warmup_factor * lr`` to ``lr`` over ``warmup_iters`` (RegSeg:
  0.1 lr, 3000 iterations), then ``poly`` ``(1 - it / total) ** power`` (power 0.9; RegSeg,
  SFNet, RTSeg) or ``cosine`` ``0.5 * (1 + cos(pi * it / total))`` (ESeg). As in the official
  RegSeg code the poly factor is measured from iteration 0, not from the end of the warm-up.
* :class:`ModelEMA`: RegSeg's EMA "with alpha 0.0031 and update every 32 iterations":
  ``ema = (1 - alpha) * ema + alpha * model`` every ``every`` optimizer steps, on parameters and
  floating-point buffers (BN statistics); integer buffers are copied.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from seg_ros.errors import SegRosError

__all__ = ['OPTIMIZERS', 'POLICIES', 'ModelEMA', 'WarmupScheduler', 'build_optimizer',
           'param_groups']

#: ``optim.optimizer`` values.
OPTIMIZERS = ('sgd', 'adamw')
#: ``optim.policy`` values.
POLICIES = ('poly', 'cosine', 'constant')


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: decayed weights (ndim > 1) and undecayed BN / norm parameters and biases.

    Args:
        model: the model (trainable parameters only are returned).
        weight_decay: decay of the first group.
    """
    decay, no_decay = [], []
    for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if not p.requires_grad:
            continue
        # 1-D tensors are BN / LayerNorm scales and shifts and conv / linear biases.
        (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{'params': decay, 'weight_decay': weight_decay}]
    if no_decay:
        groups.append({'params': no_decay, 'weight_decay': 0.0})
    return groups


def build_optimizer(model: nn.Module, name: str = 'sgd', lr: float = 0.01,
                    momentum: float = 0.9, weight_decay: float = 1e-4,
                    nesterov: bool = False) -> torch.optim.Optimizer:
    """SGD (the papers' optimiser) or AdamW, without decay on BN / bias."""
    groups = param_groups(model, weight_decay)
    if name == 'sgd':
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    if name == 'adamw':
        return torch.optim.AdamW(groups, lr=lr)
    raise SegRosError(f'unknown optimizer {name!r}; valid: sgd, adamw')


class WarmupScheduler:
    """Per-iteration LR multiplier: linear warm-up then poly or cosine decay.

    Call :meth:`step` once after every optimizer step. State is the iteration counter only,
    so ``state_dict`` is plain builtins (safe with ``torch.load(weights_only=True)``).

    Args:
        optimizer: its groups' ``initial_lr`` (set here from ``lr``) are scaled.
        total_iters: iterations of the whole run.
        policy: ``'poly'``, ``'cosine'`` or ``'constant'``.
        power: poly exponent.
        warmup_iters: warm-up length.
        warmup_factor: multiplier at iteration 0 of the warm-up.
        min_lr_factor: floor of the multiplier (cosine / poly end value).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_iters: int,
                 policy: str = 'poly', power: float = 0.9, warmup_iters: int = 0,
                 warmup_factor: float = 0.1, min_lr_factor: float = 0.0) -> None:
        if policy not in ('poly', 'cosine', 'constant'):
            raise SegRosError(f'unknown lr policy {policy!r}; valid: poly, cosine, constant')
        if total_iters < 1:
            raise SegRosError(f'total iterations must be >= 1, got {total_iters}')
        self.optimizer = optimizer
        self.total_iters = int(total_iters)
        self.policy = policy
        self.power = float(power)
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)
        self.min_lr_factor = float(min_lr_factor)
        for g in optimizer.param_groups:
            g.setdefault('initial_lr', g['lr'])
        self.last_iter = 0
        self._apply()

    def factor(self, it: int) -> float:
        """LR multiplier at iteration ``it``."""
        if it < self.warmup_iters:
            alpha = it / self.warmup_iters
            return self.warmup_factor * (1 - alpha) + alpha
        x = min(it, self.total_iters) / self.total_iters
        if self.policy == 'poly':
            f = (1 - x) ** self.power
        elif self.policy == 'cosine':
            f = 0.5 * (1 + math.cos(math.pi * x))
        else:
            f = 1.0
        return max(f, self.min_lr_factor)

    def _apply(self) -> None:
        f = self.factor(self.last_iter)
        for g in self.optimizer.param_groups:
            g['lr'] = g['initial_lr'] * f

    def step(self) -> None:
        """Advance one iteration and set the groups' LR."""
        self.last_iter += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        """Current LR of each group."""
        return [g['lr'] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {'last_iter': self.last_iter, 'total_iters': self.total_iters}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_iter = int(state['last_iter'])
        self._apply()


class ModelEMA:
    """Exponential moving average of a model's weights (RegSeg: alpha 0.0031 every 32 its).

    Args:
        model: the trained model (unwrapped, not DDP).
        alpha: weight of the current model in each update.
        every: update every ``every`` calls of :meth:`update` (optimizer steps).
    """

    def __init__(self, model: nn.Module, alpha: float = 0.0031, every: int = 32) -> None:
        if not 0 < alpha <= 1 or every < 1:
            raise SegRosError(f'EMA needs 0 < alpha <= 1 and every >= 1, got {alpha}, {every}')
        self.alpha = float(alpha)
        self.every = int(every)
        self.steps = 0
        self.updates = 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> bool:
        """Count one optimizer step; average when the count is a multiple of ``every``.

        Returns:
            True when an average was taken.
        """
        self.steps += 1
        if self.steps % self.every:
            return False
        for k, v in model.state_dict().items():
            e = self.state[k]
            if e.is_floating_point():
                e.mul_(1 - self.alpha).add_(v.detach(), alpha=self.alpha)
            else:
                e.copy_(v)
        self.updates += 1
        return True

    def state_dict(self) -> dict[str, Any]:
        return {'alpha': self.alpha, 'every': self.every, 'steps': self.steps,
                'updates': self.updates, 'state': self.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alpha = float(state['alpha'])
        self.every = int(state['every'])
        self.steps = int(state['steps'])
        self.updates = int(state['updates'])
        for k, v in state['state'].items():
            self.state[k].copy_(v)
