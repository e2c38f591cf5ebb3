"""Confusion matrix and segmentation metrics shared by eval, bench, bag eval and training.

mIoU follows the official Cityscapes evaluation: IoU_c = TP / (TP + FP + FN); a class that is
absent from both ground truth and prediction has no IoU (NaN) and is left out of the mean.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from seg_ros.metadata import IGNORE_INDEX


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, 'detach'):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def confusion_matrix(pred: Any, target: Any, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Count (ground truth, prediction) pairs with one ``bincount``.

    Args:
        pred: predicted class ids, any shape.
        target: ground-truth class ids, same shape; ``ignore_index`` pixels are skipped.
        num_classes: C.
        ignore_index: label value to skip.

    Returns:
        int64 array (C, C): rows are ground truth, columns predictions.

    Raises:
        ValueError: shapes differ, a label pixel other than ``ignore_index`` is outside
            0..C-1, or a valid pixel has a prediction outside 0..C-1 (a model with another
            class count than the labels: silently dropping those pixels would distort the
            score; :func:`check_label_ids` words the label case for users).
    """
    pred = _as_numpy(pred).astype(np.int64, copy=False).ravel()
    target = _as_numpy(target).astype(np.int64, copy=False).ravel()
    if pred.shape != target.shape:
        raise ValueError(f'prediction has {pred.size} pixels, ground truth {target.size}')
    check_label_ids(target, num_classes, ignore_index)
    valid = target != ignore_index
    t, p = target[valid], pred[valid]
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f'predicted class id {int(p.max())} outside 0..{num_classes - 1}')
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes).astype(np.int64)


def check_label_ids(target: Any, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
    """Refuse label ids the model cannot predict (other than ``ignore_index``).

    Such pixels can never be right; counting them as ignored would score a 3-class model on
    19-class labels as if the labels had 3 classes. The message gives the ids and their
    share of the labelled pixels, so the user sees whether the labels or the model is wrong.

    Raises:
        ValueError: some label pixels are outside ``0..num_classes-1``.
    """
    target = _as_numpy(target)
    if target.size == 0:
        return
    if int(target.min()) >= 0 and int(target.max()) < num_classes:
        return  # the common case, without temporaries
    flat = target.astype(np.int64, copy=False).ravel()
    bad = ((flat < 0) | (flat >= num_classes)) & (flat != ignore_index)
    n_bad = int(bad.sum())
    if not n_bad:
        return
    labelled = int((flat != ignore_index).sum())
    ids = np.unique(flat[bad])
    shown = ', '.join(str(int(i)) for i in ids[:6]) + (', ...' if ids.size > 6 else '')
    raise ValueError(f"label ids {shown} are outside the model's {num_classes} classes "
                     f'(0..{num_classes - 1}; {ignore_index} = ignore): {n_bad} of {labelled} '
                     f'labelled pixels ({100 * n_bad / max(labelled, 1):.1f}%); the labels use '
                     f'another class set than the model')


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """IoU per class; NaN for classes absent from both ground truth and prediction."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    denom = tp + fp + fn
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)


def mean_iou(cm: np.ndarray) -> float:
    """Mean of :func:`iou_per_class` over classes present in GT or prediction."""
    iou = iou_per_class(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float('nan')


def pixel_accuracy(cm: np.ndarray) -> float:
    """Correct pixels / valid pixels."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    return float(np.trace(cm) / total) if total > 0 else float('nan')


class ConfusionMatrix:
    """Accumulates a confusion matrix over many frames.

    Example:
        >>> cm = ConfusionMatrix(19)
        >>> cm.update(pred_ids, label_ids)
        >>> cm.miou()
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: Any, target: Any) -> None:
        """Add one frame (or batch) of predictions and labels."""
        self.matrix += np.asarray(confusion_matrix(pred, target, self.num_classes,
                                                   self.ignore_index))

    def merge(self, other: ConfusionMatrix | np.ndarray) -> None:
        """Add another matrix (e.g. from another DDP rank)."""
        self.matrix += other.matrix if isinstance(other, ConfusionMatrix) else np.asarray(other)

    def iou(self) -> np.ndarray:
        """Per-class IoU (NaN where a class never appears)."""
        return iou_per_class(self.matrix)

    def miou(self) -> float:
        """Mean IoU, Cityscapes definition."""
        return mean_iou(self.matrix)

    def pixel_accuracy(self) -> float:
        """Pixel accuracy over valid pixels."""
        return pixel_accuracy(self.matrix)

    def summary(self, class_names: list[str] | None = None) -> dict[str, Any]:
        """JSON-ready dict: miou, pixel_accuracy, per-class IoU (None where undefined)."""
        names = class_names or [str(i) for i in range(self.num_classes)]
        iou = self.iou()
        return {'miou': self.miou(), 'pixel_accuracy': self.pixel_accuracy(),
                'per_class_iou': {n: (None if np.isnan(v) else float(v))
                                  for n, v in zip(names, iou)},
                'pixels': int(self.matrix.sum())}
