"""Shared by the bag and demo tests: one small deterministic model, exported to ONNX once.

The checkpoint (regseg48, torch seed 0, 64x128) is rebuilt byte-identically in every session;
its ONNX export is kept in the temp folder under the checkpoint's sha256, so only the first
session on a machine pays for the export (about a minute on 2 cores). Tests run the ONNX file
on ONNX Runtime -- what the demo and most users run -- because regseg48's grouped
convolutions are ~50x slower in torch on a CPU, and because a node given an ONNX file does not
import torch, which keeps its start-up short.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path
import tempfile
from typing import Any

MODEL_SIZE = (64, 128)
BACKEND = 'onnxruntime'
_DIR = Path(tempfile.gettempdir()) / 'seg_ros_bag_tests'


@functools.cache
def checkpoint() -> Path:
    """regseg48 with torch seed 0 weights, metadata input size 64x128."""
    import torch

    from seg_ros.metadata import ModelMeta
    from seg_ros.models.checkpoint import save_checkpoint
    from seg_ros.models.registry import create_model

    torch.manual_seed(0)
    model = create_model('regseg48', num_classes=19)
    path = Path(tempfile.mkdtemp(prefix='seg_ros_bag_ckpt_')) / 'regseg48_seed0_64x128.pt'
    save_checkpoint(path, model, ModelMeta.for_dataset('regseg48', 'cityscapes',
                                                       input_size=list(MODEL_SIZE)))
    return path


@functools.cache
def onnx_model() -> Path:
    """The checkpoint's ONNX export (exported once per machine and checkpoint content)."""
    from seg_ros.runtime.export import export_onnx, load_model_and_meta

    ckpt = checkpoint()
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()[:16]
    path = _DIR / f'regseg48_seed0_64x128-{sha}.onnx'
    if not path.is_file():
        net, meta = load_model_and_meta(str(ckpt))
        export_onnx(net, meta, path)  # atomic: a killed export leaves no half file
    return path


@functools.cache
def segmenter() -> Any:
    """The reference pipeline on the test model (what eval-bag and the node also load)."""
    from seg_ros.runtime.segmenter import Segmenter

    return Segmenter.from_file(str(onnx_model()), backend=BACKEND, device='cpu')
