"""Latency benchmark of the segmentation pipeline (``seg-ros bench``).

Frames come from the synthetic drive (real-looking, varying), are run through a
:class:`~seg_ros.runtime.segmenter.Segmenter` after a warm-up, and the per-stage wall times it
reports are summarised as median / p90 / p99 and FPS. An optional baseline runs the bare
network in torch eager fp32 NCHW on the same frames in the same process, the reference for the
"ONNX Runtime pipeline >= 2x torch eager" target, and reports how often both agree on the ids.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
import platform
import resource
import time
from typing import Any

import numpy as np

from seg_ros.progress import progress_bar
from seg_ros.runtime.segmenter import Segmenter

STAGES = ('preprocess_ms', 'inference_ms', 'postprocess_ms', 'total_ms')


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """median, p90, p99, mean, min of a list of milliseconds."""
    a = np.asarray(samples, dtype=np.float64)
    return {'median': float(np.median(a)), 'p90': float(np.percentile(a, 90)),
            'p99': float(np.percentile(a, 99)), 'mean': float(a.mean()), 'min': float(a.min())}


def bench_frames(size: tuple[int, int], n: int = 8, seed: int = 0) -> list[np.ndarray]:
    """``n`` real-looking RGB frames of ``size`` (synthetic drive; smooth noise fallback)."""
    try:
        from seg_ros.data.synthetic import SyntheticDrive

        drive = SyntheticDrive(size=size, seed=seed)
        return [drive.frame(i * 5)[0] for i in range(n)]
    except ImportError:  # pragma: no cover - the data room always ships it
        import cv2

        rng = np.random.default_rng(seed)
        small = rng.integers(0, 256, (n, 16, 32, 3), dtype=np.uint8)
        return [cv2.resize(s, (size[1], size[0]), interpolation=cv2.INTER_CUBIC) for s in small]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if platform.system() != 'Darwin' else kb / 2**20


def bench_segmenter(seg: Segmenter, frames: Sequence[np.ndarray], iters: int = 50,
                    warmup: int = 5, confidence: bool = False, color: bool = False,
                    overlay: bool = False, progress: bool = True,
                    baseline: Callable[[int], Any] | None = None) -> dict[str, Any]:
    """Time ``seg`` on ``frames`` (cycled) and summarise each stage.

    Args:
        baseline: optional ``f(frame_index)`` timed in alternation with the pipeline, so both
            see the same machine load (the benchmark machine may be shared).

    Returns:
        ``{'preprocess_ms': {...}, 'inference_ms': {...}, 'postprocess_ms': {...},
        'total_ms': {...}, 'cpu_ms': {...}, 'fps': float, 'iters': int}`` and, with a
        baseline, ``'baseline': {'total_ms': {...}, 'cpu_ms': {...}}``. ``cpu_ms`` is process
        CPU time per frame (all threads), less sensitive to other processes than wall time.
    """
    for i in range(warmup):
        seg(frames[i % len(frames)], confidence=confidence, color=color, overlay=overlay)
        if baseline is not None:
            baseline(i % len(frames))
    samples: dict[str, list[float]] = {k: [] for k in (*STAGES, 'cpu_ms')}
    base: dict[str, list[float]] = {'total_ms': [], 'cpu_ms': []}
    for i in progress_bar(range(iters), desc=f'bench {seg.backend_name}', enabled=progress,
                          leave=False):
        k = i % len(frames)
        t0, c0 = time.perf_counter(), time.process_time()
        res = seg(frames[k], confidence=confidence, color=color, overlay=overlay)
        samples['total_ms'].append((time.perf_counter() - t0) * 1e3)
        samples['cpu_ms'].append((time.process_time() - c0) * 1e3)
        for name in STAGES[:3]:
            samples[name].append(res.timings[name])
        if baseline is not None:
            t0, c0 = time.perf_counter(), time.process_time()
            baseline(k)
            base['total_ms'].append((time.perf_counter() - t0) * 1e3)
            base['cpu_ms'].append((time.process_time() - c0) * 1e3)
    out: dict[str, Any] = {k: summarize(v) for k, v in samples.items()}
    out['fps'] = 1000.0 / out['total_ms']['median']
    out['iters'] = iters
    if baseline is not None:
        out['baseline'] = {k: summarize(v) for k, v in base.items()}
    return out


def torch_eager_baseline(model: Any, mean: Sequence[float], std: Sequence[float],
                         frames: Sequence[np.ndarray], size: tuple[int, int],
                         threads: int | None = None
                         ) -> tuple[Callable[[int], Any], Callable[[int], np.ndarray]]:
    """The reference: the bare network in torch eager fp32 NCHW.

    The float NCHW inputs are prepared (resized, normalised) once beforehand, so only
    ``model(x)`` is timed: the most favourable way to count torch eager.

    Returns:
        (step(frame_index) running the model, ids(frame_index) -> (H, W) uint8 at network size).
    """
    import cv2
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    mean_t = torch.tensor(list(mean)).view(1, 3, 1, 1)
    std_t = torch.tensor(list(std)).view(1, 3, 1, 1)
    inputs = []
    for frame in frames:
        if frame.shape[:2] != tuple(size):
            frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255.0
        inputs.append(((x - mean_t) / std_t).contiguous())
    model = model.eval().float()

    def step(i: int) -> Any:
        with torch.inference_mode():
            return model(inputs[i])

    def ids(i: int) -> np.ndarray:
        return step(i).argmax(1)[0].to(torch.uint8).numpy()

    return step, ids
