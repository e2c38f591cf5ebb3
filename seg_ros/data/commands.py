"""``seg-ros synth``: write a synthetic driving-scene dataset in the generic folder format."""
from __future__ import annotations

import argparse
import time

from seg_ros.arguments import (
    add_overwrite_argument,
    add_progress_argument,
    add_size_argument,
    check_output,
    plural,
)


def _add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--out', required=True, help='output folder (images/, masks/, '
                        'classes.yaml)')
    parser.add_argument('--n', type=int, default=100, help='number of frames (default 100)')
    add_size_argument(parser, 'frame HxW (default 512x1024)', default=(512, 1024), minimum=16)
    parser.add_argument('--seed', type=int, default=0, help='drive seed (default 0)')
    parser.add_argument('--start', type=int, default=0,
                        help='index of the first frame of the drive (default 0)')
    parser.add_argument('--stride', type=int, default=1,
                        help='take every STRIDE-th frame of the drive (default 1: a video; '
                             'larger: more varied training images)')
    add_overwrite_argument(parser, '--out folder')
    add_progress_argument(parser)


def _run_synth(args: argparse.Namespace) -> int:
    from seg_ros.data.synthetic import write_dataset

    size = args.size
    check_output(args.out, args.overwrite)
    t0 = time.perf_counter()
    out = write_dataset(args.out, args.n, size=size, seed=args.seed, start=args.start,
                        stride=args.stride, progress=not args.no_progress,
                        overwrite=args.overwrite)
    dt = time.perf_counter() - t0
    print(f'wrote {plural(args.n, "frame")} of {size[0]}x{size[1]} (seed {args.seed}) to {out} '
          f'in {dt:.1f} s')
    return 0


COMMANDS = {'synth': (_add_synth_arguments, _run_synth)}
