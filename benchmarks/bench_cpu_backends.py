"""The CPU path (issue 16): model x backend x precision, against torch eager.

    .venv/bin/python benchmarks/bench_cpu_backends.py --sizes 512x1024 1024x2048 --threads 2 \\
        --models shipped sfnet_lite_r18 rtseg_s eseg_lite_s --out benchmarks/results/cpu_backends

``shipped`` is models/regseg48_synthetic.pt (trained); any other name is that registered model
with its seed-0 random initialisation: its latencies are real, but the ids of an untrained
network are near-ties everywhere, so its bf16 agreement is a lower bound (fp32 routes must
still agree). For each model and network size: one fp32 export, then in one process and
on the same synthetic frames, interleaved so all runs see the same machine load,

* torch eager fp32 NCHW (the bare network: the reference every speed-up is measured against),
* ONNX Runtime fp32, OpenVINO fp32, OpenVINO bf16 (only where the CPU has native bf16),
* for the shipped (trained) model only: the int8 file of ``seg-ros quantize`` (NNCF,
  calibrated on synthetic frames of other seeds) on OpenVINO and ONNX Runtime,

each through the full :class:`~seg_ros.runtime.segmenter.Segmenter` (uint8 frame in, ids out),
reporting latency p50/p99 and the share of pixels whose id equals torch eager's. The CPU's
model and flags head the report: the figures mean nothing without them. Writes
``cpu_backends.json`` and ``cpu_backends.md`` (the table) to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import sys
import tempfile
import time
from typing import Any

import numpy as np
from tqdm import tqdm

from seg_ros.cli import parse_size
from seg_ros.runtime.bench import bench_frames, summarize, torch_eager_baseline
from seg_ros.runtime.cpu import cpu_info
from seg_ros.runtime.segmenter import Segmenter

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / 'models' / 'regseg48_synthetic.pt'


def _routes(onnx: Path, int8: Path | None, threads: int) -> list[tuple[str, Segmenter]]:
    routes = [('onnxruntime fp32', Segmenter.from_file(onnx, backend='onnxruntime',
                                                       device='cpu', threads=threads)),
              ('openvino fp32', Segmenter.from_file(onnx, backend='openvino', device='cpu',
                                                    precision='fp32', threads=threads))]
    if cpu_info().native_bf16:
        routes.append(('openvino bf16', Segmenter.from_file(onnx, backend='openvino',
                                                            device='cpu', precision='bf16',
                                                            threads=threads)))
    if int8 is not None:
        for backend in ('openvino', 'onnxruntime'):
            routes.append((f'{backend} int8', Segmenter.from_file(
                int8, backend=backend, device='cpu', precision='int8', threads=threads)))
    return routes


def bench_size(model: str, size: tuple[int, int], threads: int, iters: int, work: Path,
               calib_frames: int) -> dict[str, Any]:
    """All routes of one model at one network size."""
    import torch

    from seg_ros.runtime.export import export_onnx, load_model_and_meta
    from seg_ros.runtime.quantize import quantize_onnx, split_frames

    shipped = model == 'shipped'
    torch.manual_seed(0)  # the untrained models' weights: the same in every run
    net, meta = load_model_and_meta(str(CHECKPOINT) if shipped else model, None, size)
    stem = f'{model}_{size[0]}x{size[1]}'
    onnx = export_onnx(net, meta, work / f'{stem}.onnx', size=size)
    report = None
    int8_path = None
    if shipped:
        calib, held = split_frames([f for s in range(4) for f in bench_frames(
            size, n=max(2, calib_frames // 4), seed=500 + s)], max(1, calib_frames // 4))
        int8_path = work / f'{stem}_int8.onnx'
        # the gate is reported, not applied: the table shows what int8 costs
        report = quantize_onnx(onnx, calib, held, int8_path, min_agreement=1e-9,
                               threads=threads)
    frames = bench_frames(size, n=4, seed=7)
    step, eager_ids = torch_eager_baseline(net, meta.mean, meta.std, frames, size, threads)
    reference = [eager_ids(i) for i in range(len(frames))]
    routes = _routes(onnx, int8_path, threads)
    times: dict[str, list[float]] = {'torch eager fp32': [], **{n: [] for n, _ in routes}}
    for i in tqdm(range(iters + 2), desc=f'{model} {size[0]}x{size[1]}', unit='round'):
        k = i % len(frames)
        t0 = time.perf_counter()
        step(k)
        if i >= 2:  # two warm-up rounds
            times['torch eager fp32'].append((time.perf_counter() - t0) * 1e3)
        for name, seg in routes:
            t0 = time.perf_counter()
            seg(frames[k])
            if i >= 2:
                times[name].append((time.perf_counter() - t0) * 1e3)
    rows = []
    eager_p50 = float(np.median(times['torch eager fp32']))
    for name, samples in times.items():
        seg = dict(routes).get(name)
        agree = 1.0 if seg is None else float(np.mean(
            [(seg(f).ids == r).mean() for f, r in zip(frames, reference)]))
        stats = summarize(samples)
        rows.append({'route': name, 'p50_ms': stats['median'], 'p99_ms': stats['p99'],
                     'speedup_vs_eager': eager_p50 / stats['median'],
                     'ids_agreement_vs_eager': agree,
                     'precision_reason': seg.precision_reason if seg else 'reference'})
    for _, seg in routes:
        seg.close()
    return {'model': 'regseg48 (shipped, trained)' if shipped else f'{model} (untrained)',
            'size': list(size), 'rows': rows,
            'int8_agreement_vs_fp32_held_out': report.agreement if report else None,
            'int8_calibration_frames': report.calibration_frames if report else 0}


def markdown(result: dict[str, Any]) -> str:
    """The report as a markdown table per size."""
    lines = [f'CPU: {result["cpu"]}; {result["threads"]} threads; {result["iters"]} rounds; '
             f'load average at the end {result.get("load_average_at_end", float("nan")):.2f}',
             '']
    for block in result['sizes']:
        h, w = block['size']
        int8 = block['int8_agreement_vs_fp32_held_out']
        note = '' if int8 is None else f' (int8 vs fp32 on held-out frames: {100 * int8:.2f}%)'
        lines += [f'### {block.get("model", "regseg48 (shipped)")}, {h}x{w}{note}', '',
                  '| route | p50 ms | p99 ms | speed-up vs eager | ids = eager |',
                  '|---|---|---|---|---|']
        for r in block['rows']:
            lines.append(f'| {r["route"]} | {r["p50_ms"]:.1f} | {r["p99_ms"]:.1f} | '
                         f'{r["speedup_vs_eager"]:.2f}x | '
                         f'{100 * r["ids_agreement_vs_eager"]:.2f}% |')
        lines.append('')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--sizes', nargs='+', type=parse_size, default=[(512, 1024)])
    p.add_argument('--models', nargs='+', default=['shipped'],
                   help='"shipped" (models/regseg48_synthetic.pt) and/or registered model names')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--iters', type=int, default=20)
    p.add_argument('--calib-frames', type=int, default=32)
    p.add_argument('--out', type=Path, default=ROOT / 'benchmarks' / 'results' / 'cpu_backends')
    args = p.parse_args(argv)
    print(f'CPU: {cpu_info().summary()}', flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        sizes = [bench_size(m, s, args.threads, args.iters, Path(tmp), args.calib_frames)
                 for m in args.models for s in args.sizes]
    result = {'cpu': cpu_info().summary(), 'threads': args.threads, 'iters': args.iters,
              'load_average_at_end': os.getloadavg()[0],
              'sizes': sizes}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / 'cpu_backends.json').write_text(json.dumps(result, indent=2) + '\n')
    table = markdown(result)
    (args.out / 'cpu_backends.md').write_text(table + '\n')
    print(table)
    return 0


if __name__ == '__main__':
    sys.exit(main())
