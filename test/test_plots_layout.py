"""The report plots people look at (issue 17): every title, label, annotation and legend lies
inside the figure, no legend covers a bar or the last mIoU label, the saved PNGs carry no empty
margin, and the colour key of samples.png lists the classes shown."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pytest

from seg_ros.bag.report import Sample, class_legend, latency_figure, sample_strip
from seg_ros.eval.plots import confusion_figure, iou_figure, save_figure, text_extents
from seg_ros.metadata import ModelMeta
from seg_ros.train.plot import curves_figure, validation_title

matplotlib.use('Agg')
META = ModelMeta.for_dataset('regseg48', 'cityscapes')
NAMES, PALETTE = list(META.class_names), [list(c) for c in META.palette]
# offline eval-bag's real latency description: the one that was cut off
WHAT = ('offline: message deserialise + image decode + preprocess + inference + postprocess, '
        'per frame, this process')


def _overlap(a, b) -> bool:  # noqa: ANN001 - matplotlib Bbox
    return a.x0 < b.x1 - 0.5 and b.x0 < a.x1 - 0.5 and a.y0 < b.y1 - 0.5 and b.y0 < a.y1 - 0.5


def _check_fits(fig) -> dict:  # noqa: ANN001
    ext = text_extents(fig)
    page = ext['figure'][0]
    assert ext['texts'], 'no text found: the test would prove nothing'
    for box in ext['texts'] + ext['legends']:
        assert page.x0 - 0.5 <= box.x0 and box.x1 <= page.x1 + 0.5, (box, page)
        assert page.y0 - 0.5 <= box.y0 and box.y1 <= page.y1 + 0.5, (box, page)
    for legend in ext['legends']:
        for bar in ext['bars']:
            assert not _overlap(legend, bar), (legend, bar)
    return ext


def _confusion(k: int = 19, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cm = rng.integers(0, 50, (k, k)) * (rng.random((k, k)) < 0.3)
    return cm + np.diag(rng.integers(500, 5000, k))


@pytest.mark.parametrize('k', [3, 19])
def test_confusion_matrix_fits_and_annotates_every_nonzero_cell(k: int) -> None:
    cm = _confusion(k)
    fig = confusion_figure(cm, NAMES[:k])
    _check_fits(fig)
    pct = 100 * cm / cm.sum(1, keepdims=True)
    assert len(fig.axes[0].texts) == int((pct >= 0.5).sum())
    colour_bar = fig.axes[1]
    assert colour_bar.get_ylim() == (0.0, 100.0)  # % scale under % annotations
    matplotlib.pyplot.close(fig)


def test_iou_bars_fit_and_no_legend_over_bars() -> None:
    iou = [0.97, 0.5, None, 0.0, float('nan')] + [0.99] * 14
    fig = iou_figure(iou, NAMES, PALETTE, 'Per-class IoU (n/a: class in neither labels nor '
                     'predictions)', miou=0.7)
    ext = _check_fits(fig)
    assert not ext['legends'] and 'mIoU 0.700' in fig.axes[0].get_title()
    values = [t for t in fig.axes[0].texts]
    assert [t.get_text() for t in values][:5] == ['0.970', '0.500', 'n/a', '0.000', 'n/a']
    ax = fig.axes[0].get_window_extent()
    for t in values:  # the value labels of full bars stay inside the axes
        assert t.get_window_extent().x1 <= ax.x1 + 0.5
    matplotlib.pyplot.close(fig)


def test_latency_title_and_legend_fit_off_the_bars() -> None:
    rng = np.random.default_rng(1)
    lat = list(rng.gamma(4, 8, 200))
    stats = dict(zip(('p50', 'p90', 'p99'), np.percentile(lat, [50, 90, 99])))
    fig = latency_figure(lat, stats, 'live: player publish -> node -> mask received (end to '
                         'end, different processes, one clock) ' + WHAT)
    ext = _check_fits(fig)
    assert len(ext['legends']) == 1 and len(ext['bars']) > 5
    matplotlib.pyplot.close(fig)


def _metrics(tmp_path: Path, last_miou: float, data: dict | None = None) -> Path:
    lines = [{'kind': 'train', 'step': s, 'loss': 2.0 / (1 + s / 50), 'time': 3.0 * s}
             for s in range(10, 310, 10)]
    lines += [{'kind': 'val', 'step': s, 'miou': m, 'time': 3.0 * s}
              for s, m in ((100, 0.5), (200, 0.8), (300, last_miou))]
    path = tmp_path / 'metrics.jsonl'
    path.write_text('\n'.join(json.dumps(x) for x in lines) + '\n')
    if data is not None:
        import yaml

        (tmp_path / 'config.yaml').write_text(yaml.safe_dump({'data': data}))
    return path


@pytest.mark.parametrize('last', [0.12, 0.62, 0.97])
def test_training_curve_legend_never_hides_the_last_miou(tmp_path: Path, last: float) -> None:
    path = _metrics(tmp_path, last, {'kind': 'folder', 'root': '/data/MyData',
                                     'val_split': 'val'})
    fig = curves_figure(path, 'regseg48 on my data', target=0.6)
    ext = _check_fits(fig)
    ax = fig.axes[1]
    label = next(t for t in ax.texts if t.get_text() == f'{last:.3f}')
    box = label.get_window_extent()
    for legend in ext['legends']:
        assert not _overlap(legend, box), (legend, box)
    inside = ax.get_window_extent()  # inside the axes, also near mIoU 1 and the last step
    assert box.y1 <= inside.y1 + 0.5 and box.x1 <= inside.x1 + 0.5, (box, inside)
    assert ax.get_title() == 'validation mIoU (folder val, MyData)'
    matplotlib.pyplot.close(fig)


def test_training_curve_title_comes_from_the_data(tmp_path: Path) -> None:
    path = _metrics(tmp_path, 0.5)
    assert validation_title(path) == 'validation mIoU'  # no config.yaml: no guess
    _metrics(tmp_path, 0.5, {'kind': 'synthetic', 'root': None, 'val_split': 'val'})
    assert validation_title(path) == 'validation mIoU (synthetic val)'


def test_saved_plots_have_no_empty_margin(tmp_path: Path) -> None:
    for name, fig in (('cm', confusion_figure(_confusion(19), NAMES)),
                      ('iou', iou_figure([0.5] * 19, NAMES, PALETTE))):
        path = save_figure(fig, tmp_path / f'{name}.png')
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        ys, xs = np.nonzero(img < 250)
        # the drawn content reaches within a few pixels of every edge (was 150 px)
        assert xs.min() <= 12 and ys.min() <= 12, name
        assert img.shape[1] - 1 - xs.max() <= 12 and img.shape[0] - 1 - ys.max() <= 12, name


def test_samples_strip_has_a_colour_key_of_the_classes_shown() -> None:
    rgb = np.full((32, 64, 3), 90, np.uint8)
    label = np.zeros((32, 64), np.uint8)
    label[:, 32:] = 13  # road | car
    pred = label.copy()
    pred[:4] = 10  # some sky
    strip = sample_strip([Sample.make(0, rgb, pred, label)], PALETTE, NAMES)
    plain = sample_strip([Sample.make(0, rgb, pred, label)], PALETTE)
    key = strip[plain.shape[0]:]
    assert key.shape[0] > 10 and key.shape[1] == strip.shape[1]
    for cls in (0, 10, 13):  # every class shown has its swatch colour in the key
        assert (key == np.asarray(PALETTE[cls], np.uint8)).all(-1).sum() >= 100, NAMES[cls]
    assert not (key == np.asarray(PALETTE[11], np.uint8)).all(-1).any()  # person: not shown
    wide = class_legend(set(range(19)), NAMES, PALETTE, 300)
    assert wide.shape[1] == 300 and wide.shape[0] > 60  # wraps into rows instead of clipping


def test_report_md_words_labels_and_skips_an_empty_plots_section() -> None:
    from seg_ros.bag.report import _markdown

    report = {'mode': 'offline', 'config': {'image_topic': '/cam', 'labels': {
        'source': '/labels', 'mode': 'timestamp', 'labels': 8, 'tolerance_ms': 1.0}},
        'model': {'name': 'regseg48', 'input_size': [128, 256]}, 'frames': {'read': 8},
        'metrics': None, 'latency_ms': {'n': 0}, 'files': {}}
    md = _markdown(report, NAMES)  # --no-plots: no PNG in files
    assert '## Plots' not in md and '{' not in md and '"' not in md
    assert '| labels | source `/labels`, mode `timestamp`, labels 8, tolerance ms 1.0 |' in md
    assert '| input size (HxW) | 128x256 |' in md
    report['files'] = {'latency_plot': 'latency_hist.png'}
    assert '## Plots' in _markdown(report, NAMES)
