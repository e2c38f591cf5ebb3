"""The accuracy plots of every report: confusion matrix and per-class IoU.

``seg-ros eval`` and ``seg-ros eval-bag`` (and the demo) draw them here, so both reports show
the same pictures: the row-normalised confusion matrix in percent with a colour bar in percent,
every non-zero cell annotated, classes absent from labels and predictions dropped; the per-class
IoU as horizontal bars in the class colours with the mIoU as a dashed line named in the title.
Figures are laid out by matplotlib's constrained layout and saved cropped to their content
(no empty margin); :func:`text_extents` is what the tests use to prove every text fits.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ['confusion_figure', 'iou_figure', 'save_figure', 'text_extents']

DPI = 110


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use('Agg')  # headless: no display on robots or CI
    import matplotlib.pyplot as plt

    return plt


def confusion_figure(cm: np.ndarray, class_names: Sequence[str],
                     title: str = 'Confusion matrix (rows: ground truth, % of the row)') -> Any:
    """Heat map of the row-normalised confusion matrix in percent (rows: ground truth).

    Classes that occur in neither ground truth nor prediction are dropped.
    """
    plt = _pyplot()
    cm = np.asarray(cm, np.float64)
    keep = np.nonzero((cm.sum(0) + cm.sum(1)) > 0)[0]
    if keep.size == 0:
        keep = np.arange(len(class_names))
    sub = cm[np.ix_(keep, keep)]
    pct = 100 * sub / np.maximum(sub.sum(1, keepdims=True), 1)
    names = [str(class_names[i]) for i in keep]
    k = len(keep)
    cell = 0.42  # inches per cell: room for a 3-digit annotation at 7 pt
    fig, ax = plt.subplots(figsize=(2.6 + cell * k, 1.9 + cell * k), dpi=DPI,
                           layout='constrained')
    # aspect 'auto' (cells stay near square through the figure size): a fixed aspect makes
    # the constrained layout re-centre the axes and push the y label off the figure
    im = ax.imshow(pct, cmap='viridis', vmin=0, vmax=100, aspect='auto')
    ax.set_xticks(range(k), names, rotation=60, ha='right', fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel('prediction')
    ax.set_ylabel('ground truth')
    ax.set_title(title, fontsize=9, wrap=True)
    for r in range(k):
        for c in range(k):
            v = pct[r, c]
            if v >= 0.5:  # every cell that rounds to a non-zero percentage
                ax.text(c, r, f'{v:.0f}', ha='center', va='center', fontsize=7,
                        color='black' if v > 60 else 'white')
    # aspect (length / width) grows with the matrix: the bar spans the matrix's height
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, aspect=max(20, 2 * k + 6))
    bar.set_label('% of the ground-truth row', fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return fig


def iou_figure(iou: Sequence[float | None], class_names: Sequence[str],
               palette: Sequence[Sequence[int]] | None = None, title: str = 'Per-class IoU',
               miou: float | None = None) -> Any:
    """Horizontal bars of per-class IoU in the class colours; ``None``/NaN is 'n/a' (class in
    neither labels nor predictions); the mIoU (default: mean of the finite values) is a
    dashed line, named in the title rather than in a legend that would cover bars."""
    plt = _pyplot()
    vals = np.array([np.nan if v is None else float(v) for v in iou], np.float64)
    k = len(class_names)
    if miou is None and np.isfinite(vals).any():
        miou = float(np.nanmean(vals))
    fig, ax = plt.subplots(figsize=(6.4, 1.2 + 0.26 * k), dpi=DPI, layout='constrained')
    colours = [tuple(c / 255 for c in palette[i]) if palette and i < len(palette)
               else (0.5, 0.5, 0.5) for i in range(k)]
    ax.barh(range(k), np.nan_to_num(vals, nan=0.0), color=colours, edgecolor='black',
            linewidth=0.4)
    for i, v in enumerate(vals):
        ax.text((0 if np.isnan(v) else v) + 0.01, i, 'n/a' if np.isnan(v) else f'{v:.3f}',
                va='center', fontsize=7)
    if miou is not None:
        ax.axvline(miou, color='red', linestyle='--', linewidth=1)
        title = f'{title}: mIoU {miou:.3f} (dashed)'
    ax.set_yticks(range(k), [str(n) for n in class_names], fontsize=8)
    ax.set_ylim(k - 0.5, -0.5)  # first class on top
    ax.set_xlim(0, 1.12)  # room for the value labels right of a full bar
    ax.set_xlabel('IoU')
    ax.set_title(title, fontsize=9, wrap=True)
    return fig


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as PNG cropped to its content, and close it."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches='tight', pad_inches=0.05)
    plt.close(fig)
    return path


def text_extents(fig: Any) -> dict[str, list[Any]]:
    """Window extents (pixels) of a drawn figure's texts, legends and bars, for layout tests.

    Returns:
        ``{'figure': [bbox], 'texts': [...], 'legends': [...], 'bars': [...]}``; ``texts``
        holds every visible, non-empty title, axis label, tick label and annotation.
    """
    from matplotlib.patches import Rectangle

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts, legends, bars = [], [], []
    for t in fig.texts:
        if t.get_visible() and t.get_text().strip():
            texts.append(t.get_window_extent(renderer))
    if getattr(fig, '_suptitle', None) is not None and fig._suptitle.get_text():
        texts.append(fig._suptitle.get_window_extent(renderer))
    def tick_labels(axis: Any) -> list[Any]:
        # only the ticks drawn: get_ticklabels() also returns labels outside the view limits
        return [lbl for tick in axis._update_ticks() for lbl in (tick.label1, tick.label2)
                if lbl.get_visible()]

    for ax in fig.axes:
        candidates = [ax.title, ax._left_title, ax._right_title, *ax.texts]
        axes = [ax] + [c for c in ax.get_children()  # secondary axes carry their own labels
                       if hasattr(c, 'xaxis') and c is not ax]
        for a in axes:
            for axis in (a.xaxis, a.yaxis):
                candidates += [axis.label, *tick_labels(axis)]
        for t in candidates:
            if t.get_visible() and t.get_text().strip():
                texts.append(t.get_window_extent(renderer))
        legend = ax.get_legend()
        if legend is not None:
            legends.append(legend.get_window_extent(renderer))
        for p in ax.patches:
            if isinstance(p, Rectangle) and p.get_width() > 0 and p.get_height() > 0:
                bars.append(p.get_window_extent(renderer))
    return {'figure': [fig.bbox], 'texts': texts, 'legends': legends, 'bars': bars}
