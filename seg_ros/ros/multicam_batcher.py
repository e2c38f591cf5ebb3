"""The batching policy of the multi-camera node, without ROS: per-camera slots and triggers.

Each camera has a one-slot, drop-oldest buffer (latest frame only, as the single-camera
node's :class:`~seg_ros.ros.node_utils.FrameSlot`); the subscription callbacks put
preprocessed frames in, and :meth:`Batcher.next_batch` (the worker thread) decides when a
batch runs and with which frames:

* ``anchor`` trigger: a frame of the anchor camera starts a batch. The cameras that were in
  the previous batch and have no fresh frame yet are waited for, up to ``timeout_s``; one that
  misses it is counted late and left out, and is not waited for again until it delivers, so
  a dead or slow camera costs at most one timeout. When the anchor itself has sent nothing
  for ``anchor_timeout_s``, any camera's frame triggers (a dead anchor never stops the
  others).
* ``period`` trigger: a batch every ``period_s`` with whatever cameras have a fresh frame.
* ``max_spread_s`` > 0: frames whose header stamp is older than the triggering frame's by more
  are skipped (counted), newer ones stay for the next batch.

The same pattern as Autoware's StreamPETR node (preprocess on arrival, anchor camera, stamp
spread) and its fusion collector (per-camera timeout, partial batches), written here from
their description.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
import threading
import time
from typing import Any


@dataclass
class Pending:
    """A frame waiting in its camera's slot.

    Attributes:
        item: what the node stores (header, decoded and preprocessed frame ...).
        stamp_ns: header stamp in nanoseconds (0 = unset: no stamp-spread check).
        arrival: monotonic time it arrived.
    """

    item: Any
    stamp_ns: int
    arrival: float


@dataclass(frozen=True)
class BatchPolicy:
    """The batching parameters (re-read before every batch: they may change at run time).

    Attributes:
        trigger: ``anchor`` or ``period``.
        anchor: index of the anchor camera.
        period_s: period of the ``period`` trigger.
        anchor_timeout_s: the anchor's silence after which any camera triggers.
        timeout_s: longest wait for a camera that was in the previous batch.
        max_spread_s: largest stamp difference to the triggering frame (0 = no limit).
    """

    trigger: str = 'anchor'
    anchor: int = 0
    period_s: float = 1.0 / 30.0
    anchor_timeout_s: float = 0.25
    timeout_s: float = 0.03
    max_spread_s: float = 0.0


@dataclass
class Batch:
    """What :meth:`Batcher.next_batch` hands the worker.

    Attributes:
        frames: camera index -> its frame, in camera order.
        late: cameras waited for that missed the timeout.
        skipped: cameras whose frame was too old for the stamp spread.
        trigger_camera: the camera whose frame started the batch (None: the period timer).
        triggered_at: monotonic time of the trigger.
    """

    frames: dict[int, Pending]
    late: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    trigger_camera: int | None = None
    triggered_at: float = 0.0


class Batcher:
    """Per-camera one-slot buffers and the batch trigger. Thread-safe.

    Args:
        num_cameras: number of cameras.
        clock: monotonic clock (seconds).
    """

    def __init__(self, num_cameras: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.n = int(num_cameras)
        self._clock = clock
        self._cond = threading.Condition()
        self._slots: list[Pending | None] = [None] * self.n
        self._closed = False
        self.received = [0] * self.n
        self.dropped = [0] * self.n  # replaced in the slot before a batch took them
        self.late = [0] * self.n
        self.skipped = [0] * self.n
        self.batches = 0
        self.partial_batches = 0
        self.late_now = [False] * self.n  # missed the last batch that waited for it
        self._last_arrival: list[float | None] = [None] * self.n
        self._previous: set[int] = set()
        self._started = clock()
        self._next_tick: float | None = None

    # ------------------------------------------------------------------ producer side
    def put(self, camera: int, item: Any, stamp_ns: int = 0) -> bool:
        """Store camera ``camera``'s newest frame; True when an unbatched one was dropped."""
        with self._cond:
            now = self._clock()
            dropped = self._slots[camera] is not None
            if dropped:
                self.dropped[camera] += 1
            self._slots[camera] = Pending(item, int(stamp_ns), now)
            self.received[camera] += 1
            self._last_arrival[camera] = now
            self._cond.notify_all()
            return dropped

    def close(self) -> None:
        """Wake the worker for good; pending frames are discarded and counted as dropped."""
        with self._cond:
            self._closed = True
            for i, pending in enumerate(self._slots):
                if pending is not None:
                    self.dropped[i] += 1
            self._slots = [None] * self.n
            self._cond.notify_all()

    def reopen(self) -> None:
        """Accept frames again after :meth:`close` (lifecycle re-activation)."""
        with self._cond:
            self._closed = False
            self._started = self._clock()
            self._previous = set()
            self._next_tick = None
            self._last_arrival = [None] * self.n
            self.late_now = [False] * self.n

    def seconds_since_input(self, camera: int) -> float:
        """Age of the camera's last frame (or of the start, before its first one)."""
        with self._cond:
            last = self._last_arrival[camera]
            return self._clock() - (self._started if last is None else last)

    # ------------------------------------------------------------------ consumer side
    def next_batch(self, policy: BatchPolicy, wait_s: float = 0.5) -> Batch | None:
        """Wait (at most about ``wait_s`` plus the camera timeout) for the next batch.

        Returns:
            The batch, or None when nothing triggered meanwhile or the batcher is closed
            (the caller re-checks its stop flag and settings, then calls again).
        """
        with self._cond:
            if policy.trigger == 'period':
                return self._period_batch(policy, wait_s)
            return self._anchor_batch(policy, wait_s)

    def _fresh(self) -> set[int]:
        return {i for i, p in enumerate(self._slots) if p is not None}

    def _anchor_batch(self, policy: BatchPolicy, wait_s: float) -> Batch | None:
        anchor = min(max(policy.anchor, 0), self.n - 1)

        def anchor_silent() -> bool:
            last = self._last_arrival[anchor]
            since = self._clock() - (self._started if last is None else last)
            return since >= policy.anchor_timeout_s

        def triggered() -> bool:
            if self._closed:
                return True
            fresh = self._fresh()
            return anchor in fresh or (bool(fresh) and anchor_silent())

        deadline = self._clock() + wait_s
        while not triggered():
            remaining = deadline - self._clock()
            if remaining <= 0:
                return None
            # Wake in time for the anchor-silence fallback, not only on a new frame; once the
            # anchor is silent only a new frame can trigger, so no polling then.
            last = self._last_arrival[anchor]
            until_silent = ((self._started if last is None else last)
                            + policy.anchor_timeout_s - self._clock())
            self._cond.wait(remaining if until_silent <= 0 else min(remaining, until_silent))
        if self._closed:
            return None
        fresh = self._fresh()
        trigger = anchor if anchor in fresh else min(fresh)
        triggered_at = self._clock()
        # Wait for the cameras that kept up last time, never beyond the timeout.
        expected = {i for i in self._previous if not self.late_now[i]}
        wait_until = triggered_at + policy.timeout_s
        while not self._closed and not expected <= self._fresh():
            remaining = wait_until - self._clock()
            if remaining <= 0:
                break
            self._cond.wait(remaining)
        if self._closed:
            return None
        fresh = self._fresh()
        late = sorted(expected - fresh)
        for i in late:
            self.late[i] += 1
            self.late_now[i] = True
        return self._take(fresh, trigger, triggered_at, late, policy)

    def _period_batch(self, policy: BatchPolicy, wait_s: float) -> Batch | None:
        now = self._clock()
        if self._next_tick is None:
            self._next_tick = now + policy.period_s
        # a period shortened at run time applies from now on, not after the old one
        self._next_tick = min(self._next_tick, now + policy.period_s)
        deadline = now + wait_s
        while not self._closed and self._clock() < self._next_tick:
            remaining = min(self._next_tick, deadline) - self._clock()
            if remaining <= 0:
                return None
            self._cond.wait(remaining)
        if self._closed:
            return None
        now = self._clock()
        self._next_tick += policy.period_s
        if self._next_tick < now:  # fell behind (long inference): no burst of batches
            self._next_tick = now + policy.period_s
        fresh = self._fresh()
        if not fresh:
            return None
        newest = max(fresh, key=lambda i: self._slots[i].stamp_ns)  # type: ignore[union-attr]
        return self._take(fresh, newest, now, [], policy, period=True)

    def _take(self, fresh: set[int], trigger: int, triggered_at: float, late: list[int],
              policy: BatchPolicy, period: bool = False) -> Batch:
        ref = self._slots[trigger]
        assert ref is not None
        frames: dict[int, Pending] = {}
        skipped: list[int] = []
        spread_ns = int(policy.max_spread_s * 1e9)
        for i in sorted(fresh):
            pending = self._slots[i]
            assert pending is not None
            if spread_ns > 0 and pending.stamp_ns > 0 and ref.stamp_ns > 0:
                if ref.stamp_ns - pending.stamp_ns > spread_ns:
                    skipped.append(i)  # too old for this batch; a newer frame will come
                    self.skipped[i] += 1
                    self._slots[i] = None
                    continue
                if pending.stamp_ns - ref.stamp_ns > spread_ns:
                    continue  # ahead of the trigger: it belongs to a later batch
            frames[i] = pending
            self._slots[i] = None
            self.late_now[i] = False
        self._previous = set(frames)
        self.batches += 1
        if len(frames) < self.n:
            self.partial_batches += 1
        return Batch(frames, late, skipped, None if period else trigger, triggered_at)
