"""Synthetic driving-scene generator throughput on ONE core (target: >= 50 frames/s, 512x1024).

Usage: .venv/bin/python benchmarks/bench_synth.py [--size 512x1024] [--frames 300] [--seed 0]

Pins the process to one CPU (where the OS allows), sets OpenCV to one thread and renders a
sequence of consecutive frames (as ``seg-ros synth`` and training do). Reports frames/s over
the whole run (segment generation included), both per wall-clock second and per CPU second of
this process (``time.process_time``): on a shared, loaded machine the wall-clock figure
measures the neighbours too, the CPU figure is what one dedicated core would do. Also the
median / p90 per-frame wall time. Figures are noisy: run it twice.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import cv2
import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--size', default='512x1024', help='HxW')
    ap.add_argument('--frames', type=int, default=300)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--start', type=int, default=0, help='first frame index')
    ap.add_argument('--json', action='store_true')
    ap.add_argument('--mosaic', metavar='JPG',
                    help='also write a JPEG mosaic of frames and labels (4 seeds x 2 times)')
    args = ap.parse_args()
    if hasattr(os, 'sched_setaffinity'):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cv2.setNumThreads(1)
    from seg_ros.data.synthetic import SyntheticDrive

    h, w = (int(x) for x in args.size.lower().split('x'))
    drive = SyntheticDrive(size=(h, w), seed=args.seed)
    drive.frame(args.start)  # warm-up (first segments, numpy/cv2 first calls)
    times = []
    t_all = time.perf_counter()
    c_all = time.process_time()
    for i in range(args.start + 1, args.start + 1 + args.frames):
        t = time.perf_counter()
        drive.frame(i)
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - t_all
    cpu = time.process_time() - c_all
    ms = np.array(times) * 1e3
    res = {'size': [h, w], 'frames': args.frames, 'fps': args.frames / total,
           'fps_cpu': args.frames / cpu, 'load_avg_1min': os.getloadavg()[0],
           'median_ms': float(np.median(ms)), 'p90_ms': float(np.percentile(ms, 90)),
           'max_ms': float(ms.max()), 'cores': 1}
    if args.json:
        print(json.dumps(res))
    else:
        print(f'SyntheticDrive {h}x{w}, {args.frames} consecutive frames, 1 core: '
              f'{res["fps"]:.1f} frames/s wall, {res["fps_cpu"]:.1f} frames/s per CPU second '
              f'(median {res["median_ms"]:.1f} ms, '
              f'p90 {res["p90_ms"]:.1f} ms, max {res["max_ms"]:.1f} ms; load average '
              f'{res["load_avg_1min"]:.1f})')
    if args.mosaic:
        write_mosaic(args.mosaic)
    return 0


def write_mosaic(path: str, size: tuple[int, int] = (256, 512)) -> None:
    """Frames (left) and colour-coded labels (right) of 4 drives at two times."""
    from seg_ros.data.synthetic import SyntheticDrive
    from seg_ros.metadata import CITYSCAPES_PALETTE

    lut = np.zeros((256, 3), np.uint8)
    lut[:19] = CITYSCAPES_PALETTE
    rows = []
    for seed in range(4):
        drive = SyntheticDrive(size=size, seed=seed)
        for i in (0, 400):
            rgb, label = drive.frame(i)
            rows.append(np.concatenate([rgb, lut[label]], axis=1))
    grid = np.concatenate([np.concatenate(rows[k:k + 2], axis=1)
                           for k in range(0, len(rows), 2)], axis=0)
    # JPEG keeps the noisy frames small enough for the docs
    cv2.imwrite(path, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f'wrote {path}')


if __name__ == '__main__':
    raise SystemExit(main())
