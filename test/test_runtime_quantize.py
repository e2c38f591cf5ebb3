"""int8 for CPUs: NNCF quantization of the shipped model, gated on ids agreement with fp32."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from seg_ros import cli
from seg_ros.errors import SegRosError
from seg_ros.runtime.backends import OrtBackend, read_onnx_meta
from seg_ros.runtime.quantize import quantize_onnx, split_frames

pytest.importorskip('nncf', reason='nncf is not installed')
SHIPPED = Path(__file__).resolve().parents[1] / 'models' / 'regseg48_synthetic.onnx'


def _drive(n: int, size: tuple[int, int], seed: int) -> list[np.ndarray]:
    from seg_ros.data.synthetic import SyntheticDrive

    drive = SyntheticDrive(size=size, seed=seed)
    return [drive.frame(i * 9)[0] for i in range(n)]


@pytest.fixture(scope='module')
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 camera-size frames (256x512, twice the network input): resized like on the robot."""
    root = tmp_path_factory.mktemp('calib')
    for i, rgb in enumerate(_drive(16, (256, 512), seed=4242)):
        cv2.imwrite(str(root / f'{i:03d}.png'), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return root


def test_split_frames_is_disjoint_and_spread() -> None:
    frames = [np.full((2, 2, 3), i, np.uint8) for i in range(20)]
    calib, held = split_frames(frames, 4)
    assert len(calib) == 16 and len(held) == 4
    held_ids = [int(f[0, 0, 0]) for f in held]
    assert held_ids == sorted(held_ids) and held_ids[0] < 5 and held_ids[-1] >= 15
    assert not {int(f[0, 0, 0]) for f in calib} & set(held_ids)
    with pytest.raises(SegRosError, match='need more than 4 frames'):
        split_frames(frames[:4], 4)


def test_gate_refuses_and_writes_nothing(tmp_path: Path) -> None:
    h, w = read_onnx_meta(SHIPPED).input_size
    calib, held = split_frames(_drive(12, (h, w), seed=77), 4)
    out = tmp_path / 'int8.onnx'
    report = quantize_onnx(SHIPPED, calib, held, out, min_agreement=1.0, threads=1)
    assert not report.written and not out.exists()
    assert 0.9 < report.agreement < 1.0  # int8 is close to fp32, but not bit-equal
    assert report.worst_frame <= report.agreement
    assert list(tmp_path.iterdir()) == []  # no temp file left either
    with pytest.raises(SegRosError, match='frames must be'):
        quantize_onnx(SHIPPED, [np.zeros((8, 8, 3), np.uint8)], held, out)


def test_cli_writes_an_int8_model_that_runs(folder: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / 'regseg48_int8.onnx'
    # The gate is lowered for 12 calibration frames (a real run uses 64: 99.2% at 48 + 16)
    assert cli.main(['quantize', str(SHIPPED), '--calib', str(folder), '--frames', '16',
                     '--held-out', '4', '--threads', '1', '--min-agreement', '0.97',
                     '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'held-out frames' in printed and f'wrote {out}' in printed
    import onnx

    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props['seg_ros.precision'] == 'int8'
    assert float(props['seg_ros.int8_agreement']) >= 0.97
    assert read_onnx_meta(out) == read_onnx_meta(SHIPPED)
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {'QuantizeLinear', 'DequantizeLinear'} <= ops
    frame = _drive(1, tuple(read_onnx_meta(SHIPPED).input_size), seed=999)[0][None]
    int8_ids, _ = OrtBackend(out, threads=1).infer(frame)
    fp32_ids, _ = OrtBackend(SHIPPED, threads=1).infer(frame)
    assert (int8_ids == fp32_ids).mean() > 0.95
    # an int8 file is not quantized again
    assert cli.main(['quantize', str(out), '--calib', str(folder), '--out',
                     str(tmp_path / 'again.onnx')]) != 0
    assert 'quantize an fp32 one' in capsys.readouterr().err
