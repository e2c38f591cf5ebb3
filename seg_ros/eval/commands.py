"""``seg-ros eval --model CKPT_OR_ONNX --data DIR|KIND:ROOT[:SPLIT] [...]``."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from seg_ros.arguments import (
    add_model_argument,
    add_overwrite_argument,
    add_progress_argument,
    add_renamed,
    add_size_argument,
    check_output,
    plural,
    size_type,
)
from seg_ros.errors import SegRosError

__all__ = ['COMMANDS', 'add_arguments', 'run']


_size = size_type()


def _scales(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(',') if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected e.g. 0.75,1,1.25, got {text!r}') from None
    if not vals or min(vals) <= 0:
        raise argparse.ArgumentTypeError(f'scales must be > 0, got {text!r}')
    return vals


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``seg-ros eval``."""
    add_model_argument(parser, 'seg_ros checkpoint (.pt), ONNX file, TensorRT engine, or a '
                               'registered model name')
    add_renamed(parser, '--weights', '--model', 'model')
    parser.add_argument('--data', required=True, metavar='DIR|KIND:ROOT[:SPLIT]',
                        help='a dataset folder (layout detected: folder with classes.yaml, '
                             'Cityscapes, CamVid; DIR:SPLIT picks a split), or '
                             'cityscapes:/data/cityscapes:val, camvid:/data/CamVid:test, '
                             'folder:DIR, synthetic:val (split defaults to val)')
    parser.add_argument('--option', action='append', default=[], metavar='KEY=VALUE',
                        help='dataset option (synthetic: size=[256,512], length=100, '
                             'drive_seed=0); repeatable')
    parser.add_argument('--backend', default='auto',
                        choices=['auto', 'tensorrt', 'onnxruntime', 'torch'])
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda, cuda:N')
    add_size_argument(parser, 'network input HxW (default: from the model metadata)',
                      old=('--input-size',))
    parser.add_argument('--flip', action='store_true',
                        help='average with the horizontally flipped frame (checkpoint only)')
    parser.add_argument('--scales', type=_scales, default=[1.0], metavar='S1,S2,...',
                        help='multi-scale test: average softmax over these input scales, '
                             'e.g. 0.75,1,1.25 (checkpoint only)')
    parser.add_argument('--max-images', type=int, default=0, help='score at most N images')
    parser.add_argument('--threads', type=int, help='CPU threads')
    parser.add_argument('--json', action='store_true', help='print the result as JSON')
    parser.add_argument('--out', help='write metrics.json, confusion_matrix.png, '
                                      'per_class_iou.png into this folder')
    add_overwrite_argument(parser, '--out folder')
    add_progress_argument(parser)


def _options(items: list[str]) -> dict[str, Any]:
    import yaml

    opts: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition('=')
        if not sep or not key.strip():
            raise SegRosError(f'--option expects KEY=VALUE, got {item!r}')
        value = yaml.safe_load(raw)
        if key.strip() == 'size':  # HxW or [H, W], refused here in the CLI's words
            if isinstance(value, str):
                value = list(_size(value))
            elif not (isinstance(value, list) and len(value) == 2
                      and all(isinstance(v, int) and v > 0 for v in value)):
                raise SegRosError(f'--option size= expects HxW or [H, W], got {raw!r}')
        opts[key.strip()] = value
    return opts


def run(args: argparse.Namespace) -> int:
    """Run ``seg-ros eval``."""
    from seg_ros.eval.evaluate import evaluate, parse_data_spec, write_report

    kind, root, split = parse_data_spec(args.data)
    if args.max_images < 0:
        raise SegRosError('--max-images must be >= 0')
    check_output(args.out, args.overwrite)
    result = evaluate(args.model, kind, root, split, backend=args.backend,
                      device=args.device, flip=args.flip, scales=args.scales,
                      input_size=args.size, max_images=args.max_images,
                      data_options=_options(args.option), threads=args.threads,
                      progress=not args.no_progress and not args.json)
    summary = result.summary()
    if args.out:
        summary['files'] = write_report(result, args.out)
    if args.json:
        json.dump(summary, sys.stdout, indent=1)
        sys.stdout.write('\n')
    else:
        print(f'{summary["model"]} on {kind} {split} ({plural(result.images, "image")}, '
              f'{summary["backend"]}): mIoU {summary["miou"]:.4f}, '
              f'pixel accuracy {summary["pixel_accuracy"]:.4f}')
        for name, v in summary['per_class_iou'].items():
            print(f'  {name:>14s}  {"n/a" if v is None else f"{v:.4f}"}')
        if args.out:
            print(f'plots and metrics in {args.out}')
    return 0


COMMANDS = {'eval': (add_arguments, run)}
