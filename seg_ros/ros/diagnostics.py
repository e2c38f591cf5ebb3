"""Pipeline statistics of the segmentation node and their ``/diagnostics`` message.

:class:`PipelineStats` is updated from two threads (the subscription callback counts input,
the worker counts output) and read by the diagnostics timer; :func:`diagnostic_status` turns
a snapshot into a ``diagnostic_msgs/DiagnosticStatus`` the way ``diagnostic_updater`` tasks
do (one status per node, key/value pairs, a level with a one-line summary).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
import threading
import time
from typing import Any

import numpy as np

RATE_WINDOW_S = 5.0  # rates are averaged over the last few seconds: smooth but responsive
LATENCY_SAMPLES = 500  # p99 needs a few hundred samples to mean anything


@dataclass
class StatsSnapshot:
    """A consistent copy of :class:`PipelineStats` at one instant."""

    input_rate_hz: float
    output_rate_hz: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    processing_p50_ms: float | None
    inference_p50_ms: float | None
    inference_p99_ms: float | None
    frames_received: int
    frames_processed: int
    frames_dropped: int
    frames_rejected: int
    inference_errors: int
    last_reject_reason: str
    seconds_since_input: float | None
    extra: dict[str, str] = field(default_factory=dict)


def _percentile(values: deque[float], q: float) -> float | None:
    return float(np.percentile(np.fromiter(values, float), q)) if values else None


class PipelineStats:
    """Counters and sliding windows of the node's pipeline. Thread-safe."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._inputs: deque[float] = deque()
        self._outputs: deque[float] = deque()
        self._latency_ms: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._processing_ms: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._inference_ms: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.frames_received = 0
        self.frames_processed = 0
        self.frames_rejected = 0
        self.inference_errors = 0
        self.last_reject_reason = ''
        self._last_input: float | None = None
        self._started = clock()

    def _trim(self, times: deque[float], now: float) -> None:
        while times and now - times[0] > RATE_WINDOW_S:
            times.popleft()

    def frame_received(self) -> None:
        """Called by the subscription callback for every frame."""
        now = self._clock()
        with self._lock:
            self.frames_received += 1
            self._last_input = now
            self._inputs.append(now)
            self._trim(self._inputs, now)

    def frame_published(self, latency_ms: float | None, processing_ms: float,
                        inference_ms: float | None) -> None:
        """Called by the worker after the mask of a frame went out.

        Args:
            latency_ms: header stamp -> publish on the node's clock (None if the stamp is
                unset, e.g. zero, so a meaningless number never pollutes the statistics).
            processing_ms: frame received -> published, inside the node.
            inference_ms: the backend's inference time.
        """
        now = self._clock()
        with self._lock:
            self.frames_processed += 1
            self._outputs.append(now)
            self._trim(self._outputs, now)
            if latency_ms is not None:
                self._latency_ms.append(latency_ms)
            self._processing_ms.append(processing_ms)
            if inference_ms is not None:
                self._inference_ms.append(inference_ms)

    def frame_rejected(self, reason: str) -> None:
        """A frame that could not be decoded (bad step, short data, unknown encoding ...)."""
        with self._lock:
            self.frames_rejected += 1
            self.last_reject_reason = reason

    def inference_failed(self, reason: str) -> None:
        """The backend raised on a decoded frame."""
        with self._lock:
            self.inference_errors += 1
            self.last_reject_reason = reason

    def reset_input_clock(self) -> None:
        """Restart the no-input timer (on start or lifecycle activation)."""
        with self._lock:
            self._started = self._clock()
            self._last_input = None

    def _rate(self, times: deque[float], now: float) -> float:
        self._trim(times, now)
        if not times:
            return 0.0
        # events in the window over the window length, or over the time since the first event
        # while the node has run for less than a window
        span = min(RATE_WINDOW_S, max(now - self._started, 1e-3))
        return len(times) / span

    def snapshot(self, frames_dropped: int) -> StatsSnapshot:
        """Copy of the current statistics; ``frames_dropped`` comes from the frame slot."""
        now = self._clock()
        with self._lock:
            since = now - (self._last_input if self._last_input is not None else self._started)
            return StatsSnapshot(
                input_rate_hz=self._rate(self._inputs, now),
                output_rate_hz=self._rate(self._outputs, now),
                latency_p50_ms=_percentile(self._latency_ms, 50),
                latency_p99_ms=_percentile(self._latency_ms, 99),
                processing_p50_ms=_percentile(self._processing_ms, 50),
                inference_p50_ms=_percentile(self._inference_ms, 50),
                inference_p99_ms=_percentile(self._inference_ms, 99),
                frames_received=self.frames_received,
                frames_processed=self.frames_processed,
                frames_dropped=frames_dropped,
                frames_rejected=self.frames_rejected,
                inference_errors=self.inference_errors,
                last_reject_reason=self.last_reject_reason,
                seconds_since_input=since)


def _fmt(value: float | None, digits: int = 2) -> str:
    return 'n/a' if value is None else f'{value:.{digits}f}'


def diagnostic_status(snap: StatsSnapshot, name: str, hardware_id: str,
                      info: dict[str, str], no_input_warn_s: float,
                      input_topic: str = '', new_rejects: int = 0,
                      new_errors: int = 0) -> Any:
    """Build the node's ``diagnostic_msgs/DiagnosticStatus``.

    Levels: ERROR when inference failed since the last report; WARN without input for longer
    than ``no_input_warn_s`` (0 disables) or when frames were rejected since the last report;
    OK otherwise.

    Args:
        snap: statistics snapshot.
        name: status name (``<node name>: segmentation``).
        hardware_id: backend and device.
        info: static key/values (backend, model, input size ...).
        no_input_warn_s: seconds without input before WARN.
        input_topic: resolved input topic for the messages.
        new_rejects: frames rejected since the previous report.
        new_errors: inference errors since the previous report.
    """
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

    status = DiagnosticStatus(name=name, hardware_id=hardware_id)
    idle = (no_input_warn_s > 0 and snap.seconds_since_input is not None
            and snap.seconds_since_input > no_input_warn_s)
    if new_errors:
        status.level = DiagnosticStatus.ERROR
        status.message = f'{new_errors} inference errors: {snap.last_reject_reason}'
    elif idle:
        status.level = DiagnosticStatus.WARN
        status.message = f'no input on {input_topic} for {snap.seconds_since_input:.0f} s'
    elif new_rejects:
        status.level = DiagnosticStatus.WARN
        status.message = f'{new_rejects} frames rejected: {snap.last_reject_reason}'
    else:
        status.level = DiagnosticStatus.OK
        status.message = (f'{snap.output_rate_hz:.1f} Hz, latency p50 '
                          f'{_fmt(snap.latency_p50_ms, 1)} ms')
    values = {
        'input rate (Hz)': _fmt(snap.input_rate_hz),
        'output rate (Hz)': _fmt(snap.output_rate_hz),
        'latency p50 (ms)': _fmt(snap.latency_p50_ms),
        'latency p99 (ms)': _fmt(snap.latency_p99_ms),
        'processing p50 (ms)': _fmt(snap.processing_p50_ms),
        'inference p50 (ms)': _fmt(snap.inference_p50_ms),
        'inference p99 (ms)': _fmt(snap.inference_p99_ms),
        'frames received': str(snap.frames_received),
        'frames processed': str(snap.frames_processed),
        'frames dropped': str(snap.frames_dropped),
        'frames rejected': str(snap.frames_rejected),
        'inference errors': str(snap.inference_errors),
        'last error': snap.last_reject_reason or 'none',
        'seconds since input': _fmt(snap.seconds_since_input, 1),
        **info,
    }
    status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
    return status
