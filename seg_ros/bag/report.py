"""Evaluation report of a bag run: report.json, report.md and PNG plots.

The JSON is the record (config, bag checksum, metrics, latency, frame accounting); the
Markdown and the plots are for people. Everything is written even for a partial run, which
says so at the top.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from seg_ros.errors import SegRosError
from seg_ros.eval.metrics import ConfusionMatrix
from seg_ros.metadata import IGNORE_INDEX

SAMPLE_WIDTH = 384  # width of each tile in the overlay strip


def colorize(ids: np.ndarray, palette: list[list[int]]) -> np.ndarray:
    """Class ids -> RGB with the runtime's palette LUT (ignore and unknown ids are black)."""
    from seg_ros.runtime import colorize as rt

    return rt.colorize(np.ascontiguousarray(ids, dtype=np.uint8), rt.palette_lut(palette))


def overlay(rgb: np.ndarray, ids: np.ndarray, palette: list[list[int]],
            alpha: float = 0.5) -> np.ndarray:
    """The prediction blended over the image, exactly as the node's ``~/overlay``."""
    from seg_ros.runtime import colorize as rt

    return rt.overlay(rgb, colorize(ids, palette), alpha)


def latency_stats(latencies_ms: list[float]) -> dict[str, float | int | None]:
    """p50/p90/p99/mean/max of a latency list (None when empty)."""
    if not latencies_ms:
        return {'n': 0, 'p50': None, 'p90': None, 'p99': None, 'mean': None, 'max': None}
    a = np.asarray(latencies_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {'n': int(a.size), 'p50': float(p50), 'p90': float(p90), 'p99': float(p99),
            'mean': float(a.mean()), 'max': float(a.max())}


@dataclass
class Sample:
    """One frame of the overlay strip."""

    index: int
    rgb: np.ndarray
    pred: np.ndarray
    label: np.ndarray | None

    @classmethod
    def make(cls, index: int, rgb: np.ndarray, pred: np.ndarray,
             label: np.ndarray | None) -> Sample:
        """Keep a copy scaled to the strip's tile width (labels stay crisp: nearest)."""
        h, w = rgb.shape[:2]
        size = (SAMPLE_WIDTH, max(1, round(h * SAMPLE_WIDTH / w)))
        interp = cv2.INTER_AREA if w > SAMPLE_WIDTH else cv2.INTER_NEAREST
        small = cv2.resize(rgb, size, interpolation=interp)

        def nearest(a: np.ndarray) -> np.ndarray:
            return cv2.resize(a, size, interpolation=cv2.INTER_NEAREST)

        return cls(index, small, nearest(pred), None if label is None else nearest(label))


@dataclass
class Accumulator:
    """Collects what a run measured, frame by frame; turned into the report at the end.

    Attributes:
        num_classes: classes of the model.
        sample_indices: frame indices to keep for the overlay strip.
    """

    num_classes: int
    sample_indices: set[int] = field(default_factory=set)
    cm: ConfusionMatrix = field(init=False)
    latencies_ms: list[float] = field(default_factory=list)
    stage_ms: dict[str, list[float]] = field(default_factory=dict)
    frames_read: int = 0
    frames_evaluated: int = 0
    frames_without_label: int = 0
    frames_undecodable: int = 0
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cm = ConfusionMatrix(self.num_classes)

    def add(self, index: int, rgb: np.ndarray | None, pred: np.ndarray,
            label: np.ndarray | None,
            latency_ms: float | None, stages: dict[str, float] | None = None) -> None:
        """Account one segmented frame (``label`` None: counted as without label; ``rgb``
        None: not kept as a sample, e.g. live masks whose image is read later)."""
        if latency_ms is not None:
            self.latencies_ms.append(float(latency_ms))
        for k, v in (stages or {}).items():
            self.stage_ms.setdefault(k, []).append(float(v))
        if label is None:
            self.frames_without_label += 1
        else:
            try:
                self.cm.update(pred, label)
            except ValueError as exc:  # label ids of another class set, as `eval` refuses
                raise SegRosError(f'frame {index}: {exc}') from None
            self.frames_evaluated += 1
        if index in self.sample_indices and rgb is not None:
            self.samples.append(Sample.make(index, rgb, pred, label))


def _finite(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def metrics_section(acc: Accumulator, class_names: list[str]) -> dict[str, Any] | None:
    """mIoU, pixel accuracy and per-class IoU (None when no frame had a label)."""
    if acc.frames_evaluated == 0:
        return None
    summary = acc.cm.summary(class_names)
    return {'miou': _finite(summary['miou']),
            'pixel_accuracy': _finite(summary['pixel_accuracy']),
            'per_class_iou': summary['per_class_iou'], 'pixels': summary['pixels'],
            'definition': 'Cityscapes: IoU = TP/(TP+FP+FN) over all evaluated pixels; '
                          'classes absent from both labels and predictions are excluded; '
                          f'label {IGNORE_INDEX} is ignored'}


def write_report(out_dir: str | Path, report: dict[str, Any], acc: Accumulator,
                 class_names: list[str], palette: list[list[int]],
                 plots: bool = True) -> dict[str, str]:
    """Write report.json, report.md and (unless ``plots`` is False) the PNG plots and the sample
    strip; returns {artefact: file name}.

    ``report`` must already hold every JSON section; the confusion matrix and file names of
    the plots are added here.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    if plots:
        files.update(_write_plots(out, report, acc, class_names, palette))
    report['confusion_matrix'] = acc.cm.matrix.tolist() if acc.frames_evaluated else None
    report['files'] = dict(files, json='report.json', markdown='report.md')
    (out / 'report.json').write_text(json.dumps(report, indent=2, allow_nan=False) + '\n')
    (out / 'report.md').write_text(_markdown(report, class_names))
    return report['files']


def _write_plots(out: Path, report: dict[str, Any], acc: Accumulator, class_names: list[str],
                 palette: list[list[int]]) -> dict[str, str]:
    import matplotlib

    matplotlib.use('Agg')  # headless: no display on robots or CI
    files: dict[str, str] = {}
    if report.get('metrics'):
        files['iou_plot'] = _plot_iou(out / 'per_class_iou.png', report['metrics'], palette)
        files['confusion_plot'] = _plot_confusion(out / 'confusion_matrix.png', acc.cm.matrix,
                                                  class_names)
    if acc.latencies_ms:
        files['latency_plot'] = _plot_latency(out / 'latency_hist.png', acc.latencies_ms,
                                              report.get('latency_ms', {}),
                                              report.get('latency_what', ''))
    if acc.samples:
        files['samples'] = _sample_strip(out / 'samples.png', acc.samples, palette)
    return files


def _plot_iou(path: Path, metrics: dict[str, Any], palette: list[list[int]]) -> str:
    import matplotlib.pyplot as plt

    names = list(metrics['per_class_iou'])
    vals = [metrics['per_class_iou'][n] for n in names]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(names) + 2), 4.0))
    colors = [np.asarray(palette[i], float) / 255 if i < len(palette) else (0.5, 0.5, 0.5)
              for i in range(len(names))]
    ax.bar(range(len(names)), [0 if v is None else v for v in vals], color=colors,
           edgecolor='black', linewidth=0.5)
    for i, v in enumerate(vals):
        ax.text(i, (v or 0) + 0.01, 'n/a' if v is None else f'{v:.2f}', ha='center',
                va='bottom', fontsize=7, rotation=90)
    miou = metrics.get('miou')
    if miou is not None:
        ax.axhline(miou, color='red', linestyle='--', linewidth=1, label=f'mIoU {miou:.3f}')
        ax.legend(loc='upper right')
    ax.set_xticks(range(len(names)), names, rotation=60, ha='right', fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel('IoU')
    ax.set_title('Per-class IoU (n/a: class absent from labels and predictions)')
    fig.subplots_adjust(left=0.07, right=0.98, top=0.9, bottom=0.3)  # cheaper than tight_layout
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _plot_confusion(path: Path, matrix: np.ndarray, names: list[str]) -> str:
    import matplotlib.pyplot as plt

    m = matrix.astype(np.float64)
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    n = len(names)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.42 * n + 2.5), max(4.5, 0.42 * n + 1.5)))
    im = ax.imshow(norm, cmap='viridis', vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=60, ha='right', fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.set_xlabel('predicted')
    ax.set_ylabel('ground truth')
    ax.set_title('Confusion matrix (rows normalised)')
    # Only the diagonal (per-class recall) is written out: one label per cell costs seconds of
    # text layout for 19 classes and is unreadable anyway.
    for i in range(n):
        if rows[i, 0] > 0:
            ax.text(i, i, f'{norm[i, i]:.2f}', ha='center', va='center', fontsize=5,
                    color='white' if norm[i, i] < 0.6 else 'black')
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.subplots_adjust(left=0.2, right=0.95, top=0.93, bottom=0.22)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _plot_latency(path: Path, latencies: list[float], stats: dict[str, Any], what: str) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.hist(latencies, bins=min(50, max(10, len(latencies) // 3)), color='#4c72b0',
            edgecolor='white')
    for key, style in (('p50', '-'), ('p90', '--'), ('p99', ':')):
        v = stats.get(key)
        if v is not None:
            ax.axvline(v, color='red', linestyle=style, linewidth=1.2, label=f'{key} {v:.1f} ms')
    ax.set_xlabel('latency [ms]')
    ax.set_ylabel('frames')
    ax.set_title(f'Latency: {what}' if what else 'Latency', fontsize=9)
    ax.legend()
    fig.subplots_adjust(left=0.1, right=0.97, top=0.9, bottom=0.13)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _label_text(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.rectangle(out, (0, 0), (min(out.shape[1], 9 * len(text) + 8), 18), (0, 0, 0), -1)
    cv2.putText(out, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out


def sample_strip(samples: list[Sample], palette: list[list[int]]) -> np.ndarray:
    """Rows of [image | ground truth | prediction overlay], one row per sample (RGB)."""
    rows = []
    for s in sorted(samples, key=lambda x: x.index):
        gt = colorize(s.label, palette) if s.label is not None else np.zeros_like(s.rgb)
        tiles = [_label_text(s.rgb, f'frame {s.index}'),
                 _label_text(gt, 'ground truth' if s.label is not None else 'no label'),
                 _label_text(overlay(s.rgb, s.pred, palette), 'prediction')]
        h = max(t.shape[0] for t in tiles)
        tiles = [cv2.copyMakeBorder(t, 0, h - t.shape[0], 0, 2, cv2.BORDER_CONSTANT)
                 for t in tiles]
        rows.append(cv2.copyMakeBorder(np.hstack(tiles), 0, 2, 0, 0, cv2.BORDER_CONSTANT))
    width = max(r.shape[1] for r in rows)
    rows = [cv2.copyMakeBorder(r, 0, 0, 0, width - r.shape[1], cv2.BORDER_CONSTANT) for r in rows]
    return np.vstack(rows)


def _sample_strip(path: Path, samples: list[Sample], palette: list[list[int]]) -> str:
    strip = sample_strip(samples, palette)
    cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
    return path.name


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return 'n/a'
    if isinstance(v, float):
        return f'{v:.{digits}f}'
    return str(v)


def _markdown(report: dict[str, Any], class_names: list[str]) -> str:
    lines = [f'# seg_ros bag evaluation ({report.get("mode", "?")})', '']
    if not report.get('complete', True):
        lines += [f'> **PARTIAL REPORT**: {report.get("error")}', '']
    for w in report.get('warnings', []):
        lines += [f'> warning: {w}', '']
    for n in (report.get('bag', {}).get('form') or {}).get('notes', []):
        lines += [f'> note: {n}', '']
    cfg = report.get('config', {})
    bag = report.get('bag', {})
    fr = report.get('frames', {})
    lines += ['## Run', '', '| | |', '|---|---|',
              f'| bag | `{bag.get("path")}` ({bag.get("storage")}) |',
              f'| bag form | {(bag.get("form") or {}).get("description", "")} |',
              f'| bag sha256 | `{bag.get("sha256")}` |',
              f'| image topic | `{cfg.get("image_topic")}` ({bag.get("image_msgtype")}) |',
              f'| labels | {json.dumps(cfg.get("labels"))} |',
              f'| model | `{cfg.get("model")}` ({report.get("model", {}).get("name")}) |',
              f'| backend | {report.get("model", {}).get("backend")} |',
              f'| input size | {report.get("model", {}).get("input_size")} |']
    if report.get('mode') == 'live':
        lines.append(f'| playback rate | {cfg.get("rate")}x |')
    lines += ['', '## Frames', '', '| | |', '|---|---|']
    lines += [f'| {k.replace("_", " ")} | {v} |' for k, v in fr.items()]
    metrics = report.get('metrics')
    lines += ['', '## Accuracy', '']
    if metrics:
        lines += [f'**mIoU {_fmt(metrics["miou"])}**, pixel accuracy '
                  f'{_fmt(metrics["pixel_accuracy"])} over {metrics["pixels"]} pixels.', '',
                  f'_{metrics["definition"]}._', '', '| class | IoU |', '|---|---|']
        lines += [f'| {n} | {_fmt(v)} |' for n, v in metrics['per_class_iou'].items()]
    else:
        lines.append('No frame had a label: no accuracy figures.')
    lat = report.get('latency_ms', {})
    lines += ['', '## Latency', '', f'{report.get("latency_what", "")}', '',
              '| n | p50 | p90 | p99 | mean | max |', '|---|---|---|---|---|---|',
              '| ' + ' | '.join(_fmt(lat.get(k), 1) for k in
                                ('n', 'p50', 'p90', 'p99', 'mean', 'max')) + ' |']
    if report.get('stage_ms_p50'):
        lines += ['', 'Pipeline stages (p50, ms): ' + ', '.join(
            f'{k} {v:.1f}' for k, v in report['stage_ms_p50'].items())]
    if report.get('rate_hz'):
        lines += ['', 'Rates (Hz): ' + ', '.join(f'{k} {_fmt(v, 2)}'
                                                  for k, v in report['rate_hz'].items())]
    files = report.get('files', {})
    lines += ['', '## Plots', '']
    for key, title in (('iou_plot', 'Per-class IoU'), ('confusion_plot', 'Confusion matrix'),
                       ('latency_plot', 'Latency'), ('samples', 'Samples')):
        if key in files:
            lines += [f'![{title}]({files[key]})', '']
    return '\n'.join(lines) + '\n'
