"""How much mIoU the output resolution leaves on the table, on the held-out synthetic drives.

    .venv/bin/python benchmarks/synthetic_ceiling.py --render 256x512 \\
        --serve 128x256 256x512 --out benchmarks/results/synthetic_ceiling.json

RegSeg (like SFNet-Lite and most real-time networks) predicts class scores at 1/4 of its input
resolution and upsamples them bilinearly; the runtime then resizes the ids back to the camera
(label) resolution with nearest neighbour. This script scores an *oracle* of that pipeline on
the validation frames of ``config/train/synthetic.yaml`` (drives 1000..1007, 8 frames each):
its stride-4 scores are the exact class fractions of each output cell (area average of the
one-hot label), so everything it gets wrong is lost to the output resolution, not to learning.
A trained network can beat the oracle only a little (sharp logits place a boundary inside a
cell), so the figure is the practical ceiling of a configuration: the issue's target of 0.80
mIoU for regseg48 served at 128x256 on 256x512 labels sits at this ceiling.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys

import numpy as np
import torch
import torch.nn.functional as F

from seg_ros.cli import parse_size
from seg_ros.data.drives import build_drives_dataset
from seg_ros.eval.metrics import ConfusionMatrix
from seg_ros.metadata import CITYSCAPES_CLASSES
from seg_ros.runtime.preprocess import compute_geometry, restore


def oracle_ids(label: np.ndarray, serve: tuple[int, int], stride: int,
               num_classes: int) -> np.ndarray:
    """Ids of the oracle at network input ``serve`` (before the resize back to the label)."""
    t = torch.from_numpy(label.astype(np.int64))
    t[t >= num_classes] = num_classes   # ignore pixels get a class of their own
    onehot = F.one_hot(t, num_classes + 1).permute(2, 0, 1).float()[None]
    grid = F.interpolate(onehot, size=(serve[0] // stride, serve[1] // stride), mode='area')
    up = F.interpolate(grid, size=serve, mode='bilinear', align_corners=False)
    return up[0, :num_classes].argmax(0).to(torch.uint8).numpy()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--render', default='256x512', help='label (camera) size HxW')
    ap.add_argument('--serve', nargs='+', default=['128x256', '256x512'],
                    help='network input sizes HxW')
    ap.add_argument('--stride', type=int, default=4, help='output stride of the network')
    ap.add_argument('--drives', type=int, default=8)
    ap.add_argument('--length', type=int, default=8)
    ap.add_argument('--out', type=Path, default=None, help='JSON file for the results')
    args = ap.parse_args(argv)
    render = parse_size(args.render)
    ds = build_drives_dataset('synthetic', None, 'val', size=list(render), drives=args.drives,
                              length=args.length, stride=23)
    labels = [ds.load_label(i) for i in range(len(ds))]
    n = len(CITYSCAPES_CLASSES)
    results = []
    for text in args.serve:
        serve = parse_size(text)
        geo = compute_geometry(render, serve, 'stretch')
        cm = ConfusionMatrix(n)
        for lab in labels:
            ids = oracle_ids(lab, serve, args.stride, n)
            cm.update(ids if geo.is_identity else restore(ids, geo), lab)
        iou = cm.iou()
        per_class = {name: round(float(v), 4) for name, v in zip(CITYSCAPES_CLASSES, iou)
                     if not np.isnan(v)}
        results.append({'render': list(render), 'serve': list(serve), 'stride': args.stride,
                        'miou': round(cm.miou(), 4), 'per_class_iou': per_class})
        print(f'labels {render[0]}x{render[1]}, network input {serve[0]}x{serve[1]}, '
              f'stride {args.stride}: oracle mIoU {cm.miou():.3f}')
        print('  ' + ' '.join(f'{k[:6]} {v:.2f}' for k, v in per_class.items()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({'frames': len(labels), 'results': results}, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
