"""What the CPU can do, read once from the operating system: the facts behind ``auto`` choices.

``precision: auto`` picks bf16 only where the CPU computes bf16 natively (AVX512_BF16 or AMX);
elsewhere OpenVINO would emulate it and be slower than fp32. Benchmarks print the same flags,
since the CPU behind a CI or development machine changes between sessions.
"""
from __future__ import annotations

from dataclasses import dataclass
import functools
import os
import platform

# /proc/cpuinfo flag names (Linux arch/x86/include/asm/cpufeatures.h).
BF16_FLAGS = ('avx512_bf16', 'amx_bf16')
INT8_FLAGS = ('avx512_vnni', 'avx_vnni', 'amx_int8')
REPORTED_FLAGS = ('avx2', 'avx512f', 'avx512_vnni', 'avx_vnni', 'avx512_bf16', 'amx_bf16',
                  'amx_int8', 'avx512_fp16')


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name and its instruction-set flags (lower case, as Linux names them)."""

    model: str
    flags: frozenset[str]

    @property
    def native_bf16(self) -> bool:
        """bf16 arithmetic in hardware (AVX512_BF16 or AMX-BF16)."""
        return any(f in self.flags for f in BF16_FLAGS)

    @property
    def int8_dot(self) -> bool:
        """int8 dot-product instructions (VNNI or AMX-INT8): where int8 pays off."""
        return any(f in self.flags for f in INT8_FLAGS)

    def summary(self) -> str:
        """One line for logs and benchmark reports: model and the flags that matter here."""
        seen = [f for f in REPORTED_FLAGS if f in self.flags]
        return f'{self.model} [{", ".join(seen) or "no AVX2/AVX-512"}]'


def parse_cpuinfo(text: str) -> CpuInfo:
    """A :class:`CpuInfo` from the text of ``/proc/cpuinfo`` (the first processor's entry)."""
    model = ''
    flags: frozenset[str] = frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(':')
        key = key.strip().lower()
        if key == 'model name' and not model:
            model = value.strip()
        elif key in ('flags', 'features') and not flags:  # x86 'flags', Arm 'Features'
            flags = frozenset(value.split())
    return CpuInfo(model or platform.processor() or 'unknown CPU', flags)


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CPU (empty flags where ``/proc/cpuinfo`` cannot be read)."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
            return parse_cpuinfo(f.read())
    except OSError:
        return CpuInfo(platform.processor() or 'unknown CPU', frozenset())


def free_cores() -> int:
    """The cores this process may use now: CPU count minus the 1-minute load average, >= 1.

    OpenMP threads that outnumber the free cores stall each other even with passive waiting:
    measured on 2 cores at load 4, the torch backend took 53 ms per frame with 2 threads and
    29 ms with 1 (``benchmarks/bench_torch_threads.py``). Read once, when a backend or a
    training run starts.
    """
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average (some containers, Windows)
        load = 0.0
    return max(1, min(cores, int(round(cores - load))))
