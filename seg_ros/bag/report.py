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
        files['samples'] = _sample_strip(out / 'samples.png', acc.samples, palette,
                                        class_names)
    return files


def _plot_iou(path: Path, metrics: dict[str, Any], palette: list[list[int]]) -> str:
    from seg_ros.eval.plots import iou_figure, save_figure

    names = list(metrics['per_class_iou'])
    fig = iou_figure([metrics['per_class_iou'][n] for n in names], names, palette,
                     'Per-class IoU (n/a: class in neither labels nor predictions)',
                     miou=metrics.get('miou'))
    return save_figure(fig, path).name


def _plot_confusion(path: Path, matrix: np.ndarray, names: list[str]) -> str:
    from seg_ros.eval.plots import confusion_figure, save_figure

    return save_figure(confusion_figure(matrix, names), path).name


def latency_figure(latencies: list[float], stats: dict[str, Any], what: str) -> Any:
    """Histogram of end-to-end latencies with p50/p90/p99 lines; the title (what was timed)
    wraps to the figure width and the legend sits right of the axes, off the bars."""
    import textwrap

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=110, layout='constrained')
    ax.hist(latencies, bins=min(50, max(10, len(latencies) // 3)), color='#4c72b0',
            edgecolor='white')
    for key, style in (('p50', '-'), ('p90', '--'), ('p99', ':')):
        v = stats.get(key)
        if v is not None:
            ax.axvline(v, color='red', linestyle=style, linewidth=1.2, label=f'{key} {v:.1f} ms')
    ax.set_xlabel('latency [ms]')
    ax.set_ylabel('frames')
    title = f'Latency: {what}' if what else 'Latency'
    ax.set_title('\n'.join(textwrap.wrap(title, 90)), fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc='upper left', bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig


def _plot_latency(path: Path, latencies: list[float], stats: dict[str, Any], what: str) -> str:
    from seg_ros.eval.plots import save_figure

    return save_figure(latency_figure(latencies, stats, what), path).name


def _label_text(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.rectangle(out, (0, 0), (min(out.shape[1], 9 * len(text) + 8), 18), (0, 0, 0), -1)
    cv2.putText(out, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out


def class_legend(ids: set[int], class_names: list[str], palette: list[list[int]],
                 width: int) -> np.ndarray:
    """A colour -> class key (RGB, ``width`` wide) of the class ``ids``, wrapped into rows."""
    font, scale, pad, sw = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 8, 14
    entries = []
    for i in sorted(c for c in ids if 0 <= c < len(class_names)):
        name = str(class_names[i])
        tw = cv2.getTextSize(name, font, scale, 1)[0][0]
        colour = palette[i] if i < len(palette) else [128, 128, 128]
        entries.append((name, tuple(int(v) for v in colour), sw + 4 + tw + 2 * pad))
    rows: list[list[tuple[str, tuple[int, ...], int]]] = [[]]
    used = 0
    for e in entries:
        if rows[-1] and used + e[2] > width:
            rows.append([])
            used = 0
        rows[-1].append(e)
        used += e[2]
    line_h = 22
    key = np.zeros((line_h * len(rows) + 4, width, 3), np.uint8)
    for r, row in enumerate(rows):
        x, y = pad, 4 + r * line_h
        for name, colour, w in row:
            cv2.rectangle(key, (x, y + 2), (x + sw, y + 2 + sw), colour, -1)
            cv2.rectangle(key, (x, y + 2), (x + sw, y + 2 + sw), (255, 255, 255), 1)
            cv2.putText(key, name, (x + sw + 4, y + 14), font, scale, (255, 255, 255), 1,
                        cv2.LINE_AA)
            x += w
    return key


def sample_strip(samples: list[Sample], palette: list[list[int]],
                 class_names: list[str] | None = None) -> np.ndarray:
    """Rows of [image | ground truth | prediction overlay], one row per sample (RGB), and
    under them, with ``class_names``, the colour key of every class shown."""
    rows = []
    shown: set[int] = set()
    for s in sorted(samples, key=lambda x: x.index):
        gt = colorize(s.label, palette) if s.label is not None else np.zeros_like(s.rgb)
        shown.update(int(v) for v in np.unique(s.pred))
        if s.label is not None:
            shown.update(int(v) for v in np.unique(s.label) if v != IGNORE_INDEX)
        tiles = [_label_text(s.rgb, f'frame {s.index}'),
                 _label_text(gt, 'ground truth' if s.label is not None else 'no label'),
                 _label_text(overlay(s.rgb, s.pred, palette), 'prediction')]
        h = max(t.shape[0] for t in tiles)
        tiles = [cv2.copyMakeBorder(t, 0, h - t.shape[0], 0, 2, cv2.BORDER_CONSTANT)
                 for t in tiles]
        rows.append(cv2.copyMakeBorder(np.hstack(tiles), 0, 2, 0, 0, cv2.BORDER_CONSTANT))
    width = max(r.shape[1] for r in rows)
    rows = [cv2.copyMakeBorder(r, 0, 0, 0, width - r.shape[1], cv2.BORDER_CONSTANT) for r in rows]
    if class_names:
        rows.append(class_legend(shown, class_names, palette, width))
    return np.vstack(rows)


def _sample_strip(path: Path, samples: list[Sample], palette: list[list[int]],
                  class_names: list[str] | None = None) -> str:
    strip = sample_strip(samples, palette, class_names)
    cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
    return path.name


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return 'n/a'
    if isinstance(v, float):
        return f'{v:.{digits}f}'
    return str(v)


def _size_text(size: Any) -> str:
    return f'{size[0]}x{size[1]}' if isinstance(size, (list, tuple)) and len(size) == 2 \
        else _fmt(size)


def _labels_text(labels: Any) -> str:
    """The labels source of the run in words (the JSON record keeps the structure)."""
    if not labels:
        return 'none'
    if not isinstance(labels, dict):
        return f'`{labels}`'
    parts = []
    for key, value in labels.items():
        if value is None or value == '':
            continue
        shown = f'`{value}`' if isinstance(value, str) else str(value)
        parts.append(f'{key.replace("_", " ")} {shown}')
    return ', '.join(parts) or 'none'


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
              f'| labels | {_labels_text(cfg.get("labels"))} |',
              f'| model | `{cfg.get("model")}` ({report.get("model", {}).get("name")}) |',
              f'| backend | {report.get("model", {}).get("backend")} |',
              f'| input size (HxW) | {_size_text(report.get("model", {}).get("input_size"))} |']
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
    plots = [f'![{title}]({files[key]})' for key, title in (
        ('iou_plot', 'Per-class IoU'), ('confusion_plot', 'Confusion matrix'),
        ('latency_plot', 'Latency'), ('samples', 'Samples')) if key in files]
    if plots:  # --no-plots: no heading over nothing
        lines += ['', '## Plots', '']
        for line in plots:
            lines += [line, '']
    return '\n'.join(lines) + '\n'
