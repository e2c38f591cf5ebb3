"""How much mIoU the output resolution leaves on the table, on the held-out synthetic drives.

    .venv/bin/python benchmarks/synthetic_ceiling.py --serve 64x128 128x256 256x512 \\
        --out benchmarks/results/synthetic_ceiling.json

RegSeg (like SFNet-Lite and most real-time networks) predicts class scores at 1/4 of its input
resolution and upsamples them bilinearly; the runtime then resizes the ids back to the camera
(label) resolution with nearest neighbour. This script scores an *oracle* of that pipeline on
the validation frames of a training config (``data.val_options`` of
``config/train/synthetic.yaml`` by default: 8 drives of 8 frames at 256x512):
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
from seg_ros.train.config import load_config

REPO = Path(__file__).resolve().parents[1]


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
    ap.add_argument('--config', type=Path, default=REPO / 'config/train/synthetic.yaml',
                    help='training config whose data.val_options name the frames')
    ap.add_argument('--render', default=None,
                    help='label (camera) size HxW (default: the config size)')
    ap.add_argument('--serve', nargs='+', default=['128x256', '256x512'],
                    help='network input sizes HxW')
    ap.add_argument('--stride', type=int, default=4, help='output stride of the network')
    ap.add_argument('--out', type=Path, default=None, help='JSON file for the results')
    args = ap.parse_args(argv)
    data = load_config(args.config).data
    options = dict(data.val_options)
    if args.render:
        options['size'] = list(parse_size(args.render))
    ds = build_drives_dataset(data.kind, data.root, data.val_split or 'val', **options)
    labels = [ds.load_label(i) for i in range(len(ds))]
    render = labels[0].shape
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
