"""``seg-ros synth``: write a synthetic driving-scene dataset in the generic folder format."""
from __future__ import annotations

import argparse
import time

from seg_ros.cli import parse_size


def _add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--out', required=True, help='output folder (images/, masks/, '
                        'classes.yaml)')
    parser.add_argument('--n', type=int, default=100, help='number of frames (default 100)')
    parser.add_argument('--size', default='512x1024', help='HxW (default 512x1024)')
    parser.add_argument('--seed', type=int, default=0, help='drive seed (default 0)')
    parser.add_argument('--start', type=int, default=0,
                        help='index of the first frame of the drive (default 0)')
    parser.add_argument('--stride', type=int, default=1,
                        help='take every STRIDE-th frame of the drive (default 1: a video; '
                             'larger: more varied training images)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace a dataset already in --out')


def _run_synth(args: argparse.Namespace) -> int:
    from seg_ros.data.synthetic import write_dataset

    size = parse_size(args.size, minimum=16)
    t0 = time.perf_counter()
    out = write_dataset(args.out, args.n, size=size, seed=args.seed, start=args.start,
                        stride=args.stride, progress=True, overwrite=args.overwrite)
    dt = time.perf_counter() - t0
    print(f'wrote {args.n} frames of {size[0]}x{size[1]} (seed {args.seed}) to {out} '
          f'in {dt:.1f} s')
    return 0


COMMANDS = {'synth': (_add_synth_arguments, _run_synth)}
