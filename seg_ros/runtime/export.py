"""ONNX export of the whole pipeline: uint8 NHWC RGB in, uint8 class ids (+ confidence) out.

The exported graph is :class:`seg_ros.runtime.pipeline.SegmentationPipeline`: normalisation,
layout change, the network, argmax and max-softmax all run inside ONNX Runtime / TensorRT, so
the host only resizes uint8 images. :class:`ModelMeta` JSON travels in ``metadata_props`` so
the ``.onnx`` file alone is enough to run.

Uses torch's default (dynamo) exporter at opset 18 and writes a single file. That graph is what
ONNX Runtime, OpenVINO and TensorRT 10 run; ``trt_version='8.5'`` / ``'8.6'`` rewrites it for the
older TensorRT parsers (:mod:`seg_ros.runtime.onnx_rewrite`). Every export is checked against
the parser rules of its target (:mod:`seg_ros.runtime.trt_rules`) before it is written.
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
from seg_ros.fileio import atomic_write_bytes
from seg_ros.metadata import ModelMeta
from seg_ros.runtime.backends import META_KEY
from seg_ros.runtime.pipeline import SegmentationPipeline

log = logging.getLogger(__name__)

OPSET = 18
TRT_VERSIONS = ('8.5', '8.6', '10')  # `--trt-version` choices; the default graph is '10'
TARGET_KEY = 'seg_ros.trt_target'  # ONNX metadata: the TensorRT parser rules it was checked for


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
                fp16: bool = False, confidence: bool = True, trt_version: str = '10',
                extra_meta: dict[str, str] | None = None) -> Path:
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
        trt_version: TensorRT parser the graph is made for: ``'10'`` (default; also what ONNX
            Runtime and OpenVINO run), ``'8.6'`` (JetPack 6.0) or ``'8.5'`` (JetPack 5.1):
            opset 17, Reduce axes as attributes, no ``Shape`` start/end, no
            LayerNormalization on 8.5. Recorded in the metadata (``seg_ros.trt_target``).
        extra_meta: more ``metadata_props`` entries (e.g. the source checkpoint's sha256).

    Returns:
        The written path.

    Raises:
        SegRosError: the export failed or its graph breaks the target's parser rules (one line
            naming the node); nothing is written then.
    """
    import onnx

    from seg_ros.runtime.onnx_rewrite import rewrite_for_target
    from seg_ros.runtime.trt_rules import check_onnx

    if trt_version not in TRT_VERSIONS:
        raise SegRosError(f'--trt-version must be one of {", ".join(TRT_VERSIONS)}, '
                          f'got {trt_version!r}')

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
    output_names = ['ids', 'confidence'] if confidence else ['ids']
    # Work in the system temp dir, not next to ``out``: a killed or failed export leaves
    # nothing in the output folder; only a finished, checked graph is written there.
    with tempfile.TemporaryDirectory(prefix='seg_ros_export_') as tmp:
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
        proto = rewrite_for_target(onnx.load(str(tmp_path)), trt_version)
        del proto.metadata_props[:]
        entries = {META_KEY: meta.to_json(), 'seg_ros.precision': 'fp16' if fp16 else 'fp32',
                   TARGET_KEY: trt_version, **(extra_meta or {})}
        for key, value in entries.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = 'seg_ros'
        onnx.checker.check_model(proto)
        problems = check_onnx(proto, trt_version)
        if problems:
            more = f' (+{len(problems) - 1} more)' if len(problems) > 1 else ''
            raise SegRosError(f'{meta.model} export for TensorRT {trt_version} breaks the parser '
                              f'rules: {problems[0]}{more}; nothing written')
    # The only write into the output folder: a temporary sibling for the few ms of writing
    # the bytes, fsynced and renamed (seg_ros.fileio).
    atomic_write_bytes(out, proto.SerializeToString())
    log.info('exported %s (%dx%d%s%s, TensorRT %s rules) to %s', meta.model, h, w,
             ', dynamic batch' if dynamic_batch else '', ', fp16' if fp16 else '', trt_version,
             out)
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
