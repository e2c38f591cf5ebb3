"""Evaluate a model file on a dataset split: mIoU, per-class IoU, pixel accuracy, plots.

Single-scale evaluation runs every frame through the runtime
:class:`~seg_ros.runtime.segmenter.Segmenter` -- the exact pipeline the node runs (uint8 resize
to the network input, normalisation and argmax inside the network, nearest-neighbour ids back
at the frame's resolution) -- on any backend and model file (checkpoint, ONNX, engine).

Flip / multi-scale test-time augmentation needs class probabilities, which exported graphs do
not output (their argmax is inside), so it runs the PyTorch model of a checkpoint: the frame is
mapped into the network input with the same geometry (:mod:`seg_ros.runtime.preprocess`),
resized by each scale, normalised with the same :class:`~seg_ros.runtime.normalize.Normalize`;
the softmax maps of all scales (and their mirrored twins) are resized back to the network input
size and averaged; argmax; ids restored to the frame as in the single-scale path.

The score is accumulated in the one :class:`~seg_ros.eval.metrics.ConfusionMatrix`; mIoU is the
official Cityscapes definition (classes absent from both ground truth and prediction excluded).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
import json
from pathlib import Path
import time
from typing import Any

import cv2
import numpy as np

from seg_ros.data.datasets import parse_data_spec
from seg_ros.errors import SegRosError
from seg_ros.eval.metrics import ConfusionMatrix
from seg_ros.metadata import ModelMeta

__all__ = ['EvalResult', 'evaluate', 'parse_data_spec', 'plot_confusion', 'plot_iou',
           'write_report']


@dataclass
class EvalResult:
    """Outcome of :func:`evaluate`.

    Attributes:
        cm: the accumulated confusion matrix.
        class_names: one name per class id.
        images: frames scored.
        info: model, backend, data, TTA settings and timing (JSON-ready).
        palette: class colours (for the plots).
    """

    cm: ConfusionMatrix
    class_names: list[str]
    images: int
    info: dict[str, Any] = field(default_factory=dict)
    palette: list[list[int]] | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-ready: ``miou``, ``pixel_accuracy``, ``per_class_iou``, ``images`` and info."""
        return {**self.cm.summary(self.class_names), 'images': self.images, **self.info}


def _softmax_tta(model: Any, normalize: Any, image: np.ndarray, scales: Sequence[float],
                 flip: bool, base: tuple[int, int]) -> np.ndarray:
    """Mean softmax (C, h, w) at the network input size ``base`` over scales and flips."""
    import torch
    import torch.nn.functional as F

    h, w = base
    total = None
    with torch.no_grad():
        for s in scales:
            sh, sw = max(1, int(round(h * s))), max(1, int(round(w * s)))
            img = image if (sh, sw) == (h, w) else cv2.resize(
                image, (sw, sh), interpolation=cv2.INTER_LINEAR)
            x = normalize(torch.from_numpy(np.ascontiguousarray(img))[None])
            batch = torch.cat([x, x.flip(-1)]) if flip else x
            prob = F.softmax(model(batch).float(), dim=1)
            if flip:
                prob = prob[:1] + prob[1:].flip(-1)
            prob = F.interpolate(prob, size=(h, w), mode='bilinear', align_corners=False)
            total = prob if total is None else total + prob
    assert total is not None
    return total[0].numpy()


def evaluate(weights: str, kind: str, root: str | None, split: str = 'val',
             backend: str = 'auto', device: str = 'auto', flip: bool = False,
             scales: Sequence[float] = (1.0,), input_size: Sequence[int] | None = None,
             max_images: int = 0, data_options: dict[str, Any] | None = None,
             threads: int | None = None, progress: bool = True) -> EvalResult:
    """Score ``weights`` on a dataset split.

    Args:
        weights: checkpoint ``.pt``, ``.onnx``, TensorRT engine, or a registered model name.
        kind: dataset kind (``cityscapes``, ``camvid``, ``folder``, ``synthetic``, ``toy``).
        root: dataset folder (None for synthetic / toy).
        split: split to score.
        backend: runtime backend for single-scale evaluation.
        device: ``auto``, ``cpu``, ``cuda``.
        flip: average with the mirrored frame (needs a checkpoint).
        scales: network-input scale factors to average (needs a checkpoint unless ``[1]``).
        input_size: (h, w) network input (default: the model's metadata).
        max_images: score at most this many frames (0: all).
        data_options: extra ``build_dataset`` keywords (synthetic: size, length, stride,
            drive_seed, and ``drives`` for several held-out drives).
        threads: CPU threads of the backend.
        progress: tqdm bar on stderr.

    Raises:
        SegRosError: unreadable model or data, class-count mismatch, TTA on an exported file.
    """
    from seg_ros.data.drives import build_drives_dataset as build_dataset

    scales = [float(s) for s in scales] or [1.0]
    if any(s <= 0 for s in scales):
        raise SegRosError(f'scales must be > 0, got {scales}')
    tta = flip or scales != [1.0]
    dataset = build_dataset(kind, root, split, **(data_options or {}))
    n = len(dataset) if max_images <= 0 else min(len(dataset), max_images)
    if n == 0:
        raise SegRosError(f'{kind} split {split!r} has no images')

    t0 = time.time()
    runner, meta, backend_name, close = _make_runner(weights, backend, device, tta, scales, flip,
                                                     input_size, threads)
    try:
        if meta.num_classes != dataset.num_classes:
            raise SegRosError(f'{weights} predicts {meta.num_classes} classes, the {kind} '
                              f'dataset has {dataset.num_classes}')
        cm = ConfusionMatrix(meta.num_classes)
        it: Any = range(n)
        if progress:
            from seg_ros.progress import progress_bar
            it = progress_bar(it, desc='eval', unit='img')
        for i in it:
            image, label = dataset[i]
            ids = runner(image)
            if ids.shape != label.shape:
                raise SegRosError(f'prediction {ids.shape} and label {label.shape} differ')
            try:
                cm.update(ids, label)
            except ValueError as exc:  # label ids outside the dataset's declared classes
                raise SegRosError(f'{kind} image {i}: {exc}') from None
    finally:
        close()
    info = {'weights': str(weights), 'model': meta.model, 'backend': backend_name,
            'data': {'kind': kind, 'root': root, 'split': split, **(data_options or {})},
            'input_size': list(input_size or meta.input_size), 'flip': flip,
            'scales': scales, 'seconds': round(time.time() - t0, 2)}
    names = list(meta.class_names)
    return EvalResult(cm, names, n, info, [list(c) for c in meta.palette])


def _make_runner(weights: str, backend: str, device: str, tta: bool, scales: list[float],
                 flip: bool, input_size: Sequence[int] | None,
                 threads: int | None) -> tuple[Any, ModelMeta, str, Any]:
    """(frame -> ids function, meta, backend name, close function)."""
    if not tta:
        from seg_ros.runtime.segmenter import Segmenter

        seg = Segmenter.from_file(weights, backend=backend, device=device,
                                  input_size=input_size, threads=threads)
        return (lambda image: seg(image).ids), seg.meta, seg.backend_name, seg.close

    suffix = Path(str(weights)).suffix.lower()
    if suffix in ('.onnx', '.engine', '.plan', '.trt'):
        raise SegRosError('--flip / --scales need class probabilities: give the seg_ros '
                          'checkpoint (.pt); exported ONNX / TensorRT files output ids only')
    import torch

    from seg_ros.runtime.export import load_model_and_meta
    from seg_ros.runtime.normalize import Normalize
    from seg_ros.runtime.preprocess import compute_geometry, pad_value, prepare, restore

    if threads:
        torch.set_num_threads(int(threads))
    size = (int(input_size[0]), int(input_size[1])) if input_size else None
    model, meta = load_model_and_meta(str(weights), None, size)
    dev = torch.device('cuda' if device in ('auto', 'cuda') and torch.cuda.is_available()
                       else 'cpu')
    model = model.eval().to(dev)
    normalize = Normalize(meta.mean, meta.std).to(dev)
    base = (int(meta.input_size[0]), int(meta.input_size[1]))
    fill = pad_value(meta.mean)

    def net(x: Any) -> Any:
        return model(x.to(dev)).cpu()

    def run(image: np.ndarray) -> np.ndarray:
        geo = compute_geometry(image.shape[:2], base, 'stretch')
        prepared = prepare(image, geo, 'rgb', fill)
        prob = _softmax_tta(net, lambda t: normalize(t.to(dev)), prepared, scales, flip, base)
        ids = prob.argmax(0).astype(np.uint8)
        return restore(ids, geo)

    return run, meta, f'torch-tta({dev.type})', (lambda: None)


# ---------------------------------------------------------------------------- plots
def plot_confusion(cm: np.ndarray, class_names: Sequence[str], path: str | Path,
                   title: str = 'Confusion matrix (rows: ground truth, % of the row)') -> Path:
    """The confusion matrix PNG of every report (:func:`seg_ros.eval.plots.confusion_figure`)."""
    from seg_ros.eval.plots import confusion_figure, save_figure

    return save_figure(confusion_figure(cm, class_names, title), path)


def plot_iou(iou: Sequence[float], class_names: Sequence[str], path: str | Path,
             title: str = 'Per-class IoU', palette: Sequence[Sequence[int]] | None = None) -> Path:
    """The per-class IoU PNG of every report (:func:`seg_ros.eval.plots.iou_figure`)."""
    from seg_ros.eval.plots import iou_figure, save_figure

    return save_figure(iou_figure(iou, class_names, palette, title), path)


def write_report(result: EvalResult, out: str | Path) -> dict[str, str]:
    """``metrics.json``, ``confusion_matrix.png``, ``per_class_iou.png`` (+ the raw matrix as
    ``confusion_matrix.npy``) in ``out``; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = result.summary()
    (out / 'metrics.json').write_text(json.dumps(summary, indent=1))
    np.save(out / 'confusion_matrix.npy', result.cm.matrix)
    model = result.info.get('model', '')
    return {'metrics': str(out / 'metrics.json'),
            'confusion_matrix': str(plot_confusion(
                result.cm.matrix, result.class_names, out / 'confusion_matrix.png',
                f'{model}: confusion matrix (rows: ground truth, % of the row)')),
            'per_class_iou': str(plot_iou(result.cm.iou(), result.class_names,
                                          out / 'per_class_iou.png', f'{model} per-class IoU',
                                          result.palette))}
