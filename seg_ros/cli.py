"""`seg-ros` command line: one subcommand per offline tool.

Each subcommand lives in the room that owns it. A command module exposes
``COMMANDS = {name: (add_arguments, run)}`` where ``add_arguments(parser)`` declares the
options and ``run(args) -> int`` does the work. Modules are imported only when their command
runs, so ``seg-ros --help`` stays fast (no torch import).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from seg_ros import __version__

# re-exported: scripts and tests import these from here (the commands use seg_ros.arguments)
from seg_ros.arguments import (  # noqa: F401
    missing_required,
    non_negative_int,
    parse_size,
    positive_int,
)
from seg_ros.errors import SegRosError, first_line


def error_detail(exc: BaseException) -> str:
    """The one-line reason the CLI prints for ``exc``.

    A :class:`SegRosError` is already worded for the user; any other exception is a bug or an
    unforeseen input, so its type is kept in front of the message for the report.
    """
    if isinstance(exc, RecursionError):
        return 'input nested too deeply (RecursionError)'
    detail = first_line(exc)
    if isinstance(exc, SegRosError):
        return detail or type(exc).__name__
    # a path the user typed that the OS refused: the path and the reason, in words
    reason = _OS_REASONS.get(type(exc)) if isinstance(exc, OSError) else None
    if reason is not None and getattr(exc, 'filename', None) is not None:
        return f'{exc.filename}: {reason}'
    # anything else is a bug or an input nobody foresaw: say so, and how to get the traceback
    what = f'{type(exc).__name__}: {detail}' if detail else type(exc).__name__
    return f'unexpected {what} (please report it; SEG_ROS_DEBUG=1 shows the traceback)'


_OS_REASONS: dict[type, str] = {
    FileNotFoundError: 'not found', NotADirectoryError: 'not a folder (a file is in the way)',
    IsADirectoryError: 'is a folder, expected a file', PermissionError: 'permission denied',
    FileExistsError: 'already exists'}


# name -> (one-line help, module that implements it)
COMMANDS: dict[str, tuple[str, str]] = {
    'models': ('list registered models with params, GMACs and field of view',
               'seg_ros.models.commands'),
    'fov': ('field of view per layer and dilation-gap check of a model',
            'seg_ros.models.commands'),
    'convert-official': ('convert an official RegSeg / SFNet-Lite checkpoint',
                         'seg_ros.models.commands'),
    'meta': ('show the metadata of a checkpoint, or copy it with another serving size',
             'seg_ros.models.commands'),
    'export': ('export a model or checkpoint to ONNX (uint8 in, class ids out)',
               'seg_ros.runtime.commands'),
    'build-engine': ('build a TensorRT engine from ONNX (fp32/fp16/int8, cached)',
                     'seg_ros.runtime.commands'),
    'bench': ('benchmark the segmentation pipeline on a backend', 'seg_ros.runtime.commands'),
    'predict': ('segment image files and write masks, colours and overlays',
                'seg_ros.runtime.commands'),
    'quantize': ('int8 ONNX for CPUs, written only if it keeps the fp32 ids (NNCF)',
                 'seg_ros.runtime.commands'),
    'synth': ('generate a synthetic driving-scene dataset', 'seg_ros.data.commands'),
    'train': ('train a model from a YAML config (torchrun for many GPUs)',
              'seg_ros.train.commands'),
    'eval': ('evaluate a checkpoint or model file: mIoU, per-class IoU, plots',
             'seg_ros.eval.commands'),
    'make-bag': ('write a rosbag2 from images, a dataset split or the synthetic generator',
                 'seg_ros.bag.commands'),
    'eval-bag': ('score a model on a rosbag, offline or live through the node',
                 'seg_ros.bag.commands'),
    'extract-frames': ('write frames of a bag topic as stamp-named images (+ camera_info)',
                       'seg_ros.bag.commands'),
    'search': ('architecture search: RegSeg dilation DNAS or RTSeg latency-aware search',
               'seg_ros.search.commands'),
    'latency-profile': ('measure block latencies on a backend for the RTSeg latency model',
                        'seg_ros.search.commands'),
    'demo': ('end-to-end demo: synthetic drive bag -> live node -> report in demo_out/',
             'seg_ros.demo'),
}


def _debug() -> bool:
    return os.environ.get('SEG_ROS_DEBUG', '') not in ('', '0')


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Build the parser; only ``command``'s module is imported to declare its options."""
    parser = argparse.ArgumentParser(
        prog='seg-ros',
        description='Real-time semantic segmentation for ROS 2: models, runtime, training, '
                    'evaluation and rosbag tools.',
        epilog='Set SEG_ROS_DEBUG=1 to see full tracebacks.')
    parser.add_argument('--version', action='version', version=f'seg-ros {__version__}')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name, (help_text, module_name) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            add_arguments, run = importlib.import_module(module_name).COMMANDS[name]
            add_arguments(p)
            p.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``seg-ros``; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith('-')), None)
    if command is not None and command not in COMMANDS:
        command = None
    try:
        parser = build_parser(command)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        missing = missing_required(args)  # also merges a positional MODEL into --model
        if missing:  # argparse's wording: `required` is checked here because an old
            # spelling of the option (e.g. eval --weights) may have supplied the value
            print(f'seg-ros {command}: error: the following arguments are required: '
                  f'{", ".join(missing)}', file=sys.stderr)
            return 2
        if getattr(args, 'no_progress', False):
            # for the bars deep in code that takes no `progress` argument (seg_ros.progress)
            from seg_ros.progress import ENV_OFF

            previous = os.environ.get(ENV_OFF)
            os.environ[ENV_OFF] = '1'
            try:
                return int(args._run(args) or 0)
            finally:  # main() also runs in-process (tests): leave the environment as it was
                if previous is None:
                    del os.environ[ENV_OFF]
                else:
                    os.environ[ENV_OFF] = previous
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print('seg-ros: interrupted', file=sys.stderr)
        return 130
    except Exception as exc:  # every failure of every subcommand: one line, exit 1
        if _debug():
            raise
        name = f' {command}' if command else ''
        print(f'seg-ros{name}: error: {error_detail(exc)}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
