"""``seg-ros train CONFIG.yaml [--set key=value ...] [--resume]``.

Also ``python -m seg_ros.train CONFIG`` and, for many GPUs / nodes,
``torchrun --nproc_per_node=N -m seg_ros.train CONFIG``.
"""
from __future__ import annotations

import argparse
import json

from seg_ros.arguments import add_progress_argument

__all__ = ['COMMANDS', 'add_arguments', 'run']


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``seg-ros train``."""
    parser.add_argument('config', help='training YAML (config/train/*.yaml)')
    parser.add_argument('--set', dest='overrides', action='append', default=[],
                        metavar='KEY=VALUE',
                        help='override a config value, e.g. --set optim.lr=0.01 '
                             '--set data.root=/data/cityscapes (repeatable; YAML values)')
    parser.add_argument('--resume', action='store_true',
                        help='continue from <out>/last.pt (same weights as an uninterrupted '
                             'run, bit-exact on CPU)')
    parser.add_argument('--out', help='output folder (shortcut for --set out=DIR)')
    parser.add_argument('--print-config', action='store_true',
                        help='print the resolved config and exit')
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Run ``seg-ros train``."""
    import torch.distributed as dist

    from seg_ros.train.config import load_config
    from seg_ros.train.loop import train

    overrides = list(args.overrides) + ([f'out={args.out}'] if args.out else [])
    cfg = load_config(args.config, overrides)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=1))
        return 0
    try:
        summary = train(cfg, resume=args.resume)
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
