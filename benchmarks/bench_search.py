#!/usr/bin/env python3
"""Architecture-search benchmarks (issue 8 targets), too heavy for the test suite.

1. ``dilation``: RegSeg DNAS on the toy task (``config/search/dilation_toy.yaml``): the rates
   found, the field of view before / after, toy accuracy per rectangle width; then, as a
   control, the same training with the rates frozen at their start values.
2. ``latency``: ``seg-ros latency-profile`` on this machine, the 5-layer MLP's mean relative
   error on held-out measured units (paper: < 4%) and a test-retest of the measurements
   themselves (the floor any latency model can reach on this machine).
3. ``rtseg``: ``seg-ros search rtseg`` for each ``--target-ms``; the extracted subnet is
   benchmarked and compared with the target (issue target: within +-10%).

Usage::

    .venv/bin/python benchmarks/bench_search.py [--only dilation latency rtseg]
        [--targets 25 35] [--out /tmp/bench_search]

Timings on a shared CPU are noisy: each figure says how it was measured.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import subprocess
import sys
import time

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SEG_ROS = [str(ROOT / '.venv/bin/seg-ros')]


def _run(args: list[str]) -> None:
    print('$', ' '.join(args), flush=True)
    t0 = time.time()
    subprocess.run(args, check=True, cwd=ROOT)
    print(f'  ({time.time() - t0:.0f} s)', flush=True)


def bench_dilation(out: Path, steps: int | None) -> dict:
    import torch
    import yaml

    from seg_ros.search.dnas import search_dilations

    args = SEG_ROS + ['search', 'dilation', 'config/search/dilation_toy.yaml', '--out',
                      str(out / 'dilation'), '--no-progress', '--overwrite']
    if steps:
        args += ['--steps', str(steps)]
    _run(args)
    res = yaml.safe_load((out / 'dilation' / 'dilations.yaml').read_text())
    # control: same training, rates frozen (rate_lr 0)
    cfg = yaml.safe_load((ROOT / 'config/search/dilation_toy.yaml').read_text())
    cfg['train']['rate_lr'] = 0.0
    if steps:
        cfg['train']['steps'] = steps
    torch.set_num_threads(1)
    ctrl, _ = search_dilations(cfg, progress=False)
    return {'fov_initial': res['fov_initial'], 'fov_fractional': res['fov_fractional'],
            'fov_rounded': res['fov'], 'rates': res['fractional_rates'],
            'dilations': res['arch']['dilations'],
            'toy_accuracy_searched': res['toy_accuracy_per_width']['fractional'],
            'toy_accuracy_frozen_rates': ctrl.metrics['toy_accuracy_per_width']['fractional']}


def bench_latency(out: Path, samples: int) -> dict:
    import torch

    from seg_ros.search.latency import fit_from_table, measure_unit, table_units

    table_path = out / 'latency' / 'table.json'
    _run(SEG_ROS + ['latency-profile', '--config', 'config/search/rtseg_cpu.yaml', '--samples',
                    str(samples), '--models', '6', '--fit', '--out', str(table_path),
                    '--no-progress', '--overwrite'])
    table = json.loads(table_path.read_text())
    _, rep = fit_from_table(table)
    torch.set_num_threads(1)
    units, ms = table_units(table)
    idx = np.random.default_rng(0).choice(len(units), min(40, len(units)), replace=False)
    again = np.array([min(measure_unit(units[i], repeats=7) for _ in range(3)) for i in idx])
    ref = np.asarray(ms)[idx]
    rep['retest_mre'] = float(np.mean(np.abs(again - ref) / ref))
    return rep


def bench_rtseg(out: Path, targets: list[float], table: Path | None) -> list[dict]:
    rows = []
    for t in targets:
        d = out / f'rtseg_{t:g}ms'
        args = SEG_ROS + ['search', 'rtseg', 'config/search/rtseg_cpu.yaml', '--target-ms',
                          str(t), '--out', str(d), '--no-progress', '--overwrite']
        if table is not None and table.is_file():
            args += ['--latency-table', str(table)]
        _run(args)
        rep = json.loads((d / 'report.json').read_text())
        rows.append({k: rep[k] for k in ('target_ms', 'predicted_ms', 'measured_ms',
                                         'measured_vs_target', 'ops', 'params', 'macs')})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--only', nargs='*', default=['dilation', 'latency', 'rtseg'])
    ap.add_argument('--targets', nargs='*', type=float, default=[30.0])
    ap.add_argument('--samples', type=int, default=300)
    ap.add_argument('--steps', type=int, default=None, help='dilation search steps')
    ap.add_argument('--out', default='/tmp/bench_search')
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    if 'dilation' in a.only:
        results['dilation'] = bench_dilation(out, a.steps)
    if 'latency' in a.only:
        results['latency'] = bench_latency(out, a.samples)
    if 'rtseg' in a.only:
        table = out / 'latency' / 'table.json'
        results['rtseg'] = bench_rtseg(out, a.targets, table if 'latency' in a.only else None)
    (out / 'results.json').write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
