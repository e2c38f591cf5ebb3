"""CPU feature detection and the ``auto`` precision choice (no timing, no model)."""
from __future__ import annotations

import os

import pytest

from seg_ros.errors import SegRosError
from seg_ros.runtime.auto import choose_precision
from seg_ros.runtime.cpu import cpu_info, parse_cpuinfo

EPYC = """processor\t: 0
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16
processor\t: 1
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16
"""
SAPPHIRE = 'model name\t: Intel(R) Xeon(R)\nflags\t\t: avx2 avx512f amx_bf16 amx_int8 amx_tile\n'
OLD_XEON = 'model name\t: Intel(R) Xeon(R) E5\nflags\t\t: sse4_2 avx avx2 fma\n'
ARM = 'processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 bf16\n'


def test_parse_cpuinfo_reads_model_and_flags() -> None:
    epyc = parse_cpuinfo(EPYC)
    assert epyc.model == 'AMD EPYC 9R14 96-Core Processor'
    assert epyc.native_bf16 and epyc.int8_dot
    assert 'avx512_bf16' in epyc.summary() and 'amx_bf16' not in epyc.summary()
    amx = parse_cpuinfo(SAPPHIRE)
    assert amx.native_bf16 and amx.int8_dot
    old = parse_cpuinfo(OLD_XEON)
    assert not old.native_bf16 and not old.int8_dot
    assert 'avx2' in old.summary()
    arm = parse_cpuinfo(ARM)  # Arm 'bf16' is not an x86 flag: no OpenVINO bf16 claim
    assert 'asimd' in arm.flags and not arm.native_bf16
    assert parse_cpuinfo('').flags == frozenset()


def test_this_machine_is_read() -> None:
    info = cpu_info()
    assert info.model and info.summary().startswith(info.model)


@pytest.mark.parametrize('backend, device, cpu, expected', [
    ('tensorrt', 'cuda:0', OLD_XEON, 'fp16'),
    ('torch', 'cuda:1', OLD_XEON, 'fp16'),
    ('onnxruntime', 'cuda:0', EPYC, 'fp16'),
    ('openvino', 'cpu', EPYC, 'bf16'),
    ('openvino', 'cpu', SAPPHIRE, 'bf16'),
    ('openvino', 'cpu', OLD_XEON, 'fp32'),
    ('openvino', 'gpu', OLD_XEON, 'fp16'),
    ('onnxruntime', 'cpu', EPYC, 'fp32'),  # ORT has no bf16 CPU kernels worth having
    ('torch', 'cpu', SAPPHIRE, 'fp32'),
])
def test_auto_precision_follows_backend_and_cpu_flags(backend: str, device: str, cpu: str,
                                                     expected: str) -> None:
    chosen, reason = choose_precision('auto', backend, device, parse_cpuinfo(cpu))
    assert chosen == expected
    assert reason.startswith('auto: ')
    if backend == 'openvino' and device == 'cpu':
        assert ('bf16' in reason) and (('avx512_bf16' in reason) or ('amx_bf16' in reason)
                                       or 'no native bf16' in reason)


def test_explicit_precision_is_never_changed() -> None:
    old = parse_cpuinfo(OLD_XEON)
    for precision in ('fp32', 'fp16', 'bf16', 'int8'):
        assert choose_precision(precision, 'openvino', 'cpu', old) == (precision, 'requested')
    with pytest.raises(SegRosError, match='precision must be one of'):
        choose_precision('fp64', 'torch', 'cpu', old)


@pytest.mark.parametrize('cpu, expected', [(SAPPHIRE, 'bf16'), (EPYC, 'bf16'),
                                           (OLD_XEON, 'none')])
def test_training_amp_auto_follows_the_cpu_flags(monkeypatch: pytest.MonkeyPatch, cpu: str,
                                                 expected: str) -> None:
    import torch

    from seg_ros.train import loop

    monkeypatch.setattr(loop, 'cpu_info', lambda: parse_cpuinfo(cpu))
    assert loop.resolve_amp('auto', torch.device('cpu')) == expected
    assert loop.resolve_amp('auto', torch.device('cuda', 0)) == 'fp16'
    assert loop.resolve_amp('none', torch.device('cpu')) == 'none'  # explicit: obeyed


@pytest.mark.parametrize('load, expected', [(0.0, 4), (1.4, 3), (2.6, 1), (9.0, 1)])
def test_free_cores_subtracts_the_load(monkeypatch: pytest.MonkeyPatch, load: float,
                                       expected: int) -> None:
    from seg_ros.runtime import cpu

    monkeypatch.setattr(cpu.os, 'cpu_count', lambda: 4)
    monkeypatch.setattr(cpu.os, 'getloadavg', lambda: (load, load, load))
    assert cpu.free_cores() == expected


def test_torch_backend_threads_default_to_the_free_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from seg_ros.metadata import ModelMeta
    from seg_ros.models import create_model
    from seg_ros.runtime import cpu
    from seg_ros.runtime.backends import TorchBackend

    before = torch.get_num_threads()
    monkeypatch.setattr(cpu.os, 'getloadavg', lambda: (float(os.cpu_count() or 1),) * 3)
    try:
        net = create_model('eseg_lite_s').eval()
        backend = TorchBackend(net, ModelMeta('eseg_lite_s'), (32, 64), threads=None)
        assert backend.threads == 1 == torch.get_num_threads()  # fully loaded: one thread
        backend = TorchBackend(net, ModelMeta('eseg_lite_s'), (32, 64), threads=2)
        assert backend.threads == 2  # explicit: obeyed
    finally:
        torch.set_num_threads(before)
