"""The training loop: one function, :func:`train`, meant to be read top to bottom.

Order of events (RegSeg Sec. 4.3 reproducibility):

1. distributed setup (``torchrun`` env vars; gloo on CPU, nccl on CUDA), threads, device;
2. ``seed(cfg.optim.seed)`` *before* the model is initialised (RegSeg: seed 0);
3. datasets (sorted file lists, augmentation drawn per (seed, epoch, index)), model, optimizer,
   LR schedule, EMA, AMP scaler, loss;
4. ``--resume``: everything above is restored from ``last.pt`` -- weights, optimizer,
   scheduler, EMA, scaler, step counters and *all* RNG states -- so the continuation is the
   same computation as an uninterrupted run (bit-exact on CPU);
5. the loop over micro-batches: at the start of every epoch the RNGs are reseeded with
   ``seed + epoch`` and the sampler order is a function of the epoch only (DistributedSampler);
   a run resumed in the middle of an epoch skips the micro-batches already consumed;
6. every ``log_every`` steps: scalars to tqdm, TensorBoard and ``metrics.jsonl``; every
   ``eval.every`` steps: validation mIoU (:class:`~seg_ros.eval.metrics.ConfusionMatrix`);
   every ``checkpoint.every`` steps and at the end: ``last.pt`` (atomic), ``best.pt``;
7. at the end ``final.pt``: the deployable weights only (EMA weights when EMA is on).

Batches are uint8 NHWC tensors normalised on the device by
:class:`seg_ros.runtime.normalize.Normalize`: the very module the exported ONNX graph runs.
"""
from __future__ import annotations

from collections.abc import Iterator
import contextlib
import copy
from dataclasses import dataclass
import json
import logging
import math
import os
from pathlib import Path
import random
import sys
import time
from typing import Any

import numpy as np
import torch
from torch import nn
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from seg_ros.errors import SegRosError
from seg_ros.eval.metrics import ConfusionMatrix
from seg_ros.fileio import remove_stale_temp_files
from seg_ros.metadata import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, ModelMeta
from seg_ros.models.checkpoint import load_checkpoint, save_checkpoint
from seg_ros.runtime.cpu import cpu_info, free_cores
from seg_ros.runtime.normalize import Normalize
from seg_ros.train.config import TrainConfig, dump_config
from seg_ros.train.losses import build_loss
from seg_ros.train.optim import ModelEMA, WarmupScheduler, build_optimizer

log = logging.getLogger(__name__)

__all__ = ['ResumableSampler', 'check_config', 'collate', 'get_rng_state', 'init_architecture',
           'seed_everything', 'set_rng_state', 'train']


# ============================================================================ helpers
def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state() -> dict[str, Any]:
    """All global RNG states as tensors / builtins (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        'python': random.getstate(),
        'numpy': (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                  int(np_state[2]), int(np_state[3]), float(np_state[4])),
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`get_rng_state`."""
    py = state['python']
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


class ResumableSampler(DistributedSampler):
    """A :class:`DistributedSampler` (order = f(seed + epoch), one shard per rank) that can
    start in the middle of an epoch: ``set_epoch(epoch, skip)`` drops the first ``skip``
    indices of this rank's shard (the samples consumed before an interruption)."""

    def __init__(self, dataset: Any, num_replicas: int, rank: int, seed: int,
                 shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=True)
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:  # type: ignore[override]
        super().set_epoch(epoch)
        self.skip = int(skip)

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)


def collate(batch: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[(HxWx3 uint8, HxW uint8)]`` -> uint8 NHWC images, int64 NHW labels."""
    shapes = {img.shape for img, _ in batch}
    if len(shapes) != 1:
        raise SegRosError(f'training batch has images of different sizes {sorted(shapes)}; '
                          f'add a crop to data.augment')
    images = torch.from_numpy(np.stack([img for img, _ in batch]))
    labels = torch.from_numpy(np.stack([lab for _, lab in batch]).astype(np.int64))
    return images, labels


def resolve_amp(spec: str, device: torch.device) -> str:
    """The mixed precision ``optim.amp`` means on ``device``.

    ``auto``: fp16 on CUDA; bf16 on a CPU that computes bf16 natively (AVX512_BF16 or AMX:
    measured 0.41 s against 0.64 s per regseg48 step of 4 x 256x512 frames on a 2-core AMX
    Xeon); otherwise none -- emulated bf16 on an AVX2 CPU is slower than fp32.
    """
    if spec != 'auto':
        return spec
    if device.type == 'cuda':
        return 'fp16'
    if device.type == 'cpu' and cpu_info().native_bf16:
        return 'bf16'
    return 'none'


def _threads(spec: Any, local_world: int) -> int:
    """``auto``: the cores this process may use now (cores minus load, split among ranks)."""
    if spec in (None, 'auto'):
        # On a busy machine OpenMP threads that outnumber free cores spin and stall each
        # other (measured here: 2 threads 10x slower than 1 at load 8 on 2 cores).
        return max(1, free_cores() // max(1, local_world))
    n = int(spec)
    if n < 1:
        raise SegRosError(f'optim.threads must be >= 1 or "auto", got {spec!r}')
    return n


@dataclass
class Dist:
    """Distributed context (world 1 when not launched by torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_spec: str) -> tuple[Dist, torch.device]:
    world = int(os.environ.get('WORLD_SIZE', '1'))
    d = Dist(rank=int(os.environ.get('RANK', '0')), world=world,
             local_rank=int(os.environ.get('LOCAL_RANK', '0')),
             local_world=int(os.environ.get('LOCAL_WORLD_SIZE', str(world))))
    if device_spec == 'auto':
        device_spec = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device_spec.startswith('cuda'):
        if not torch.cuda.is_available():
            raise SegRosError('device cuda requested but CUDA is not available')
        device = torch.device('cuda', d.local_rank if world > 1 else
                              (torch.device(device_spec).index or 0))
        torch.cuda.set_device(device)
    else:
        device = torch.device(device_spec)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    return d, device


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _eval_model(model: nn.Module) -> nn.Module:
    """The deployable model inside a training wrapper (aux heads stay outside)."""
    m = _unwrap(model)
    return m.model if hasattr(m, 'eval_state_dict') else m


def _build_datasets(cfg: TrainConfig, progress: bool = True) -> tuple[Any, Any]:
    from seg_ros.data.datasets import build_training_dataset
    from seg_ros.data.drives import build_drives_dataset

    dc = cfg.data
    held_out = {'val_fraction': dc.val_fraction} if dc.val_fraction else {}
    train_ds = build_training_dataset(
        dc.kind, dc.root, dc.train_split, augment=dc.augment, seed=cfg.optim.seed,
        cache_path=dc.centroid_cache or Path(cfg.out) / 'centroids.json', preload=dc.preload,
        progress=progress, **held_out, **dc.options)
    val_ds = None
    if dc.val_split:
        val_ds = build_drives_dataset(dc.kind, dc.root, dc.val_split,
                                      **held_out, **dc.val_options)
    return train_ds, val_ds


def check_config(cfg: TrainConfig, arch: dict[str, Any] | None = None,
                 name: str | None = None) -> None:
    """Refuse names and values the run would only trip over after building its data (a preload
    takes seconds to minutes): model name and ``arch`` keywords, auxiliary heads, optimizer,
    LR policy, loss, augmentation, dataset kind and root.

    Args:
        cfg: the run configuration.
        arch: the architecture keywords the run builds (default ``cfg.model.arch``).
        name: the model name the run builds (default ``cfg.model.name``).

    Raises:
        SegRosError: naming the setting and the valid values.
    """
    from seg_ros.data.datasets import KINDS
    from seg_ros.data.transforms import build_transform
    from seg_ros.models import create_model, list_models
    from seg_ros.train.optim import OPTIMIZERS, POLICIES

    name = name or cfg.model.name
    if name not in list_models():
        raise SegRosError(f'model.name {name!r} is not a registered model; valid: '
                          f'{", ".join(list_models())}')
    try:
        with torch.device('meta'):  # checks the arch keywords without allocating weights
            create_model(name, num_classes=cfg.model.num_classes or 2,
                         **(cfg.model.arch if arch is None else arch))
    except SegRosError as exc:
        raise SegRosError(f'model.arch: {exc}') from None
    except (TypeError, ValueError) as exc:
        raise SegRosError(f'model.arch {cfg.model.arch} does not fit {name}: '
                          f'{exc}') from None
    if cfg.model.aux not in (None, 'rtseg'):
        raise SegRosError(f'unknown model.aux {cfg.model.aux!r}; valid: rtseg')
    if cfg.optim.optimizer not in OPTIMIZERS:
        raise SegRosError(f'unknown optim.optimizer {cfg.optim.optimizer!r}; valid: '
                          f'{", ".join(OPTIMIZERS)}')
    if cfg.optim.policy not in POLICIES:
        raise SegRosError(f'unknown optim.policy {cfg.optim.policy!r}; valid: '
                          f'{", ".join(POLICIES)}')
    build_loss(cfg.loss, IGNORE_INDEX)
    aug = cfg.data.augment
    if isinstance(aug, dict) and aug.get('crop') == 'frame':
        aug = {**aug, 'crop': [8, 8]}  # the real size comes from the first frame
    build_transform(aug)
    if cfg.data.kind not in KINDS:
        raise SegRosError(f'unknown data.kind {cfg.data.kind!r}; valid: {", ".join(KINDS)}')
    if cfg.data.kind not in ('synthetic', 'toy') and not cfg.data.root:
        raise SegRosError(f'data.root is not set: give the {cfg.data.kind} dataset folder with '
                          f'--data DIR (or --set data.root=DIR)')


def _meta(cfg: TrainConfig, train_ds: Any, val_ds: Any, num_classes: int, name: str,
          arch: dict[str, Any]) -> ModelMeta:
    size: list[int] | None = list(cfg.model.input_size) if cfg.model.input_size else None
    if size is None and val_ds is not None and len(val_ds):
        size = list(val_ds[0][0].shape[:2])
    if size is None:
        size = list(train_ds[0][0].shape[:2])
    names = list(getattr(train_ds, 'class_names', [str(i) for i in range(num_classes)]))
    palette = [list(c) for c in getattr(train_ds, 'palette', [])]
    if len(names) != num_classes:
        names = [str(i) for i in range(num_classes)]
    if len(palette) < num_classes:
        rng = np.random.default_rng(0)
        palette = [list(map(int, rng.integers(0, 256, 3))) for _ in range(num_classes)]
    return ModelMeta(model=name, num_classes=num_classes, class_names=names,
                     palette=palette, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD),
                     input_size=size, arch=dict(arch))


def init_architecture(cfg: TrainConfig) -> tuple[str, dict[str, Any], str | None]:
    """The model ``cfg`` builds: (name, arch keywords, note to print or None).

    ``model.init`` naming a seg_ros checkpoint of the same model while ``model.arch`` is empty
    adopts the checkpoint's architecture (``ModelMeta.arch``: a searched RegSeg's dilations and
    widths, an RTSeg subnet's config), so its weights fit instead of a stock model getting a
    few of them. An explicit ``model.arch`` or another model name is kept as written.
    """
    name, arch = cfg.model.name, dict(cfg.model.arch)
    if not cfg.model.init:
        return name, arch, None
    try:
        meta = load_checkpoint(cfg.model.init)['meta']
    except SegRosError as exc:
        raise SegRosError(f'model.init: {exc}') from None
    if meta.model == name and not arch and meta.arch:
        return name, dict(meta.arch), (f'model.init {cfg.model.init}: training its architecture '
                                       f'({name} with arch {json.dumps(meta.arch)})')
    return name, arch, None


def _init_from(model: nn.Module, path: str, name: str) -> str:
    """Load matching tensors of a checkpoint; returns the line to print about it.

    Tensors whose shape differs only by the class count (the classifier, for a dataset with
    other classes) are expected to stay random; any other tensor left out makes the line a
    warning with the counts.
    """
    ckpt = load_checkpoint(path)
    src, meta = ckpt['state_dict'], ckpt['meta']
    own = model.state_dict()
    fit = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
    if not fit:
        raise SegRosError(f'model.init {path}: no tensor fits {name} (the checkpoint holds '
                          f'{meta.model} with arch {json.dumps(meta.arch)})')
    model.load_state_dict(fit, strict=False)
    classes = {k for k, v in own.items() if k in src and k not in fit
               and src[k].shape[1:] == v.shape[1:] and src[k].shape[:1] == (meta.num_classes,)}
    left = len(own) - len(fit) - len(classes)
    line = f'model.init {path}: loaded {len(fit)} of {len(own)} tensors'
    if classes:
        line += (f' ({len(classes)} class-count tensor{"s" if len(classes) > 1 else ""} '
                 f'stay{"" if len(classes) > 1 else "s"} random)')
    if left:
        return (f'warning: {line}; {left} tensors of {name} have no match in the checkpoint '
                f'({meta.model} with arch {json.dumps(meta.arch)}): set model.name / model.arch '
                f"to the checkpoint's to train its architecture")
    return line


@torch.no_grad()
def validate(model: nn.Module, dataset: Any, normalize: nn.Module, num_classes: int,
             device: torch.device, d: Dist | None = None, max_images: int = 0,
             channels_last: bool = False, amp_dtype: torch.dtype | None = None,
             input_size: tuple[int, int] | None = None) -> ConfusionMatrix:
    """Confusion matrix of ``model`` (eval mode) on ``dataset``.

    With ``input_size`` every frame goes the runtime's way (:mod:`seg_ros.runtime.preprocess`):
    uint8 resize to the network input, ids back to the label's resolution (nearest), so the
    score is what ``seg-ros eval`` and the node measure. Shards over DDP ranks and sums the
    matrices (every rank returns the total).
    """
    from seg_ros.runtime.preprocess import compute_geometry, prepare, restore

    d = d or Dist()
    was_training = model.training
    model.eval()
    n = len(dataset) if max_images <= 0 else min(len(dataset), max_images)
    cm = ConfusionMatrix(num_classes)
    for i in range(d.rank, n, d.world):
        image, label = dataset[i]
        geo = compute_geometry(image.shape[:2], input_size or image.shape[:2], 'stretch')
        net_in = image if geo.is_identity else prepare(image, geo)
        x = normalize(torch.from_numpy(np.ascontiguousarray(net_in))[None].to(device))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            logits = model(x)
        ids = logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
        cm.update(ids if geo.is_identity else restore(ids, geo), label)
    if d.world > 1:
        t = torch.from_numpy(cm.matrix).to(device)
        dist.all_reduce(t)
        cm.matrix = t.cpu().numpy()
    model.train(was_training)
    return cm


def _truncate_log(path: Path, step: int) -> None:
    """Drop records logged after the checkpoint a run resumes from (they are redone)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get('step', 0) <= step]
    path.write_text(''.join(line + '\n' for line in keep))


class _Logger:
    """Rank-0 scalars to ``metrics.jsonl`` and TensorBoard."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.jsonl = out / 'metrics.jsonl'
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out / 'tb'))
            except ImportError:  # tensorboard missing: JSON log only
                log.warning('tensorboard not installed: JSON metrics only')

    def write(self, record: dict[str, Any], step: int) -> None:
        if not self.enabled:
            return
        with open(self.jsonl, 'a') as fh:
            fh.write(json.dumps(record) + '\n')
        if self.tb is not None:
            kind = record.get('kind', 'train')
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ('step', 'epoch'):
                    self.tb.add_scalar(f'{kind}/{k}', v, step)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# ============================================================================ the loop
def _resume_state(cfg: TrainConfig, out: Path, accept_changes: bool,
                  main: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load ``<out>/last.pt`` for ``--resume`` and check ``cfg`` against the settings it was
    trained with; returns (checkpoint, its training state).

    Length changes (``optim.iterations`` / ``epochs``) extend the run; reporting / file
    settings (:data:`~seg_ros.train.config.RESUME_HARMLESS`) may change; the architecture never;
    anything else only with ``accept_changes``. A run whose settings changed gets them in
    ``config.resume-N.yaml``: ``config.yaml`` keeps the settings the run started with.

    Raises:
        SegRosError: no checkpoint, a weights-only file, or refused changes (one line listing
            them).
    """
    from seg_ros.train.config import (
        classify_changes,
        config_changes,
        config_from_dict,
        describe_changes,
    )

    last = out / 'last.pt'
    if not last.is_file():
        raise SegRosError(f'--resume: no checkpoint {last}')
    ckpt = load_checkpoint(last)
    tr = ckpt['extra'].get('train')
    if not tr:
        raise SegRosError(f'{last} has no training state (weights-only file)')
    stored = tr.get('config')
    if not isinstance(stored, dict):
        return ckpt, tr  # a checkpoint of an older seg_ros: nothing to compare with
    try:  # fill settings added since the run started with their defaults
        stored = config_from_dict(stored).to_dict()
    except SegRosError:
        pass
    changes = [c for c in config_changes(stored, cfg.to_dict()) if c[0] != 'out']
    groups = classify_changes(changes)
    if groups['fixed']:
        raise SegRosError(f'--resume cannot change the architecture '
                          f'({describe_changes(groups["fixed"])}): the weights in {last} are '
                          f'the old one; start a new run (another --out) instead')
    other = groups['other']
    if other and not accept_changes:
        raise SegRosError(f'--resume: settings differ from the run in {out}: '
                          f"{describe_changes(other)}; drop them (the run's settings are "
                          f'used when not given), or add --accept-changes to continue with them')
    if changes and main:
        n = 1
        while (out / f'config.resume-{n}.yaml').exists():
            n += 1
        dump_config(cfg, out / f'config.resume-{n}.yaml')
        print(f'--resume: changed settings {describe_changes(changes)}; written to '
              f'{out / f"config.resume-{n}.yaml"} (config.yaml keeps the settings the run '
              f'started with)', flush=True)
    return ckpt, tr


def train(cfg: TrainConfig, resume: bool = False, stop_after: int | None = None,
          accept_changes: bool = False, source: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train according to ``cfg``; returns a summary dict (rank 0 has the real numbers).

    Args:
        cfg: the run configuration.
        resume: continue from ``<out>/last.pt`` (error if it does not exist). A larger
            ``optim.iterations`` (or ``epochs``) than the checkpoint's extends the run, with the
            LR schedule recomputed for the new total; other changed settings are refused
            unless ``accept_changes`` (see :func:`_resume_state`).
        stop_after: stop (as if interrupted) once this many optimizer steps are done in total,
            after writing the periodic checkpoint of that step if one is due. For tests.
        accept_changes: with ``resume``, continue with changed settings (not the
            architecture).
        source: how the config was made (``{'config': path, 'overrides': [...]}``), kept in
            ``last.pt`` so that ``--resume`` can tell the run's ``--set``s from later edits.
    """
    t_start = time.time()
    # ---- 1. processes, threads, device
    d, device = _init_distributed(cfg.device)
    threads = _threads(cfg.optim.threads, d.local_world)
    torch.set_num_threads(threads)
    if cfg.optim.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    out = Path(cfg.out)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        # A run killed while writing a checkpoint leaves its temp file (.last.pt.XXXXXXXX.tmp,
        # as large as the checkpoint); this run owns the folder now, so remove them.
        stale = remove_stale_temp_files(out)
        if stale:
            print(f'removed {len(stale)} temp file(s) of an interrupted run from {out}: '
                  f'{", ".join(p.name for p in stale[:4])}', flush=True)
    ckpt: dict[str, Any] | None = None
    tr: dict[str, Any] = {}
    if resume:
        ckpt, tr = _resume_state(cfg, out, accept_changes, d.main)
        # the architecture the weights have (an adopted model.init arch included)
        name, arch, init_note = ckpt['meta'].model, dict(ckpt['meta'].arch), None
    else:
        name, arch, init_note = init_architecture(cfg)
    if d.main and not resume:
        dump_config(cfg, out / 'config.yaml')
        # a fresh run starts a fresh log and history
        for old in [out / 'metrics.jsonl', *out.glob('config.resume-*.yaml')]:
            old.unlink(missing_ok=True)
    check_config(cfg, arch, name)  # typos fail here, before the data is built / preloaded
    if init_note and d.main:
        print(init_note, flush=True)

    # ---- 2. seed before anything random is created (RegSeg: seed 0 before init)
    seed = cfg.optim.seed
    seed_everything(seed)

    # ---- 3. data, model, optimisation
    train_ds, val_ds = _build_datasets(cfg, progress=d.rank == 0)
    num_classes = cfg.model.num_classes or train_ds.num_classes
    meta = _meta(cfg, train_ds, val_ds, num_classes, name, arch)

    from seg_ros.models import create_model
    seed_everything(seed)  # datasets may have drawn numbers; init must not depend on them
    core = create_model(name, num_classes=num_classes, **arch)
    if cfg.model.init and not resume:  # a resumed run's weights come from last.pt
        line = _init_from(core, cfg.model.init, name)
        if d.main:
            print(line, file=sys.stderr if line.startswith('warning') else sys.stdout,
                  flush=True)
    model: nn.Module = core
    if cfg.model.aux == 'rtseg':
        from seg_ros.models.rtseg_train import RTSegTrain
        model = RTSegTrain(core)  # type: ignore[arg-type]
    elif cfg.model.aux:
        raise SegRosError(f'unknown model.aux {cfg.model.aux!r}; valid: rtseg')
    model.train()
    if d.world > 1 and cfg.model.sync_bn and device.type != 'cuda':
        if d.main:  # torch's SyncBatchNorm has no CPU implementation
            print('warning: model.sync_bn ignored on CPU (SyncBatchNorm needs CUDA)', flush=True)
    elif d.world > 1 and cfg.model.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        core = model.model if hasattr(model, 'eval_state_dict') else model
    model.to(device)
    if cfg.model.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    normalize = Normalize(meta.mean, meta.std).to(device)

    o = cfg.optim
    optimizer = build_optimizer(model, o.optimizer, o.lr, o.momentum, o.weight_decay, o.nesterov)
    per_epoch = len(train_ds) // (o.batch_size * d.world)  # micro-batches per epoch and rank
    if per_epoch < 1:
        raise SegRosError(f'training set of {len(train_ds)} images is smaller than one batch '
                          f'({o.batch_size} x {d.world} ranks)')
    total = o.iterations or max(1, o.epochs * per_epoch // o.accumulate)
    scheduler = WarmupScheduler(optimizer, total, o.policy, o.power, o.warmup_iters,
                                o.warmup_factor)
    amp = resolve_amp(o.amp, device)
    if o.amp == 'auto' and d.rank == 0:
        log.info('optim.amp auto: %s on %s', amp, device)
    amp_dtype = {'none': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}[amp]
    scaler = torch.amp.GradScaler(device.type, enabled=amp == 'fp16')
    ema = ModelEMA(_eval_model(model), o.ema_alpha, o.ema_every) if o.ema else None
    criterion = build_loss(cfg.loss, IGNORE_INDEX)
    ddp_model: nn.Module = model
    if d.world > 1:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == 'cuda' else None)

    step, micro, best_miou, elapsed_before = 0, 0, -1.0, 0.0

    # ---- 4. resume: restore every piece of state, RNGs last
    if resume:
        model.load_state_dict(tr['model'])
        optimizer.load_state_dict(tr['optimizer'])
        scheduler.load_state_dict(tr['scheduler'])
        scaler.load_state_dict(tr['scaler'])
        if ema is not None and tr.get('ema'):
            ema.load_state_dict(tr['ema'])
        step, micro = int(tr['step']), int(tr['micro'])
        best_miou, elapsed_before = float(tr['best_miou']), float(tr['elapsed'])
        if tr['total'] != total:
            if total <= step:
                raise SegRosError(f'--resume: the run is at step {step} already; '
                                  f'{total} iterations would end before it')
            # poly / cosine decay are functions of it / total: continue on the curve of the
            # new total (the LR jumps where the new curve is higher at this step)
            scheduler.total_iters = int(tr['total'])
            lr_before = scheduler.factor(step) * o.lr
            scheduler.total_iters = total
            if d.main:
                print(f'--resume: {"extending" if total > tr["total"] else "shortening"} the '
                      f'run from {tr["total"]} to {total} iterations; the {o.policy} LR '
                      f'schedule is recomputed for {total} (LR at step {step}: '
                      f'{lr_before:.3g} -> {scheduler.factor(step) * o.lr:.3g})', flush=True)
        set_rng_state(tr['rng'])
        if cfg.optim.threads in (None, 'auto') and tr.get('threads'):
            # CPU results depend on the thread count (reduction order): keep the run's count
            threads = int(tr['threads'])
            torch.set_num_threads(threads)
        if d.main:
            _truncate_log(out / 'metrics.jsonl', step)
            print(f'resumed from {out / "last.pt"} at step {step}/{total}', flush=True)

    logger = _Logger(out, d.main, cfg.tensorboard)
    bar = None
    if d.main and cfg.progress:
        from seg_ros.progress import progress_bar
        bar = progress_bar(total=total, initial=step, desc=cfg.name, unit='it', dynamic_ncols=True)

    # ---- checkpoint writers (rank 0)
    def deployable_state() -> dict[str, torch.Tensor]:
        if ema is not None and cfg.eval.use_ema:
            return ema.state
        return _eval_model(model).state_dict()

    def save_last() -> None:
        extra = {'train': {
            'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
            'scheduler': scheduler.state_dict(), 'scaler': scaler.state_dict(),
            'ema': ema.state_dict() if ema is not None else None,
            'step': step, 'micro': micro, 'total': total, 'best_miou': best_miou,
            'elapsed': elapsed_before + time.time() - t_start, 'rng': get_rng_state(),
            'threads': threads,
            'config': cfg.to_dict(), 'source': source or tr.get('source')}}
        save_checkpoint(out / 'last.pt', _eval_model(model), meta, extra)

    ema_model = copy.deepcopy(_eval_model(model)) if ema is not None else None

    def run_validation() -> dict[str, Any] | None:
        nonlocal best_miou
        if val_ds is None:
            return None
        net = _eval_model(model)
        if ema is not None and ema_model is not None and cfg.eval.use_ema:
            ema_model.load_state_dict(ema.state)
            net = ema_model
        final = step >= total  # the final score always covers the whole split
        cm = validate(net, val_ds, normalize, num_classes, device, d,
                      0 if final else cfg.eval.max_images, cfg.model.channels_last, amp_dtype,
                      tuple(meta.input_size))  # type: ignore[arg-type]
        rec = {'kind': 'val', 'step': step, 'epoch': micro / per_epoch,
               'time': elapsed_before + time.time() - t_start, **cm.summary(meta.class_names)}
        logger.write(rec, step)
        if d.main and rec['miou'] > best_miou:
            best_miou = rec['miou']
            if cfg.checkpoint.keep_best:
                save_checkpoint(out / 'best.pt', deployable_state(), meta,
                                {'step': step, 'miou': best_miou})
        return rec

    # ---- 5. the loop over micro-batches
    sampler = ResumableSampler(train_ds, d.world, d.rank, seed)
    last_val: dict[str, Any] | None = None
    loss_sum, loss_n, t_log = 0.0, 0, time.time()
    stop = False
    while step < total and not stop:
        epoch, offset = divmod(micro, per_epoch)
        if offset == 0:
            seed_everything(seed + epoch)  # RegSeg: seed = epoch at each epoch start
        sampler.set_epoch(epoch, skip=offset * o.batch_size)
        if hasattr(train_ds, 'set_epoch'):
            train_ds.set_epoch(epoch)
        # An own generator: creating the loader must not consume the global torch RNG
        # (a resumed run creates it at another point of the RNG stream).
        loader = DataLoader(train_ds, batch_size=o.batch_size, sampler=sampler,
                            num_workers=cfg.data.workers, collate_fn=collate, drop_last=True,
                            pin_memory=device.type == 'cuda',
                            generator=torch.Generator().manual_seed(seed + epoch))
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            x = normalize(images)
            if cfg.model.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            last_micro = (micro + 1) % o.accumulate == 0
            sync_ctx = (ddp_model.no_sync() if d.world > 1 and not last_micro  # type: ignore
                        else contextlib.nullcontext())
            with sync_ctx:
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                                    enabled=amp_dtype is not None):
                    outputs = ddp_model(x)
                loss = criterion(outputs, labels)
                scaler.scale(loss / o.accumulate).backward()
            micro += 1
            loss_sum += float(loss.detach())
            loss_n += 1
            if not last_micro:
                continue

            # -- one optimizer step
            if o.clip_grad:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), o.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if ema is not None:
                ema.update(_eval_model(model))
            step += 1
            if bar is not None:
                bar.update(1)

            if step % cfg.log_every == 0 or step == total:
                mean_loss = loss_sum / max(loss_n, 1)
                if not math.isfinite(mean_loss):
                    raise SegRosError(f'loss is {mean_loss} at step {step}: lower optim.lr')
                dt = time.time() - t_log
                rec = {'kind': 'train', 'step': step, 'epoch': micro / per_epoch,
                       'loss': mean_loss, 'lr': scheduler.get_last_lr()[0],
                       'images_per_s': loss_n * o.batch_size * d.world / max(dt, 1e-9),
                       'time': elapsed_before + time.time() - t_start,
                       # CPU seconds of this process: comparable across machine loads
                       'cpu_time': time.process_time()}
                logger.write(rec, step)
                if bar is not None:
                    bar.set_postfix(loss=f'{mean_loss:.3f}', lr=f'{rec["lr"]:.2e}',
                                    miou=f'{last_val["miou"]:.3f}' if last_val else '-')
                loss_sum, loss_n, t_log = 0.0, 0, time.time()
            if step == total or (cfg.eval.every and step % cfg.eval.every == 0):
                last_val = run_validation() or last_val
            if d.main and (step == total or (cfg.checkpoint.every
                                             and step % cfg.checkpoint.every == 0)):
                save_last()
            if d.world > 1:
                dist.barrier()  # nobody runs ahead while rank 0 writes
            if step >= total or (stop_after is not None and step >= stop_after):
                stop = True
                break

    # ---- 7. deployable weights
    if bar is not None:
        bar.close()
    summary: dict[str, Any] = {'step': step, 'total': total, 'best_miou': best_miou,
                               'last_val': last_val, 'out': str(out),
                               'time_s': elapsed_before + time.time() - t_start}
    if d.main and step >= total:
        save_checkpoint(out / 'final.pt', deployable_state(), meta,
                        {'step': step, 'miou': last_val['miou'] if last_val else None})
        (out / 'summary.json').write_text(json.dumps(summary, indent=1))
    logger.close()
    if d.world > 1:
        dist.barrier()
    return summary
