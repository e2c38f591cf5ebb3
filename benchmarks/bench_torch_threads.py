"""The torch backend on a shared CPU (issue 16): OpenMP wait policy x intra-op threads.

    .venv/bin/python benchmarks/bench_torch_threads.py --load 2 \\
        --out benchmarks/results/cpu_backends/torch_threads.json

On a CPU that other processes also use, OpenMP threads that busy-wait between parallel
regions (``OMP_WAIT_POLICY=ACTIVE``, libgomp's behaviour for a while after each region) steal
the cores their own sibling threads need, and torch eager collapses. ``import seg_ros`` sets
``OMP_WAIT_POLICY=PASSIVE`` unless the user set it. This benchmark measures the torch backend
(``Segmenter``, shipped regseg48, frames at the demo's 256x512, network at the checkpoint's
size) in a fresh process per case -- the wait policy is read once, when libgomp loads -- with
``--load`` busy processes running beside it (each one spins NumPy on a core), so the shared
machine is reproducible rather than whatever else happened to run.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
from pathlib import Path
import subprocess
import sys
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / 'models' / 'regseg48_synthetic.pt'

CHILD = r"""
import json, os, sys, time
import numpy as np
from seg_ros.runtime.segmenter import Segmenter
threads = int(sys.argv[1])
seg = Segmenter.from_file(sys.argv[2], backend='torch', device='cpu', threads=threads)
img = np.random.default_rng(0).integers(0, 255, (256, 512, 3), np.uint8)
for _ in range(3):
    seg(img)
ts = []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter()
    seg(img)
    ts.append((time.perf_counter() - t) * 1e3)
print(json.dumps({'p50_ms': float(np.percentile(ts, 50)), 'p99_ms': float(np.percentile(ts, 99)),
                  'load_average': os.getloadavg()[0]}))
"""


def _spin(stop: Any) -> None:
    import numpy as np

    a = np.random.default_rng(0).random((256, 256))
    while not stop.is_set():
        a = np.tanh(a @ a)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--load', type=int, default=2, help='busy processes beside the benchmark')
    p.add_argument('--iters', type=int, default=15)
    p.add_argument('--out', type=Path,
                   default=ROOT / 'benchmarks' / 'results' / 'cpu_backends' / 'torch_threads.json')
    args = p.parse_args(argv)
    from seg_ros.runtime.cpu import cpu_info

    print(f'CPU: {cpu_info().summary()}; {os.cpu_count()} cores; {args.load} busy processes',
          flush=True)
    stop = mp.Event()
    spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(args.load)]
    for s in spinners:
        s.start()
    rows = []
    try:
        for policy in ('ACTIVE', 'PASSIVE'):
            for threads in (os.cpu_count() or 1, 1):
                env = {**os.environ, 'OMP_WAIT_POLICY': policy,
                       # spinners use one core each: their NumPy must not fan out
                       'OPENBLAS_NUM_THREADS': '1'}
                out = subprocess.run([sys.executable, '-c', CHILD, str(threads), str(CHECKPOINT),
                                      str(args.iters)], env=env, capture_output=True, text=True,
                                     check=True)
                row = {'omp_wait_policy': policy, 'threads': threads,
                       **json.loads(out.stdout.strip().splitlines()[-1])}
                rows.append(row)
                print(f'{policy:7s} threads {threads}: p50 {row["p50_ms"]:.1f} ms, '
                      f'p99 {row["p99_ms"]:.1f} ms (load {row["load_average"]:.1f})', flush=True)
    finally:
        stop.set()
        for s in spinners:
            s.join()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({'cpu': cpu_info().summary(), 'cores': os.cpu_count(),
                                    'busy_processes': args.load, 'rows': rows}, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
