"""Training curves from ``metrics.jsonl``: loss and validation mIoU vs iteration and time.

    python -m seg_ros.train.plot runs/synthetic/metrics.jsonl docs/training_synthetic.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
from typing import Any

from seg_ros.errors import SegRosError

__all__ = ['curves_figure', 'load_metrics', 'plot_curves', 'validation_title']


def load_metrics(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train records, val records) of a ``metrics.jsonl``."""
    p = Path(path)
    if not p.is_file():
        raise SegRosError(f'metrics log not found: {p}')
    train, val = [], []
    for line in p.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            (val if rec.get('kind') == 'val' else train).append(rec)
    if not train:
        raise SegRosError(f'{p} has no training records')
    return train, val


def validation_title(metrics_path: str | Path) -> str:
    """'validation mIoU (<data kind> <split>[, <root>])' from the run's ``config.yaml`` next
    to ``metrics.jsonl``; plain 'validation mIoU' when the run folder has none."""
    from seg_ros.fileio import read_yaml

    cfg_path = Path(metrics_path).with_name('config.yaml')
    try:
        data = (read_yaml(cfg_path, '') or {}).get('data') or {}
    except (SegRosError, AttributeError):
        return 'validation mIoU'
    if not isinstance(data, dict) or not data.get('kind'):
        return 'validation mIoU'
    what = f'{data["kind"]} {data.get("val_split") or "val"}'
    if data.get('root'):
        what += f', {Path(str(data["root"])).name}'
    return f'validation mIoU ({what})'


def curves_figure(path: str | Path, title: str | None = None,
                  target: float | None = None) -> Any:
    """Two panels (x = iteration, top axis = minutes): training loss and validation mIoU;
    the legend sits under the mIoU axes, clear of the curve and its last-value label."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    train, val = load_metrics(path)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=110, layout='constrained')
    steps = [r['step'] for r in train]
    ax1.plot(steps, [r['loss'] for r in train], color='tab:blue', lw=1.2)
    ax1.set_xlabel('iteration')
    ax1.set_ylabel('training loss')
    ax1.set_yscale('log')
    ax1.grid(alpha=0.3)
    ax1.set_title('training loss')
    if val:
        vs = [r['step'] for r in val]
        ax2.plot(vs, [r['miou'] for r in val], 'o-', color='tab:green', lw=1.5, label='val mIoU')
        last = val[-1]
        # above the point, or below it when the point is near the top of the axes
        dy = -14 if last['miou'] > 0.9 else 8
        ax2.annotate(f'{last["miou"]:.3f}', (last['step'], last['miou']),
                     textcoords='offset points', xytext=(-4, dy), ha='right', fontsize=9)
    if target is not None:
        ax2.axhline(target, color='red', ls='--', lw=1, label=f'target {target:.2f}')
    ax2.set_ylim(0, 1)
    ax2.set_xlabel('iteration')
    ax2.set_ylabel('mIoU')
    ax2.grid(alpha=0.3)
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(loc='upper center', bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8,
                   frameon=False)
    ax2.set_title(validation_title(path))
    # minutes on a secondary x axis (wall clock, includes validation)
    t_by_step = {r['step']: r['time'] / 60 for r in train}
    if len(t_by_step) >= 2:
        xs = sorted(t_by_step)
        for ax in (ax1, ax2):
            sec = ax.secondary_xaxis(
                'top', functions=(lambda s, xs=xs: _interp(s, xs, [t_by_step[x] for x in xs]),
                                  lambda m, xs=xs: _interp(m, [t_by_step[x] for x in xs], xs)))
            sec.set_xlabel('wall-clock minutes')
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_curves(path: str | Path, out: str | Path, title: str | None = None,
                target: float | None = None) -> Path:
    """:func:`curves_figure` of ``path`` (a ``metrics.jsonl``) written to ``out`` as PNG."""
    from seg_ros.eval.plots import save_figure

    return save_figure(curves_figure(path, title, target), out)


def _interp(x: Any, xp: list[float], fp: list[float]) -> Any:
    """Piecewise-linear map, extended linearly past both ends: the axes' margins lie outside
    the logged steps, and clamping there would stack tick labels on the last one."""
    import numpy as np
    x = np.asarray(x, dtype=float)
    y = np.interp(x, xp, fp)
    lo = (fp[1] - fp[0]) / ((xp[1] - xp[0]) or 1.0)
    hi = (fp[-1] - fp[-2]) / ((xp[-1] - xp[-2]) or 1.0)
    y = np.where(x < xp[0], fp[0] + (x - xp[0]) * lo, y)
    return np.where(x > xp[-1], fp[-1] + (x - xp[-1]) * hi, y)


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m seg_ros.train.plot METRICS.jsonl OUT.png [--title T] [--target X]``."""
    p = argparse.ArgumentParser(prog='python -m seg_ros.train.plot', description=__doc__)
    p.add_argument('metrics')
    p.add_argument('out')
    p.add_argument('--title')
    p.add_argument('--target', type=float)
    args = p.parse_args(argv)
    try:
        print(plot_curves(args.metrics, args.out, args.title, args.target))
    except SegRosError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
