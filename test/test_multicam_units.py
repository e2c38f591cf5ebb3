"""The multi-camera node's parts without a ROS graph: parameters, batching policy, Segmenter.

The batcher tests run its real threads and condition waits with short timeouts; they check
which frames a batch holds and what is counted, never how fast anything ran.
"""
from __future__ import annotations

import os
from pathlib import Path
import threading
import time
from typing import Any

import numpy as np
import pytest

from seg_ros.errors import SegRosError
from seg_ros.ros.multicam_batcher import Batcher, BatchPolicy
from seg_ros.ros.multicam_params import (
    MULTI_ONLY_PARAMS,
    MULTI_PARAMS,
    MULTI_PARAMS_BY_NAME,
    MULTI_RUNTIME_PARAMS,
    anchor_index,
    camera_info_topic,
    resolve_cameras,
    validate_multi,
)
from seg_ros.ros.node_params import PARAMS, markdown_table, validate_value


def _values(**over: Any) -> dict[str, Any]:
    values = {p.name: p.default for p in MULTI_PARAMS}
    values.update(model='m.onnx', cameras=('front', 'left', 'rear'))
    values.update(over)
    return values


# ---------------------------------------------------------------- parameters
def test_table_extends_the_single_node_table_without_changing_it() -> None:
    assert MULTI_PARAMS[:len(PARAMS)] == PARAMS
    assert {'cameras', 'image_topics', 'batch_trigger', 'anchor_camera', 'batch_period_s',
            'anchor_timeout_s', 'camera_timeout_s', 'max_stamp_spread_s'} == {
                p.name for p in MULTI_ONLY_PARAMS}
    assert {'camera_timeout_s', 'max_stamp_spread_s', 'batch_period_s'} <= MULTI_RUNTIME_PARAMS
    assert not {'cameras', 'image_topics', 'batch_trigger'} & MULTI_RUNTIME_PARAMS
    # the single node's validator knows none of the new names
    assert validate_value('cameras', ['a']) == "unknown parameter 'cameras'"


def test_cameras_and_topics() -> None:
    cams = resolve_cameras(_values())
    assert [(c.name, c.image_topic, c.info_topic) for c in cams] == [
        ('front', '/front/image_raw', '/front/camera_info'),
        ('left', '/left/image_raw', '/left/camera_info'),
        ('rear', '/rear/image_raw', '/rear/camera_info')]
    assert cams[0].input_topic(True) == '/front/image_raw/compressed'
    cams = resolve_cameras(_values(cameras=['a', 'b'], image_topics=['/x/img', 'raw']))
    assert [c.image_topic for c in cams] == ['/x/img', 'raw']
    assert [c.info_topic for c in cams] == ['/x/camera_info', 'camera_info']
    assert camera_info_topic('/a/b/image_rect/') == '/a/b/camera_info'


@pytest.mark.parametrize('over, needle', [
    ({'cameras': ()}, "'cameras' is required"),
    ({'cameras': ('front', 'front')}, "'front' listed twice"),
    ({'cameras': ('9lives',)}, 'not a valid ROS name'),
    ({'cameras': ('a/b',)}, 'not a valid ROS name'),
    ({'image_topics': ('/a',)}, 'image_topics has 1 entries for 3 cameras'),
    ({'image_topics': ('/a', '', '/c')}, 'empty entry'),
    ({'anchor_camera': 'top'}, "anchor_camera 'top' is not one of the cameras"),
    ({'batch_trigger': 'sync'}, 'batch_trigger must be one of anchor, period'),
    ({'camera_timeout_s': 2.0}, 'camera_timeout_s must be in 0..1'),
    ({'batch_period_s': 0.0}, 'batch_period_s must be in 0.001..10'),
    ({'max_stamp_spread_s': -1.0}, 'max_stamp_spread_s must be in 0..10'),
    ({'cameras': 'front'}, 'cameras must be a string array'),
    ({'threads': -1}, 'threads must be in 0..256'),
    ({'model': ''}, "parameter 'model' is required"),
])
def test_invalid_parameters_are_one_clear_line(over: dict[str, Any], needle: str) -> None:
    with pytest.raises(SegRosError, match=None) as info:
        validate_multi(_values(**over))
    assert needle in str(info.value) and '\n' not in str(info.value)


def test_run_time_validation_uses_the_same_ranges() -> None:
    assert validate_value('camera_timeout_s', 0.5, MULTI_PARAMS_BY_NAME) is None
    assert 'must be in' in validate_value('camera_timeout_s', 5.0, MULTI_PARAMS_BY_NAME)
    assert validate_value('cameras', ['a', 'b'], MULTI_PARAMS_BY_NAME) is None
    assert 'string array' in validate_value('cameras', [1, 2], MULTI_PARAMS_BY_NAME)


def test_anchor_index() -> None:
    cams = resolve_cameras(_values())
    assert anchor_index(_values(), cams) == 0
    assert anchor_index(_values(anchor_camera='rear'), cams) == 2


def test_docs_multicam_parameter_table_is_current() -> None:
    text = (Path(__file__).resolve().parents[1] / 'docs' / 'node.md').read_text()
    assert markdown_table(MULTI_ONLY_PARAMS) in text, (
        'docs/node.md: paste markdown_table(MULTI_ONLY_PARAMS) into the multi-camera section')


# ---------------------------------------------------------------- batching policy
def _put_later(b: Batcher, camera: int, delay: float, stamp: int = 0) -> threading.Thread:
    t = threading.Thread(target=lambda: (time.sleep(delay), b.put(camera, f'late{camera}',
                                                                   stamp)))
    t.start()
    return t


def test_anchor_triggers_and_waits_for_cameras_of_the_previous_batch() -> None:
    b = Batcher(3)
    policy = BatchPolicy(trigger='anchor', anchor=0, timeout_s=5.0, anchor_timeout_s=60.0)
    b.put(1, 'b0')
    # no anchor frame yet, anchor not silent for 60 s: nothing triggers
    assert b.next_batch(policy, wait_s=0.05) is None
    b.put(0, 'a0')
    b.put(2, 'c0')
    first = b.next_batch(policy)
    assert sorted(first.frames) == [0, 1, 2] and first.trigger_camera == 0 and not first.late
    # next round: camera 2 arrives after the anchor; it was in the last batch, so it is waited
    b.put(0, 'a1')
    b.put(1, 'b1')
    thread = _put_later(b, 2, 0.05)
    second = b.next_batch(policy)
    thread.join()
    assert [p.item for p in second.frames.values()] == ['a1', 'b1', 'late2']
    assert b.partial_batches == 0


def test_a_dead_camera_costs_one_timeout_then_is_not_waited_for() -> None:
    b = Batcher(3)
    policy = BatchPolicy(trigger='anchor', anchor=0, timeout_s=0.05, anchor_timeout_s=60.0)
    for i in range(3):
        b.put(i, i)
    assert len(b.next_batch(policy).frames) == 3
    b.put(0, 'a')
    b.put(1, 'b')  # camera 2 is dead from now on
    batch = b.next_batch(policy)
    assert sorted(batch.frames) == [0, 1] and batch.late == [2]
    assert b.late == [0, 0, 1] and b.late_now[2] and b.partial_batches == 1
    # third batch: camera 2 is no longer waited for, so nothing is late again
    b.put(0, 'a')
    b.put(1, 'b')
    batch = b.next_batch(policy)
    assert sorted(batch.frames) == [0, 1] and batch.late == [] and b.late == [0, 0, 1]
    # it comes back: included at once, no longer late
    b.put(2, 'c')
    b.put(0, 'a')
    batch = b.next_batch(policy)
    assert sorted(batch.frames) == [0, 2] and not b.late_now[2]


def test_a_silent_anchor_hands_the_trigger_to_the_others() -> None:
    b = Batcher(3)
    policy = BatchPolicy(trigger='anchor', anchor=0, timeout_s=0.0, anchor_timeout_s=0.05)
    b.put(1, 'b')
    b.put(2, 'c')
    batch = b.next_batch(policy, wait_s=5.0)  # the anchor never sent anything
    assert batch is not None and sorted(batch.frames) == [1, 2] and batch.trigger_camera == 1


def test_stamp_spread_skips_old_frames_and_keeps_new_ones() -> None:
    b = Batcher(3)
    policy = BatchPolicy(trigger='anchor', anchor=0, timeout_s=0.0, max_spread_s=0.01)
    s = 10 * 10**9
    b.put(0, 'a', s)
    b.put(1, 'old', s - 50_000_000)   # 50 ms older than the anchor: skipped
    b.put(2, 'new', s + 50_000_000)   # 50 ms newer: stays for the next batch
    batch = b.next_batch(policy)
    assert list(batch.frames) == [0] and batch.skipped == [1] and b.skipped == [0, 1, 0]
    b.put(0, 'a2', s + 50_000_000)
    batch = b.next_batch(policy)
    assert [p.item for p in batch.frames.values()] == ['a2', 'new']


def test_latest_frame_only_and_counts() -> None:
    b = Batcher(2)
    assert b.put(0, 1) is False
    assert b.put(0, 2) is True  # the unbatched frame 1 is dropped
    batch = b.next_batch(BatchPolicy(trigger='anchor', anchor=0, timeout_s=0.0))
    assert [p.item for p in batch.frames.values()] == [2]
    assert (b.received, b.dropped) == ([2, 0], [1, 0])
    b.put(1, 3)
    b.close()  # deactivation with a frame waiting: dropped, and counted
    assert b.dropped == [1, 1]
    assert b.next_batch(BatchPolicy(), wait_s=0.01) is None
    b.reopen()
    b.put(0, 4)
    assert b.next_batch(BatchPolicy(timeout_s=0.0)) is not None


def test_period_trigger_takes_whatever_is_fresh() -> None:
    b = Batcher(3)
    policy = BatchPolicy(trigger='period', period_s=0.02)
    assert b.next_batch(policy, wait_s=0.2) is None  # ticks, but no frame
    b.put(2, 'c')
    batch = None
    while batch is None:
        batch = b.next_batch(policy, wait_s=0.2)
    assert list(batch.frames) == [2] and batch.trigger_camera is None


def test_close_wakes_a_waiting_worker() -> None:
    b = Batcher(2)
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(
        b.next_batch(BatchPolicy(anchor_timeout_s=60.0), wait_s=30.0)))
    t.start()
    time.sleep(0.05)
    b.close()
    t.join(10.0)
    assert not t.is_alive() and out == [None]


# ---------------------------------------------------------------- Segmenter batch path
@pytest.fixture(scope='module')
def dynamic_onnx(exports: Any) -> Path:
    return exports('regseg48', True, False)


@pytest.mark.parametrize('backend, mode', [('onnxruntime', 'stretch'),
                                           ('onnxruntime', 'letterbox'),
                                           ('openvino', 'letterbox'), ('torch', 'letterbox')])
def test_prepared_batch_of_mixed_resolutions_equals_frame_by_frame(
        dynamic_onnx: Path, tmp_path: Path, backend: str, mode: str) -> None:
    from seg_ros.runtime.segmenter import Segmenter

    options: dict[str, Any] = {}
    if backend == 'onnxruntime' and mode == 'letterbox':
        options['memory_pattern'] = False  # what the multi-camera node runs with
    if backend == 'openvino':
        pytest.importorskip('openvino')
        options['precision'] = 'fp32'  # bf16 kernels may differ between batch sizes
    if backend == 'torch':
        from seg_ros.testing.node_harness import random_checkpoint

        model = str(random_checkpoint(tmp_path / 'r.pt'))
    else:
        model = str(dynamic_onnx)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
              for h, w in ((64, 128), (120, 160), (48, 300))]
    with Segmenter.from_file(model, backend=backend, device='cpu', threads=1,
                             resize_mode=mode, **options) as seg:
        assert seg.backend.max_batch >= 3  # one backend call for the three cameras
        if 'memory_pattern' in options:
            assert not seg.backend.session.get_session_options().enable_mem_pattern
        results = seg.segment_prepared([seg.prepare_frame(f) for f in frames],
                                       confidence=True)
        for frame, result in zip(frames, results):
            alone = seg(frame, confidence=True)
            assert result.ids.shape == frame.shape[:2]
            np.testing.assert_array_equal(result.ids, alone.ids)
            assert np.abs(result.confidence.astype(int) - alone.confidence).max() <= 1
        with pytest.raises(SegRosError, match='3 colour channels'):
            seg.prepare_frame(np.zeros((8, 8), np.uint8))


def test_a_fixed_batch_model_runs_the_cameras_in_turn(exports: Any) -> None:
    from seg_ros.runtime.segmenter import Segmenter

    path = exports('regseg48', False, False)
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (64, 128, 3), dtype=np.uint8) for _ in range(3)]
    with Segmenter.from_file(str(path), backend='onnxruntime', device='cpu', threads=1) as seg:
        assert seg.backend.max_batch == 1
        results = seg.segment_prepared([seg.prepare_frame(f) for f in frames])
        for frame, result in zip(frames, results):
            np.testing.assert_array_equal(result.ids, seg(frame).ids)


def test_batch_options_give_tensorrt_a_profile_tuned_for_the_camera_count(exports: Any) -> None:
    """The TensorRT path cannot run here: this checks what the node hands the engine build.

    The options go to ``TrtBackend.from_onnx`` -> ``build_or_load``; the engine key (the
    real code, no TensorRT needed) then records the profile 1..N with opt = N.
    """
    from seg_ros.ros.node import _batch_options
    from seg_ros.runtime.engine_cache import make_engine_key

    dynamic = str(exports('regseg48', True, False))
    static = str(exports('regseg48', False, False))
    trt = {'backend': 'tensorrt', 'device': 'cuda'}
    options = _batch_options(trt, dynamic, 4)
    assert options == {'max_batch': 4, 'opt_batch': 4}
    key = make_engine_key(dynamic, 'fp16', '10.3.0', 'Orin', '8.7', **options)
    assert (key.min_batch, key.opt_batch, key.max_batch) == (1, 4, 4)
    assert _batch_options(trt, static, 4) == {}  # a fixed-batch file keeps its batch of 1
    assert _batch_options(trt, dynamic, 1) == {}
    # ONNX Runtime: no memory patterns (one planned block kept per batch size seen)
    assert _batch_options({'backend': 'onnxruntime', 'device': 'cpu'}, dynamic, 4) == {
        'memory_pattern': False}
    assert _batch_options({'backend': 'onnxruntime', 'device': 'cpu'}, dynamic, 1) == {}
    assert _batch_options({'backend': 'torch', 'device': 'cpu'}, 'm.pt', 12) == {'max_batch': 12}
    # OpenVINO on the CPU: one stream per thread, at most one per camera
    ov = {'backend': 'openvino', 'device': 'cpu', 'threads': 2}
    assert _batch_options(ov, dynamic, 4) == {'streams': 2}
    assert _batch_options({**ov, 'threads': 8}, dynamic, 3) == {'streams': 3}
    assert _batch_options({**ov, 'threads': 1}, dynamic, 4) == {}
    assert _batch_options(ov, dynamic, 1) == {}
    cpus = os.cpu_count() or 1  # threads 0: one stream per CPU
    assert _batch_options({**ov, 'threads': 0}, dynamic, 64) == (
        {'streams': cpus} if cpus > 1 else {})
    assert _batch_options({**ov, 'device': 'gpu'}, dynamic, 4) == {}  # an Intel GPU: no streams


def test_a_silent_anchor_does_not_make_the_worker_poll() -> None:
    """With the anchor silent and no frame anywhere, the wait is one condition wait."""
    calls = []
    b = Batcher(2)
    real_wait = b._cond.wait

    def counting_wait(timeout: float | None = None) -> bool:
        calls.append(timeout)
        return real_wait(timeout)
    b._cond.wait = counting_wait  # type: ignore[method-assign]
    policy = BatchPolicy(trigger='anchor', anchor=0, anchor_timeout_s=0.001)
    time.sleep(0.01)  # the anchor is silent from now on
    assert b.next_batch(policy, wait_s=0.2) is None
    assert len(calls) <= 2, calls  # not one wake-up per millisecond


def test_bench_multicam_reports_the_median_of_its_rounds() -> None:
    """The shared VM drifts between rounds: figures are per-key medians, flags stay."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / 'benchmarks' / 'bench_multicam.py'
    spec = importlib.util.spec_from_file_location('bench_multicam', path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rounds = [{'fps_total': 20.0, 'latency_p99_ms': 300.0, 'processes': 4, 'ok': True},
              {'fps_total': 24.0, 'latency_p99_ms': None, 'processes': 4, 'ok': True},
              {'fps_total': 21.0, 'latency_p99_ms': 280.0, 'processes': 4, 'ok': False}]
    med = bench.median_run(rounds)
    assert med['fps_total'] == 21.0 and med['latency_p99_ms'] == 290.0
    assert med['processes'] == 4 and med['ok'] is True and med['rounds'] == 3
