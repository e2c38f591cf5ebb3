"""``precision: auto``: the fastest precision the backend and the hardware run correctly.

Each choice comes with its reason, which the node logs and shows in ``/diagnostics`` and the
CLI prints, so "why is this robot running fp32?" has an answer on the robot. An explicit
precision is never changed here: the backend obeys it or refuses it with a reason.
"""
from __future__ import annotations

from seg_ros.errors import SegRosError
from seg_ros.runtime.cpu import BF16_FLAGS, CpuInfo, cpu_info

PRECISION_CHOICES = ('auto', 'fp32', 'fp16', 'bf16', 'int8')


def choose_precision(precision: str, backend: str, device: str,
                     cpu: CpuInfo | None = None) -> tuple[str, str]:
    """The concrete precision for ``precision`` on ``backend``/``device``, and why.

    ``auto`` means fp16 on CUDA (TensorRT, torch, ONNX Runtime) and on an Intel GPU, bf16 under
    OpenVINO on a CPU with native bf16 (AVX512_BF16 or AMX), fp32 everywhere else. int8 is
    never chosen automatically: it needs calibration data the user picks.

    Args:
        precision: ``auto`` or an explicit precision.
        backend: the resolved backend (``tensorrt``, ``torch``, ``onnxruntime``, ``openvino``).
        device: the resolved device (``cpu``, ``cuda:N``, ``gpu``).
        cpu: the CPU's flags (default: this machine's).

    Raises:
        SegRosError: an unknown precision.
    """
    if precision not in PRECISION_CHOICES:
        raise SegRosError(f'precision must be one of {", ".join(PRECISION_CHOICES)}, '
                          f'got {precision!r}')
    if precision != 'auto':
        return precision, 'requested'
    if backend == 'tensorrt':
        return 'fp16', 'auto: TensorRT runs fp16 on every supported GPU'
    if device.startswith('cuda'):
        return 'fp16', f'auto: {backend} on a CUDA device runs fp16'
    if backend == 'openvino' and device.startswith('gpu'):
        return 'fp16', 'auto: OpenVINO on an Intel GPU runs fp16'
    if backend == 'openvino':
        cpu = cpu or cpu_info()
        if cpu.native_bf16:
            flags = ', '.join(f for f in BF16_FLAGS if f in cpu.flags)
            return 'bf16', f'auto: OpenVINO on a CPU with native bf16 ({flags})'
        return 'fp32', (f'auto: this CPU has no native bf16 ({" or ".join(BF16_FLAGS)}), so '
                        'OpenVINO runs fp32')
    return 'fp32', f'auto: {backend} on the CPU runs fp32'
