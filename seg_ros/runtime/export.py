"""ONNX export of the whole pipeline: uint8 NHWC RGB in, uint8 class ids (+ confidence) out.

The exported graph is :class:`seg_ros.runtime.pipeline.SegmentationPipeline`: normalisation,
layout change, the network, argmax and max-softmax all run inside ONNX Runtime / TensorRT, so
the host only resizes uint8 images. :class:`ModelMeta` JSON travels in ``metadata_props`` so
the ``.onnx`` file alone is enough to run.

Uses torch's default (dynamo) exporter at opset 18 and writes a single file.
"""
from __future__ import annotations

from collections.abc import Iterator
import contextlib
import logging
import os
from pathlib import Path
import tempfile
import warnings

import torch
from torch import nn

from seg_ros.errors import SegRosError
from seg_ros.metadata import ModelMeta
from seg_ros.runtime.backends import META_KEY
from seg_ros.runtime.pipeline import SegmentationPipeline

log = logging.getLogger(__name__)

OPSET = 18


@contextlib.contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    # The exporter logs every optimisation pass at INFO and warns that torchvision ops are not
    # registered (we use none); keep the user's terminal to our own progress lines.
    loggers = [logging.getLogger(n) for n in ('torch.onnx', 'onnxscript', 'onnx_ir')]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(model: nn.Module, meta: ModelMeta, out: str | os.PathLike[str],
                size: tuple[int, int] | None = None, dynamic_batch: bool = False,
                fp16: bool = False, confidence: bool = True) -> Path:
    """Export ``model`` wrapped in :class:`SegmentationPipeline` to one ONNX file.

    Args:
        model: eval-mode network (N, 3, H, W) float -> (N, C, H, W) logits.
        meta: weights metadata; ``input_size`` is overwritten with ``size``.
        out: destination ``.onnx`` path (written atomically).
        size: (height, width) of the graph input; defaults to ``meta.input_size``.
        dynamic_batch: make the batch axis dynamic (exported with an example batch of 2,
            which the dynamo exporter needs to keep the axis symbolic).
        fp16: run the network in float16 inside the graph (IO stays uint8): what TensorRT
            >= 10.12 builds as a strongly typed fp16 engine.
        confidence: add the ``confidence`` output (uint8, max softmax x 255).

    Returns:
        The written path.
    """
    import onnx

    h, w = (int(size[0]), int(size[1])) if size else tuple(meta.input_size)
    if h < 1 or w < 1:
        raise SegRosError(f'export size must be positive, got {h}x{w}')
    meta = ModelMeta.from_dict({**meta.to_dict(), 'input_size': [h, w]})
    pipe = SegmentationPipeline(model, meta, confidence=confidence).eval().cpu()
    if fp16:
        pipe = pipe.half()
    batch = 2 if dynamic_batch else 1
    example = torch.randint(0, 256, (batch, h, w, 3), dtype=torch.uint8)
    dynamic_shapes = None
    if dynamic_batch:
        dynamic_shapes = {'images': {0: torch.export.Dim('batch', min=1, max=1024)}}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    output_names = ['ids', 'confidence'] if confidence else ['ids']
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_path = Path(tmp) / 'model.onnx'
        with warnings.catch_warnings(), torch.no_grad(), _quiet_exporter_logs():
            warnings.simplefilter('ignore')  # exporter chatter about deprecated internals
            try:
                torch.onnx.export(pipe, (example,), str(tmp_path), opset_version=OPSET,
                                  input_names=['images'], output_names=output_names,
                                  dynamic_shapes=dynamic_shapes, external_data=False,
                                  verbose=False)
            except Exception as exc:
                raise SegRosError(f'ONNX export of {meta.model} failed: '
                                  f'{type(exc).__name__}: {str(exc).splitlines()[0]}') from exc
        proto = onnx.load(str(tmp_path))
        del proto.metadata_props[:]
        for key, value in ((META_KEY, meta.to_json()), ('seg_ros.precision',
                                                         'fp16' if fp16 else 'fp32')):
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = 'seg_ros'
        onnx.checker.check_model(proto)
        final = Path(tmp) / 'final.onnx'
        onnx.save(proto, str(final))
        os.replace(final, out)
    log.info('exported %s (%dx%d%s%s) to %s', meta.model, h, w,
             ', dynamic batch' if dynamic_batch else '', ', fp16' if fp16 else '', out)
    return out


def load_model_and_meta(model: str, weights: str | None = None,
                        input_size: tuple[int, int] | None = None,
                        num_classes: int | None = None) -> tuple[nn.Module, ModelMeta]:
    """Resolve a checkpoint path or a registered model name (+ optional weights).

    Args:
        model: seg_ros checkpoint ``.pt`` / ``.pth`` or a registered model name.
        weights: checkpoint to load into the named model.
        input_size: overrides the metadata input size.
        num_classes: classes for a bare model name without weights (default: Cityscapes).

    Returns:
        (eval-mode model, metadata).
    """
    from seg_ros.models.checkpoint import build_model, load_checkpoint, model_from_checkpoint

    path = Path(model)
    if path.suffix in ('.pt', '.pth', '.ckpt') or path.is_file():
        if weights:
            raise SegRosError('give either a checkpoint or a model name + weights, not both')
        net, meta = model_from_checkpoint(path)
    else:
        from seg_ros.models import create_model

        if weights:
            ckpt = load_checkpoint(weights)
            meta = ckpt['meta']
            if meta.model != model:
                raise SegRosError(f'{weights} holds {meta.model} weights, not {model}')
            net = build_model(meta, ckpt['state_dict'], weights)
        else:
            if num_classes in (None, 19):
                meta = ModelMeta.for_dataset(model, 'cityscapes')
            elif num_classes == 11:
                meta = ModelMeta.for_dataset(model, 'camvid')
            else:
                n = int(num_classes)  # type: ignore[arg-type]
                meta = ModelMeta(model=model, num_classes=n,
                                 class_names=[f'class_{i}' for i in range(n)],
                                 palette=[[(37 * i) % 256, (91 * i) % 256, (173 * i) % 256]
                                          for i in range(n)])
            net = create_model(model, num_classes=meta.num_classes)
            log.warning('%s has no weights: running randomly initialised (pass weights= or a '
                        'checkpoint for real predictions)', model)
    if input_size is not None:
        meta = ModelMeta.from_dict({**meta.to_dict(),
                                    'input_size': [int(input_size[0]), int(input_size[1])]})
    return net.eval(), meta
