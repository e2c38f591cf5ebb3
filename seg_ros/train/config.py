"""Training configuration: nested dataclasses, read from YAML, overridden with ``--set k=v``.

A config file mirrors :class:`TrainConfig`::

    model: {name: regseg48, arch: {}, init: null}
    data:  {kind: synthetic, root: null, options: {size: [256, 512]}, augment: {...}}
    optim: {iterations: 600, batch_size: 8, lr: 0.05, ...}
    loss:  {type: bootstrap, threshold: 0.3, min_fraction: 0.0625}
    eval:  {every: 100, ...}
    checkpoint: {every: 100}

``--set optim.lr=0.01 --set data.options.length=100`` overrides any leaf; values are parsed as
YAML (``1e-3``, ``[256, 512]``, ``null``, ``true``). Unknown keys are errors (a typo must not
silently train with the default).
"""
from __future__ import annotations

from collections.abc import Sequence
import copy
import dataclasses
from dataclasses import asdict, dataclass, field
import json
from pathlib import Path
from typing import Any

import yaml

from seg_ros.errors import SegRosError
from seg_ros.fileio import read_yaml

__all__ = ['CheckpointConfig', 'DataConfig', 'EvalConfig', 'ModelConfig', 'OptimConfig',
           'TrainConfig', 'apply_overrides', 'classify_changes', 'config_changes',
           'config_from_dict',
           'describe_changes', 'flatten', 'load_config']


@dataclass
class ModelConfig:
    """Architecture.

    Attributes:
        name: registered model name (``seg-ros models``).
        num_classes: output classes; None = the training dataset's.
        arch: keyword overrides for ``create_model`` (e.g. searched dilations).
        init: checkpoint to initialise from (RegSeg CamVid starts from Cityscapes weights);
            layers whose shape differs (the classifier for another class count) stay random.
        aux: training-only auxiliary heads: None, ``'rtseg'`` (RTSeg boosters).
        input_size: [h, w] the model is meant to run at (stored in the checkpoint metadata;
            validation resizes frames to it like the runtime does); default: the size of the
            validation frames, else of the training crops.
        channels_last: NHWC memory format (faster convolutions on CPU / tensor cores).
        sync_bn: convert BatchNorm to SyncBatchNorm under DDP.
    """

    name: str = 'regseg48'
    num_classes: int | None = None
    arch: dict[str, Any] = field(default_factory=dict)
    init: str | None = None
    aux: str | None = None
    input_size: list[int] | None = None
    channels_last: bool = False
    sync_bn: bool = False


@dataclass
class DataConfig:
    """Datasets and augmentation.

    Attributes:
        kind: ``cityscapes``, ``camvid``, ``folder``, ``synthetic`` or ``toy``.
        root: dataset folder (not for synthetic / toy).
        train_split: split trained on (``train``, ``trainval`` ...).
        val_split: split evaluated during training; None disables validation.
        options: extra ``build_dataset`` keywords of the train split (synthetic: size, length).
        val_options: the same for the validation split.
        augment: :func:`seg_ros.data.transforms.build_transform` config or preset name;
            ``class_uniform: p`` in it turns on class-uniform sampling.
        centroid_cache: JSON cache for class-uniform sampling (default: in the run folder).
        val_fraction: folder datasets without ``train/`` / ``val/`` subfolders: the last
            fraction of the sorted frames is the validation split, the rest the training
            split (0: both are the whole folder).
        preload: make every training sample once and keep it in memory
            (:class:`~seg_ros.data.preload.PreloadedDataset`): for generated data, whose
            frames cost more CPU to render than to keep.
        workers: DataLoader worker processes per rank.
    """

    kind: str = 'synthetic'
    root: str | None = None
    train_split: str = 'train'
    val_split: str | None = 'val'
    options: dict[str, Any] = field(default_factory=dict)
    val_options: dict[str, Any] = field(default_factory=dict)
    augment: Any = None
    centroid_cache: str | None = None
    val_fraction: float = 0.0
    preload: bool = False
    workers: int = 2


@dataclass
class OptimConfig:
    """Optimisation recipe.

    Attributes:
        iterations: optimizer steps (0: derive from ``epochs``).
        epochs: passes over the training set (used when ``iterations`` is 0).
        batch_size: images per rank per micro-batch.
        accumulate: micro-batches per optimizer step (gradient accumulation).
        optimizer: ``sgd`` or ``adamw``.
        lr: peak learning rate.
        momentum: SGD momentum.
        weight_decay: decay of conv / linear weights (never BN or biases).
        nesterov: Nesterov momentum.
        policy: ``poly``, ``cosine`` or ``constant``.
        power: poly power.
        warmup_iters: linear warm-up length.
        warmup_factor: LR multiplier at the start of the warm-up.
        amp: ``none``, ``fp16`` (CUDA, with a GradScaler), ``bf16`` or ``auto`` (fp16 on
            CUDA, bf16 on a CPU with native bf16 -- AVX512_BF16 or AMX --, else none).
        ema: EMA of the weights (RegSeg: alpha 0.0031 every 32 iterations).
        ema_alpha: EMA alpha.
        ema_every: EMA period in optimizer steps.
        clip_grad: max gradient norm (None: no clipping).
        seed: base seed (RegSeg: 0 before init, then the epoch at each epoch start).
        threads: torch CPU threads: ``auto`` (cores minus the current load, >= 1), or a count.
        deterministic: ``torch.use_deterministic_algorithms`` (GPU reproducibility).
    """

    iterations: int = 0
    epochs: int = 0
    batch_size: int = 8
    accumulate: int = 1
    optimizer: str = 'sgd'
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    policy: str = 'poly'
    power: float = 0.9
    warmup_iters: int = 0
    warmup_factor: float = 0.1
    amp: str = 'none'
    ema: bool = False
    ema_alpha: float = 0.0031
    ema_every: int = 32
    clip_grad: float | None = None
    seed: int = 0
    threads: Any = 'auto'
    deterministic: bool = False


@dataclass
class EvalConfig:
    """In-loop validation.

    Attributes:
        every: validate every N optimizer steps (0: only at the end).
        max_images: validate on at most this many images (0: all).
        batch_size: validation batch size.
        use_ema: validate (and pick the best checkpoint with) the EMA weights when EMA is on.
    """

    every: int = 0
    max_images: int = 0
    batch_size: int = 1
    use_ema: bool = True


@dataclass
class CheckpointConfig:
    """Checkpointing.

    Attributes:
        every: write ``last.pt`` every N optimizer steps (0: only at the end).
        keep_best: also keep ``best.pt`` (highest validation mIoU).
    """

    every: int = 500
    keep_best: bool = True


@dataclass
class TrainConfig:
    """A whole training run.

    Attributes:
        name: run name (informational).
        out: output folder (checkpoints, ``metrics.jsonl``, TensorBoard events).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``.
        log_every: print / log training scalars every N optimizer steps.
        tensorboard: write TensorBoard scalars.
        progress: show a tqdm bar (rank 0).
    """

    name: str = 'run'
    out: str = 'runs/run'
    device: str = 'auto'
    log_every: int = 10
    tensorboard: bool = True
    progress: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: Any = 'ce'
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins (YAML / JSON / ``weights_only`` checkpoint safe)."""
        return asdict(self)

    def validate(self) -> None:
        """Raise :class:`SegRosError` on contradictory values."""
        o = self.optim
        if o.iterations <= 0 and o.epochs <= 0:
            raise SegRosError('set optim.iterations or optim.epochs (> 0)')
        if o.batch_size < 1 or o.accumulate < 1:
            raise SegRosError('optim.batch_size and optim.accumulate must be >= 1')
        if o.amp not in ('none', 'fp16', 'bf16', 'auto'):
            raise SegRosError(f'optim.amp must be none, fp16, bf16 or auto, got {o.amp!r}')
        if o.lr <= 0:
            raise SegRosError(f'optim.lr must be > 0, got {o.lr}')
        if self.eval.every < 0 or self.checkpoint.every < 0 or self.log_every < 1:
            raise SegRosError('eval.every / checkpoint.every must be >= 0, log_every >= 1')
        if self.data.workers < 0:
            raise SegRosError('data.workers must be >= 0')
        if not 0.0 <= self.data.val_fraction < 1.0:
            raise SegRosError(f'data.val_fraction must be in [0, 1), got '
                              f'{self.data.val_fraction}')
        if self.data.val_fraction and self.data.kind != 'folder':
            raise SegRosError(f'data.val_fraction holds out frames of a folder dataset; set it '
                              f'to 0 for {self.data.kind} data')


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise SegRosError(f'{where or "config"} must be a mapping, got {type(data).__name__}')
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise SegRosError(f'unknown config keys {sorted(f"{where}{k}" for k in unknown)}; '
                          f'valid under {where or "top level"}: {sorted(fields)}')
    kw = {}
    for k, v in data.items():
        sub = _SECTIONS.get(fields[k].name) if cls is TrainConfig else None
        if sub is not None:
            kw[k] = _build(sub, v or {}, f'{where}{k}.')
        else:
            kw[k] = _coerce(v, str(fields[k].type), f'{where}{k}')
    return cls(**kw)


def _coerce(value: Any, type_name: str, key: str) -> Any:
    """Check / convert a leaf against its annotation (YAML reads ``1e-3`` as a string)."""
    optional = type_name.endswith('| None')
    base = type_name.split('|')[0].strip()
    if value is None:
        if optional or base == 'Any':
            return None
        raise SegRosError(f'config {key} must not be null')
    try:
        if base == 'float' and not isinstance(value, bool):
            return float(value)
        if base == 'int' and not isinstance(value, bool):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
    except (TypeError, ValueError):
        raise SegRosError(f'config {key} must be a number, got {value!r}') from None
    if base == 'bool' and not isinstance(value, bool):
        raise SegRosError(f'config {key} must be true or false, got {value!r}')
    if base == 'str' and not isinstance(value, str):
        raise SegRosError(f'config {key} must be a string, got {value!r}')
    if base.startswith('dict') and not isinstance(value, dict):
        raise SegRosError(f'config {key} must be a mapping, got {value!r}')
    return value


_SECTIONS: dict[str, type] = {'model': ModelConfig, 'data': DataConfig, 'optim': OptimConfig,
                              'eval': EvalConfig, 'checkpoint': CheckpointConfig}


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split('.')
    node = tree
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {} if node.get(k) is None else node[k]
            if not isinstance(node[k], dict):
                raise SegRosError(f'--set {dotted}: {k} is not a section')
        node = node[k]
    node[keys[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a config dict in place."""
    for item in overrides:
        if '=' not in item:
            raise SegRosError(f'--set expects key=value, got {item!r}')
        key, raw = item.split('=', 1)
        key = key.strip()
        if not key:
            raise SegRosError(f'--set expects key=value, got {item!r}')
        try:
            value = yaml.safe_load(raw) if raw.strip() else ''
        except yaml.YAMLError as exc:
            raise SegRosError(f'--set {key}: cannot parse {raw!r}: {exc}') from exc
        _set_path(tree, key, value)
    return tree


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML config (or start from defaults when ``path`` is None) and apply overrides.

    Raises:
        SegRosError: missing file, YAML error, unknown key or invalid value.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        tree = read_yaml(p, f'training config not found: {p}') or {}
    return config_from_dict(tree, overrides)


def dump_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (what was actually run)."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def flatten(tree: dict[str, Any], prefix: str = '') -> dict[str, Any]:
    """``{'optim': {'lr': 0.1}, 'data': {'augment': {'hflip': 0.5}}}`` ->
    ``{'optim.lr': 0.1, 'data.augment.hflip': 0.5}`` (an empty mapping stays a leaf)."""
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            flat.update(flatten(v, f'{prefix}{k}.'))
        else:
            flat[f'{prefix}{k}'] = v
    return flat


def _under(key: str, names: frozenset[str]) -> bool:
    """``key`` is one of ``names`` or a setting inside one (``model.arch.widths``)."""
    return any(key == n or key.startswith(f'{n}.') for n in names)


#: Settings a resumed run may change without changing what it computes (where files go, how
#: often it reports / validates / saves, how it is shown; ``optim.threads``: an ``auto`` run
#: keeps the checkpoint's thread count anyway).
RESUME_HARMLESS = frozenset({
    'out', 'name', 'progress', 'tensorboard', 'log_every', 'device', 'data.workers',
    'optim.threads', 'eval.every', 'eval.max_images', 'eval.batch_size', 'checkpoint.every',
    'checkpoint.keep_best'})
#: Settings that set the run's length: changing them extends (or shortens) the schedule.
RESUME_SCHEDULE = frozenset({'optim.iterations', 'optim.epochs'})
#: Settings the checkpoint's weights are tied to: never changed by a resume.
RESUME_FIXED = frozenset({'model.name', 'model.arch', 'model.num_classes', 'model.aux'})


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, old value, new value)`` of every setting that differs, sorted by key."""
    a, b = flatten(old), flatten(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def classify_changes(changes: Sequence[tuple[str, Any, Any]]) -> dict[str, list[Any]]:
    """Split resume changes into ``fixed`` (architecture), ``schedule`` (length), ``harmless``
    (files, reporting) and ``other`` (what the run computes)."""
    groups: dict[str, list[Any]] = {'fixed': [], 'schedule': [], 'harmless': [], 'other': []}
    for c in changes:
        kind = ('fixed' if _under(c[0], RESUME_FIXED) else
                'schedule' if _under(c[0], RESUME_SCHEDULE) else
                'harmless' if _under(c[0], RESUME_HARMLESS) else 'other')
        groups[kind].append(c)
    return groups


def describe_changes(changes: Sequence[tuple[str, Any, Any]]) -> str:
    """``optim.lr 0.02 -> 0.01, loss ce -> bootstrap`` (one line)."""
    def show(v: Any) -> str:
        return json.dumps(v, separators=(',', ':')) if not isinstance(v, str) else v
    return ', '.join(f'{k} {show(a)} -> {show(b)}' for k, a, b in changes)


def config_from_dict(tree: dict[str, Any], overrides: Sequence[str] = ()) -> TrainConfig:
    """A :class:`TrainConfig` from a resolved config mapping (a run's ``config.yaml`` or the copy
    in its checkpoint) with ``--set`` overrides applied.

    Raises:
        SegRosError: unknown key or invalid value.
    """
    tree = copy.deepcopy(tree)
    apply_overrides(tree, overrides)
    try:
        cfg = _build(TrainConfig, tree, '')
    except TypeError as exc:
        raise SegRosError(f'bad training config: {exc}') from exc
    cfg.validate()
    return cfg
