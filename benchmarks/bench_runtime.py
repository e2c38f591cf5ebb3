"""Issue-4 runtime targets on this machine: ONNX Runtime pipeline vs torch eager, pre/post cost.

    .venv/bin/python benchmarks/bench_runtime.py [--ckpt CKPT] [--size 512x1024]
        [--frame-size 1024x2048] [--threads 2] [--iters 20] [--out benchmarks/results]

1. ``onnxruntime`` pipeline (uint8 frames in, ids out) vs the bare network in torch eager fp32
   NCHW, interleaved frame by frame (same load on a shared machine), at the network size:
   speed-up (wall and CPU time) and ids agreement. Target >= 2x.
2. Pre + post-processing with camera frames larger than the network (resize in; ids back to
   the frame size, colour LUT and overlay out) as a fraction of inference. Target <= 10 %.

Without ``--ckpt`` a seeded random-init checkpoint is written (speed does not depend on the
weights; agreement is then measured on untrained logits, which is the harder case: near ties).
Writes ``runtime_bench.json`` and ``runtime_bench.png`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import tempfile

import numpy as np


def main() -> int:
    from seg_ros.cli import parse_size
    from seg_ros.runtime.bench import (
        bench_frames,
        bench_segmenter,
        peak_rss_mb,
        torch_eager_baseline,
    )
    from seg_ros.runtime.export import load_model_and_meta
    from seg_ros.runtime.segmenter import Segmenter

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', default='regseg48')
    p.add_argument('--ckpt', default=None)
    p.add_argument('--size', type=parse_size, default=(512, 1024))
    p.add_argument('--frame-size', type=parse_size, default=(1024, 2048))
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--iters', type=int, default=20)
    p.add_argument('--cache', default=None, help='export cache (default: a temp dir)')
    p.add_argument('--out', default='benchmarks/results')
    args = p.parse_args()

    import torch

    ckpt = args.ckpt
    tmp = Path(tempfile.mkdtemp(prefix='seg_ros_bench_'))
    if ckpt is None:
        from seg_ros.metadata import ModelMeta
        from seg_ros.models import create_model
        from seg_ros.models.checkpoint import save_checkpoint

        torch.manual_seed(0)
        ckpt = str(tmp / f'{args.model}_seed0.pt')
        save_checkpoint(ckpt, create_model(args.model),
                        ModelMeta.for_dataset(args.model, input_size=list(args.size)))
    cache = args.cache or str(tmp / 'cache')
    seg = Segmenter.from_file(ckpt, backend='onnxruntime', device='cpu', input_size=args.size,
                              threads=args.threads, engine_cache_dir=cache)
    net, meta = load_model_and_meta(ckpt, None, args.size)

    # 1. pipeline vs torch eager at the network size
    frames = bench_frames(args.size, n=8)
    step, ids_ref = torch_eager_baseline(net, meta.mean, meta.std, frames, args.size,
                                         args.threads)
    cmp = bench_segmenter(seg, frames, args.iters, warmup=2, baseline=step)
    agree = [float((seg(f).ids == ids_ref(i)).mean()) for i, f in enumerate(frames)]
    base = cmp.pop('baseline')
    # 2. camera-size frames with colour + overlay: the host-side cost
    big = bench_frames(args.frame_size, n=4)
    host = bench_segmenter(seg, big, max(5, args.iters // 2), warmup=1, color=True,
                           overlay=True)
    pre_post = host['preprocess_ms']['median'] + host['postprocess_ms']['median']
    result = {
        'model': args.model, 'network_size': list(args.size),
        'frame_size': list(args.frame_size), 'threads': args.threads, 'iters': args.iters,
        'torch_threads': torch.get_num_threads(),
        'ort_pipeline': cmp, 'torch_eager': base,
        'speedup_wall': base['total_ms']['median'] / cmp['total_ms']['median'],
        'speedup_cpu': base['cpu_ms']['median'] / cmp['cpu_ms']['median'],
        'ids_agreement': float(np.mean(agree)), 'ids_agreement_min': float(np.min(agree)),
        'camera_frames_color_overlay': host,
        'pre_post_over_inference': pre_post / host['inference_ms']['median'],
        'peak_rss_mb': peak_rss_mb(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'runtime_bench.json').write_text(json.dumps(result, indent=2))
    _plot(result, out / 'runtime_bench.png')
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}, indent=2))
    return 0


def _plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    names = ['torch eager\nfp32 NCHW', 'ORT pipeline\nuint8 -> ids']
    wall = [r['torch_eager']['total_ms']['median'], r['ort_pipeline']['total_ms']['median']]
    cpu = [r['torch_eager']['cpu_ms']['median'], r['ort_pipeline']['cpu_ms']['median']]
    x = np.arange(2)
    a.bar(x - 0.2, wall, 0.4, label='wall (median)')
    a.bar(x + 0.2, cpu, 0.4, label='CPU time (median)')
    a.set_xticks(x, names)
    a.set_ylabel('ms / frame')
    a.set_title(f'{r["model"]} {r["network_size"][0]}x{r["network_size"][1]}, '
                f'{r["threads"]} threads:\n{r["speedup_wall"]:.2f}x faster (wall)')
    a.legend()
    h = r['camera_frames_color_overlay']
    parts = [h['preprocess_ms']['median'], h['inference_ms']['median'],
             h['postprocess_ms']['median']]
    b.bar(['preprocess', 'inference', 'postprocess'], parts, color=['C2', 'C0', 'C3'])
    b.set_ylabel('ms / frame (median)')
    b.set_title(f'frames {r["frame_size"][0]}x{r["frame_size"][1]} + colour + overlay:\n'
                f'pre+post {100 * r["pre_post_over_inference"]:.1f}%')
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == '__main__':
    raise SystemExit(main())
