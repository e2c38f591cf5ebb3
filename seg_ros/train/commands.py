"""``seg-ros train CONFIG.yaml [--data DIR] [--set key=value ...] [--resume [--accept-changes]]``.

Also ``python -m seg_ros.train CONFIG`` and, for many GPUs / nodes,
``torchrun --nproc_per_node=N -m seg_ros.train CONFIG``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from seg_ros.arguments import add_progress_argument
from seg_ros.errors import SegRosError

__all__ = ['COMMANDS', 'add_arguments', 'data_overrides', 'resolve_config', 'run']


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``seg-ros train``."""
    parser.add_argument('config', help='training YAML (config/train/*.yaml; your own labelled '
                                       'frames: config/train/folder.yaml); with --resume also '
                                       'the run folder')
    parser.add_argument('--data', metavar='DIR|KIND:ROOT',
                        help='the dataset: a folder (layout detected: classes.yaml + '
                             'images/ + masks/, Cityscapes, CamVid) or KIND:ROOT; shortcut for '
                             '--set data.kind=KIND --set data.root=ROOT')
    parser.add_argument('--set', dest='overrides', action='append', default=[],
                        metavar='KEY=VALUE',
                        help='override a config value, e.g. --set optim.lr=0.01 '
                             '--set data.root=/data/cityscapes (repeatable; YAML values)')
    parser.add_argument('--resume', action='store_true',
                        help="continue from <out>/last.pt with the run's settings (its --sets "
                             'need not be retyped; bit-exact on CPU). A larger '
                             'optim.iterations extends the run (LR schedule recomputed); '
                             'other changed settings are refused')
    parser.add_argument('--accept-changes', action='store_true',
                        help='with --resume: continue with changed settings (saved to '
                             '<out>/config.resume-N.yaml; config.yaml stays)')
    parser.add_argument('--out', help='output folder (shortcut for --set out=DIR)')
    parser.add_argument('--print-config', action='store_true',
                        help='print the resolved config and exit')
    add_progress_argument(parser)


def data_overrides(spec: str) -> list[str]:
    """``--data`` as ``--set``s: ``data.kind``, ``data.root`` (and ``data.val_fraction=0`` for
    datasets with their own splits).

    Raises:
        SegRosError: not a dataset, or a split given (splits are ``data.train_split`` /
            ``data.val_split``).
    """
    from seg_ros.data.datasets import parse_data_spec

    kind, root, split = parse_data_spec(spec, default_split='')
    if split:
        raise SegRosError(f'--data {spec}: train takes no split here; set data.train_split / '
                          f'data.val_split')
    sets = [f'data.kind={kind}', f'data.root={json.dumps(root)}']
    if kind != 'folder':
        sets.append('data.val_fraction=0')  # Cityscapes / CamVid bring their own val split
    return sets


def _run_folder(config: str) -> Path | None:
    """The run folder ``config`` names for ``--resume``: the folder itself, or the folder of a
    run's ``config.yaml`` / ``config.resume-N.yaml``."""
    path = Path(config)
    if path.is_dir():
        return path
    if path.parent.joinpath('last.pt').is_file() and path.name.startswith('config') \
            and path.suffix == '.yaml':
        return path.parent
    return None


def _stored(run: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(resolved config, source) the run's ``last.pt`` was trained with (None when absent)."""
    last = run / 'last.pt'
    if not last.is_file():
        return None, None
    import torch

    try:  # mmap: only the small config entries are read, not the weights
        data = torch.load(last, map_location='cpu', weights_only=True, mmap=True)
        tr = data['extra']['train']
        return tr.get('config'), tr.get('source')
    except Exception:  # damaged / foreign: the loop reports it when it loads the file
        return None, None


def resolve_config(config: str, overrides: list[str],
                   resume: bool) -> tuple[Any, dict[str, Any]]:
    """The run configuration and its source (``{'config', 'overrides'}``).

    Without ``resume``: ``config`` + ``overrides``. With ``resume``: the run's own settings --
    ``config`` (as it is now) + the ``--set``s the run was started with + the new
    ``overrides``; for a run folder (or its ``config.yaml``) the settings stored in its
    ``last.pt`` + the new ``overrides``. What then differs from the run is the loop's to judge.
    """
    from seg_ros.train.config import config_from_dict, load_config

    source = {'config': str(config), 'overrides': list(overrides)}
    if not resume:
        return load_config(config, overrides), source
    run = _run_folder(config)
    if run is not None:
        stored, old_source = _stored(run)
        if stored is None:
            stored_path = run / 'config.yaml'
            return load_config(stored_path, [*overrides, f'out={json.dumps(str(run))}']), source
        cfg = config_from_dict(stored, [*overrides, f'out={json.dumps(str(run))}'])
        if old_source and old_source.get('config') is not None:
            # a later resume through the config file must see these --sets too
            source = {'config': old_source['config'],
                      'overrides': list(old_source.get('overrides') or []) + list(overrides)}
        return cfg, source
    out = load_config(config, overrides).out
    stored, old_source = _stored(Path(out))
    if stored is None:
        return load_config(config, overrides), source
    if old_source and old_source.get('config') is not None:
        before = list(old_source.get('overrides') or [])
        merged = {'config': str(config), 'overrides': before + list(overrides)}
        return load_config(config, merged['overrides']), merged
    # an older run without its --sets on record: its stored settings stand for them
    return config_from_dict(stored, overrides), source


def run(args: argparse.Namespace) -> int:
    """Run ``seg-ros train``."""
    import torch.distributed as dist

    from seg_ros.train.loop import train

    if args.accept_changes and not args.resume:
        raise SegRosError('--accept-changes goes with --resume')
    overrides = (data_overrides(args.data) if args.data else []) + list(args.overrides) \
        + ([f'out={json.dumps(args.out)}'] if args.out else [])
    cfg, source = resolve_config(args.config, overrides, args.resume)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=1))
        return 0
    try:
        summary = train(cfg, resume=args.resume, accept_changes=args.accept_changes,
                        source=source)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if summary.get('last_val') is None or not _is_main():
        return 0
    val = summary['last_val']
    print(f'done: {summary["step"]} iterations in {summary["time_s"] / 60:.1f} min, '
          f'val mIoU {val["miou"]:.4f} (best {summary["best_miou"]:.4f}); '
          f'weights: {summary["out"]}/final.pt')
    return 0


def _is_main() -> bool:
    import os
    return os.environ.get('RANK', '0') == '0'


COMMANDS = {'train': (add_arguments, run)}
