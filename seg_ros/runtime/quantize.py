"""int8 for CPUs: post-training quantization of an ONNX export, shipped only if it keeps the ids.

NNCF (OpenVINO's quantizer, ONNX backend) inserts QuantizeLinear/DequantizeLinear pairs from
activation ranges measured on calibration frames; the result is still one ONNX file with the
seg_ros metadata, which OpenVINO and ONNX Runtime run with int8 kernels (VNNI / AMX where the
CPU has them). The frames come from an image folder or a bag through
:class:`~seg_ros.runtime.calibration.CalibrationData`, i.e. the very preprocessing the node
runs (resize or letterbox to the network input).

Quantization can cost accuracy, so the file is written only when the int8 graph gives the same
class id as the fp32 graph on at least ``min_agreement`` of the pixels of *held-out* frames
(frames of the source not used for calibration); otherwise the command refuses with the
measured agreement and writes nothing. The agreement is stored in the file
(``seg_ros.int8_agreement``).

Measured (shipped regseg48, 128x256, 32 calibration / 16 held-out synthetic frames, 2 threads,
loaded 2-core Xeon with AMX): ids agreement 99.35%, OpenVINO 28 ms int8 vs 98 ms fp32 and
54 ms bf16. ONNX Runtime's own static quantization kept only 96.1% (issue 16).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import os
from pathlib import Path
from typing import Any

import numpy as np

from seg_ros.errors import SegRosError
from seg_ros.fileio import atomic_write_bytes
from seg_ros.runtime.backends import META_KEY

PRECISION_KEY = 'seg_ros.precision'
AGREEMENT_KEY = 'seg_ros.int8_agreement'


@dataclass
class QuantizeReport:
    """What :func:`quantize_onnx` measured.

    Attributes:
        agreement: share of held-out pixels whose int8 id equals the fp32 id.
        worst_frame: the lowest per-frame agreement.
        calibration_frames: frames the activation ranges were measured on.
        held_out_frames: frames the agreement was measured on.
        written: whether the int8 file was written (agreement >= the gate).
    """

    agreement: float
    worst_frame: float
    calibration_frames: int
    held_out_frames: int
    written: bool


def require_fp32_export(model: Any, path: str | os.PathLike[str]) -> None:
    """Refuse anything but an fp32 seg_ros export (``model``: an onnx.ModelProto).

    Raises:
        SegRosError: no seg_ros metadata, or an fp16 / int8 export.
    """
    props = {p.key: p.value for p in model.metadata_props}
    if META_KEY not in props:
        raise SegRosError(f'{path}: no seg_ros metadata (export it with `seg-ros export`)')
    if props.get(PRECISION_KEY, 'fp32') != 'fp32':
        raise SegRosError(f'{path} is a {props[PRECISION_KEY]} export: quantize an fp32 one')


def split_frames(frames: Sequence[np.ndarray], held_out: int) -> tuple[list[np.ndarray],
                                                                        list[np.ndarray]]:
    """Calibration and held-out frames, interleaved over the source so both span all of it.

    Args:
        frames: all frames, in source order.
        held_out: how many to keep for the agreement check (every k-th frame).

    Raises:
        SegRosError: too few frames for both sets.
    """
    if held_out < 1 or len(frames) < held_out + 1:
        raise SegRosError(f'need more than {held_out} frames (got {len(frames)}): some to '
                          'calibrate on and the held-out ones to check agreement')
    step = len(frames) / held_out
    test_idx = {int(i * step + step / 2) for i in range(held_out)}
    calib = [f for i, f in enumerate(frames) if i not in test_idx]
    test = [f for i, f in enumerate(frames) if i in test_idx]
    return calib, test


def _set_prop(model: Any, key: str, value: str) -> None:
    for prop in model.metadata_props:
        if prop.key == key:
            prop.value = value
            return
    prop = model.metadata_props.add()
    prop.key, prop.value = key, value


def _agreement(reference: Any, candidate: Any, frames: Sequence[np.ndarray]) -> list[float]:
    """Per-frame share of pixels whose ``candidate`` id equals the ``reference`` id."""
    from seg_ros.progress import progress_bar

    name = reference.get_inputs()[0].name
    out = []
    for frame in progress_bar(frames, desc='int8 vs fp32', unit='frame', leave=False):
        a = reference.run(['ids'], {name: frame[None]})[0]
        b = candidate.run(['ids'], {name: frame[None]})[0]
        out.append(float((a == b).mean()))
    return out


def quantize_onnx(onnx_path: str | os.PathLike[str], calibration: Sequence[np.ndarray],
                  held_out: Sequence[np.ndarray], out: str | os.PathLike[str],
                  min_agreement: float = 0.99, threads: int | None = None) -> QuantizeReport:
    """Quantize an fp32 seg_ros ONNX export to int8 and keep it only if it agrees with fp32.

    Args:
        onnx_path: fp32 export from ``seg-ros export``.
        calibration: network-size (H, W, 3) uint8 RGB frames for the activation ranges.
        held_out: other frames of the same kind for the agreement check.
        out: the int8 ONNX file to write (atomically; nothing is written on refusal).
        min_agreement: the gate, a share of pixels in (0, 1].
        threads: ONNX Runtime threads for the agreement check.

    Returns:
        The measurements; ``written`` is False when the gate refused the file.

    Raises:
        SegRosError: not a seg_ros fp32 export, missing ``nncf``, bad frames.
    """
    try:
        import nncf
        import onnx
    except ImportError as exc:
        raise SegRosError(f'int8 quantization needs nncf and onnx ({exc.name} is missing): '
                          'pip install nncf onnx') from exc
    import onnxruntime as ort

    from seg_ros.runtime.backends import ort_session_options

    if not 0.0 < min_agreement <= 1.0:
        raise SegRosError(f'min_agreement must be in (0, 1], got {min_agreement}')
    if not calibration or not held_out:
        raise SegRosError('need calibration frames and held-out frames')
    path = Path(onnx_path)
    model = onnx.load(str(path))
    require_fp32_export(model, path)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    for frame in (*calibration, *held_out):
        if frame.dtype != np.uint8 or frame.shape != (dims[1], dims[2], 3):
            raise SegRosError(f'frames must be ({dims[1]}, {dims[2]}, 3) uint8 (the network '
                              f'input), got {frame.shape} {frame.dtype}')
    input_name = model.graph.input[0].name
    dataset = nncf.Dataset(list(calibration), lambda f: {input_name: f[None]})
    quantized = nncf.quantize(model, dataset, subset_size=len(calibration))
    _set_prop(quantized, PRECISION_KEY, 'int8')

    opts = ort_session_options(threads)
    reference = ort.InferenceSession(str(path), sess_options=opts,
                                     providers=['CPUExecutionProvider'])
    int8 = ort.InferenceSession(quantized.SerializeToString(), sess_options=opts,
                                providers=['CPUExecutionProvider'])
    per_frame = _agreement(reference, int8, held_out)
    report = QuantizeReport(agreement=float(np.mean(per_frame)), worst_frame=min(per_frame),
                            calibration_frames=len(calibration), held_out_frames=len(held_out),
                            written=False)
    if report.agreement < min_agreement:
        return report
    _set_prop(quantized, AGREEMENT_KEY, f'{report.agreement:.5f}')
    atomic_write_bytes(out, quantized.SerializeToString())
    report.written = True
    return report
