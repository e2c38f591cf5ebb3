"""CPU eager forward time of registered models (issue 3 closing-note figure).

Usage: ``python benchmarks/models_cpu_forward.py [--models regseg48 ...] [--size 512x1024]
[--threads 2] [--reps 5] [--json]``. Reports median / min / max of ``reps`` timed forwards
after one warm-up, fp32, no_grad, batch 1, and the 1-minute load average before and after
(the machine is shared; a load above the core count makes the numbers noisy).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from seg_ros.cli import parse_size
from seg_ros.models import create_model


def bench(name: str, size: tuple[int, int], reps: int) -> dict[str, float | str | list[float]]:
    """Time ``reps`` forwards of ``name`` at ``size`` after one warm-up."""
    model = create_model(name)
    x = torch.randn(1, 3, *size)
    times = []
    with torch.no_grad():
        model(x)  # warm-up: allocator, oneDNN primitive caches
        for _ in range(reps):
            t = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t) * 1e3)
    return {'model': name, 'size': f'{size[0]}x{size[1]}', 'median_ms': statistics.median(times),
            'min_ms': min(times), 'max_ms': max(times), 'runs_ms': [round(t, 1) for t in times]}


def main() -> None:
    """Parse arguments, run, print."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--models', nargs='+', default=['regseg48'])
    ap.add_argument('--size', default='512x1024')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--reps', type=int, default=5)
    ap.add_argument('--json', action='store_true')
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]
    rows = [bench(m, parse_size(args.size), args.reps) for m in args.models]
    load1 = os.getloadavg()[0]
    for r in rows:
        r.update(threads=args.threads, load_before=load0, load_after=load1,
                 cores=os.cpu_count() or 0)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            print(f'{r["model"]:18s} {r["size"]:>10s} median {r["median_ms"]:8.1f} ms  '
                  f'(min {r["min_ms"]:.1f}, max {r["max_ms"]:.1f}; runs {r["runs_ms"]}) '
                  f'threads {r["threads"]}, load {load0:.1f} -> {load1:.1f} on '
                  f'{r["cores"]} cores')


if __name__ == '__main__':
    main()
