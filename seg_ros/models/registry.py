"""The model registry: ``@register_model`` variants and ``create_model(name, ...)``."""
from __future__ import annotations

from collections.abc import Callable
import importlib
from typing import TYPE_CHECKING, Any

from seg_ros.errors import SegRosError

if TYPE_CHECKING:  # torch is imported with the architectures, not by `seg-ros models --help`
    from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
# Architecture files, imported on first use so that `seg_ros.models.checkpoint` and friends
# stay cheap to import and every variant is registered before a name is looked up.
_ARCH_MODULES = ('regseg', 'sfnet', 'rtseg', 'eseg')
_loaded = False


def _load_architectures() -> None:
    global _loaded
    if not _loaded:
        for name in _ARCH_MODULES:
            importlib.import_module(f'seg_ros.models.{name}')
        _loaded = True


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model factory under its function name."""
    if fn.__name__ in _REGISTRY:
        raise ValueError(f'model {fn.__name__!r} registered twice')
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    _load_architectures()
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int = 19, **overrides: Any) -> nn.Module:
    """Build a registered model in eval mode.

    Args:
        name: a name from :func:`list_models`.
        num_classes: output classes.
        **overrides: fields of the architecture's config dataclass to change.

    Raises:
        SegRosError: for an unknown name, listing the valid ones.
    """
    _load_architectures()
    if name not in _REGISTRY:
        raise SegRosError(f'unknown model {name!r}; valid names: {", ".join(list_models())}')
    model = _REGISTRY[name](num_classes=num_classes, **overrides)
    return model.eval()
