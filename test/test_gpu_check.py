"""benchmarks/gpu_check.py runs its CPU-possible parts here, without rclpy (issue 13).

No GPU here: ``--dry-run`` (= ``--device cpu --quick``) runs every section that does not need
CUDA or TensorRT on a small model: fp32 eager timing, AMP (bf16) training steps, the export,
ONNX Runtime at batch 1-4 against frame-by-frame results; the CUDA / TensorRT parts report
themselves as skipped with the reason. The run has rclpy made unimportable, as on the bare
CUDA machine the script is meant for.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_without_rclpy(tmp_path: Path) -> None:
    poison = tmp_path / 'poison' / 'rclpy'
    poison.mkdir(parents=True)
    (poison / '__init__.py').write_text("raise ImportError('no rclpy on this machine')\n")
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
        [str(poison.parent), str(ROOT), os.environ.get('PYTHONPATH', '')])}
    out = tmp_path / 'gpu_check.json'
    proc = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'gpu_check.py'),
                           '--dry-run', '--out', str(out), '--work', str(tmp_path / 'work')],
                          capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report['errors'] == [] and report['rclpy_imported'] is False
    (row,) = report['torch']
    assert row['model'] == 'regseg48' and row['fp32_eager_ms']['n'] == 3
    assert row['fp16_cl_graph_ms'] == {'skipped': 'needs CUDA'}
    (amp,) = report['amp']
    assert amp['loss_finite'] is True and amp['dtype'] == 'bfloat16'
    (exp,) = report['export_trt']['models']
    assert exp['ort_dynamic_batch_agree'] == {'1': 1.0, '2': 1.0, '3': 1.0, '4': 1.0}
    assert report['export_trt']['tensorrt'] is None
    assert report['export_trt']['tensorrt_skipped']
    mc = report['multicam']  # issue 19's batch-vs-sequential check, on the CPU here
    assert mc['cameras'] == 6 and mc['batched_ms']['n'] == 3
    assert mc['ids_agree_batched_vs_single'] == 1.0
    assert 'regseg48' in proc.stdout and 'amp train' in proc.stdout  # the table
    assert 'multicam 6 cameras' in proc.stdout


def test_gpu_check_helpers() -> None:
    sys.path.insert(0, str(ROOT / 'benchmarks'))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / 'benchmarks'))
    # a nested failure anywhere makes the run fail (exit status 1)
    assert gpu_check._errors({'torch': [{'model': 'a'}, {'error': 'boom'}],
                              'export_trt': {'models': [{'fp16': {'error': 'x'}}]}}) == \
        ['torch[1]: boom', 'export_trt.models[0].fp16: x']
    s = gpu_check.stats([1.0] * 99 + [100.0])
    assert s['p50'] == 1.0 and s['p99'] > 1.0 and s['n'] == 100
    f = gpu_check.frames(2, (16, 32))
    assert f.shape == (2, 16, 32, 3) and f.dtype.name == 'uint8' and (f[0] != f[1]).any()
    assert gpu_check.main(['--device', 'cuda:0', '--out', os.devnull]) == 2 or \
        __import__('torch').cuda.is_available()
