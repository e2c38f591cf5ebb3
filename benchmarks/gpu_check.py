"""One-command GPU check of the runtime (issue 13): torch fast path, AMP training, TensorRT.

    python3 benchmarks/gpu_check.py                  # a CUDA machine, < 8 minutes
    python3 benchmarks/gpu_check.py --dry-run        # = --device cpu --quick (what CI runs)

Needs only python3, torch, numpy, onnx (+ onnxscript for the exporter) and the CPU
onnxruntime; no rclpy, and nothing here imports a node module. TensorRT (``import tensorrt``)
and OpenCV are optional: sections that need them report why they were skipped.

1. ``torch``: fp32 eager NCHW vs fp16 channels_last + CUDA graph (the torch backend's fast
   path) for regseg48, sfnet_lite_r18, rtseg_s, eseg_lite_s at 512x1024 and 1024x2048:
   p50 / p99 per frame (uint8 frame in, ids out, host copies included) and the share of pixels
   whose ids agree with fp32.
2. ``amp``: training steps with autocast (fp16 + GradScaler on CUDA, bf16 on the CPU): ms per
   step, loss finite.
3. ``export`` / ``tensorrt``: each model exported (dynamic batch), run on ONNX Runtime CPU
   (the reference), and when TensorRT imports: fp32 and fp16 engines parsed and built,
   loaded with ``TrtBackend``, ids agreement with ONNX Runtime, dynamic batch 1-4 (each batch
   equal to its frames run one by one), latency; int8 with a 64-frame folder calibration,
   reporting how many frames TensorRT consumed (from the engine sidecar).
4. ``multicam``: issue 19's GPU target: regseg48 at 256x512 on the torch backend (fp16,
   channels_last on CUDA), one batch of ``--cameras`` frames (what the multi-camera node runs)
   against the same frames as ``--cameras`` sequential batch-1 inferences: p50 per round,
   throughput ratio (target >= 2x at 6 cameras) and the batched ids equal to the single ones.

Models have seeded random weights (speed does not depend on them; agreement on untrained
logits is the hard case: near ties flip in fp16). Writes ``--out`` (JSON) and prints a table.
Exit status 1 when a section failed (its ``error`` says why), 0 otherwise. ``--budget-s``
bounds the run: what does not fit is listed as skipped.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
from pathlib import Path
import platform
import sys
import tempfile
import time
import traceback
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # a bare machine: the repository, not an installed package
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

MODELS = ('regseg48', 'sfnet_lite_r18', 'rtseg_s', 'eseg_lite_s')
SIZES = ((512, 1024), (1024, 2048))


# ---------------------------------------------------------------------------- helpers
class Budget:
    """Wall-clock budget: sections ask before starting a piece of work."""

    def __init__(self, seconds: float) -> None:
        self.t0 = time.monotonic()
        self.seconds = seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return self.seconds - self.elapsed()


def stats(ms: list[float]) -> dict[str, float]:
    """p50 / p99 / mean of per-frame milliseconds."""
    a = np.asarray(ms, np.float64)
    return {'p50': float(np.percentile(a, 50)), 'p99': float(np.percentile(a, 99)),
            'mean': float(a.mean()), 'n': int(a.size)}


def frames(n: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """(n, H, W, 3) uint8 RGB frames with structure (gradients, stripes, blobs), no OpenCV."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        fx, fy = rng.uniform(4, 40, 2)
        img = np.stack([128 + 100 * np.sin(xx / fx + i), 128 + 90 * np.cos(yy / fy - i),
                        (xx + yy * (i + 1)) % 256], -1)
        img += rng.normal(0, 8, img.shape)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.asarray(a) == np.asarray(b)).mean())


def make_net(name: str, size: tuple[int, int]) -> tuple[torch.nn.Module, Any]:
    from seg_ros.metadata import ModelMeta
    from seg_ros.models import create_model

    torch.manual_seed(0)
    return create_model(name).eval(), ModelMeta.for_dataset(name, input_size=list(size))


def _error(exc: BaseException) -> dict[str, str]:
    return {'error': f'{type(exc).__name__}: {exc}'.splitlines()[0][:400],
            'where': traceback.format_exc(limit=3).strip().splitlines()[-3:][0][:200]}


def _time_infer(backend: Any, batch_frames: np.ndarray, iters: int,
                warmup: int) -> tuple[dict[str, float], list[np.ndarray]]:
    """Per-frame latency of ``backend.infer`` (batch 1) and the ids of each frame."""
    ids = []
    for k in range(warmup):
        backend.infer(batch_frames[k % len(batch_frames)][None])
    ms = []
    for k in range(iters):
        frame = batch_frames[k % len(batch_frames)][None]
        t = time.perf_counter()
        out, _ = backend.infer(frame)
        ms.append((time.perf_counter() - t) * 1e3)
        if k < len(batch_frames):
            ids.append(out[0])
    return stats(ms), ids


# ---------------------------------------------------------------------------- 1. torch
def torch_section(models: tuple[str, ...], sizes: tuple[tuple[int, int], ...], device: str,
                  iters: int, warmup: int, budget: Budget) -> list[dict[str, Any]]:
    from seg_ros.runtime.backends import TorchBackend

    rows = []
    cuda = device.startswith('cuda')
    for name in models:
        for size in sizes:
            row: dict[str, Any] = {'model': name, 'size': list(size)}
            rows.append(row)
            if budget.left() < 20:
                row['skipped'] = 'time budget'
                continue
            try:
                net, meta = make_net(name, size)
                test = frames(4, size, seed=1)
                ref = TorchBackend(copy.deepcopy(net), meta, size, device=device,
                                   precision='fp32', channels_last=False, cuda_graph=False)
                row['fp32_eager_ms'], ids32 = _time_infer(ref, test, iters, warmup)
                ref.close()
                if cuda:
                    fast = TorchBackend(copy.deepcopy(net), meta, size, device=device,
                                        precision='fp16', channels_last=True, cuda_graph=True)
                    row['fp16_cl_graph_ms'], ids16 = _time_infer(fast, test, iters, warmup)
                    fast.close()
                    row['ids_agree_fp16_vs_fp32'] = float(np.mean(
                        [agreement(a, b) for a, b in zip(ids16, ids32)]))
                    row['speedup_p50'] = row['fp32_eager_ms']['p50'] / \
                        row['fp16_cl_graph_ms']['p50']
                else:
                    row['fp16_cl_graph_ms'] = {'skipped': 'needs CUDA'}
                del net
                if cuda:
                    torch.cuda.empty_cache()
            except Exception as exc:  # noqa: BLE001 - reported, the next model runs
                row.update(_error(exc))
    return rows


# ---------------------------------------------------------------------------- 4. multicam
def multicam_section(size: tuple[int, int], device: str, cameras: int, iters: int,
                     warmup: int, budget: Budget) -> dict[str, Any]:
    """One batch of ``cameras`` frames vs as many batch-1 inferences (torch backend)."""
    from seg_ros.runtime.backends import TorchBackend

    row: dict[str, Any] = {'model': 'regseg48', 'size': list(size), 'cameras': cameras}
    if budget.left() < 20:
        return {**row, 'skipped': 'time budget'}
    cuda = device.startswith('cuda')
    try:
        net, meta = make_net('regseg48', size)
        row['precision'] = 'fp16' if cuda else 'fp32'
        backend = TorchBackend(net, meta, size, device=device, precision=row['precision'],
                               max_batch=max(cameras, 8))
        test = frames(cameras, size, seed=3)
        for _ in range(warmup):
            backend.infer(test)
            backend.infer(test[:1])
        seq, bat = [], []
        for _ in range(iters):
            t = time.perf_counter()
            singles = [backend.infer(f[None])[0][0] for f in test]
            seq.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            batched, _ = backend.infer(test)
            bat.append((time.perf_counter() - t) * 1e3)
        backend.close()
        row['sequential_ms'], row['batched_ms'] = stats(seq), stats(bat)
        row['throughput_ratio'] = row['sequential_ms']['p50'] / row['batched_ms']['p50']
        row['ids_agree_batched_vs_single'] = float(np.mean(
            [agreement(a, b) for a, b in zip(batched, singles)]))
        if cuda:
            torch.cuda.empty_cache()
    except Exception as exc:  # noqa: BLE001 - reported in the JSON
        row.update(_error(exc))
    return row


# ---------------------------------------------------------------------------- 2. AMP
def amp_section(models: tuple[str, ...], size: tuple[int, int], device: str, steps: int,
                batch: int, budget: Budget) -> list[dict[str, Any]]:
    import torch.nn.functional as F

    rows = []
    dev = torch.device(device)
    dtype = torch.float16 if dev.type == 'cuda' else torch.bfloat16
    for name in models:
        row: dict[str, Any] = {'model': name, 'size': list(size), 'batch': batch,
                               'dtype': str(dtype).replace('torch.', '')}
        rows.append(row)
        if budget.left() < 20:
            row['skipped'] = 'time budget'
            continue
        try:
            net, meta = make_net(name, size)
            net = net.train().to(dev)
            opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
            scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(batch, 3, *size, generator=gen).to(dev)
            y = torch.randint(0, meta.num_classes, (batch, *size), generator=gen).to(dev)
            ms, losses = [], []
            for step in range(steps + 1):  # step 0 warms up (cuDNN autotuning)
                t = time.perf_counter()
                with torch.autocast(dev.type, dtype=dtype):
                    out = net(x)
                    if isinstance(out, (tuple, list)):
                        out = out[0]
                    elif isinstance(out, dict):
                        out = out['out']
                    loss = F.cross_entropy(out.float(), y, ignore_index=255)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                if dev.type == 'cuda':
                    torch.cuda.synchronize(dev)
                if step:
                    ms.append((time.perf_counter() - t) * 1e3)
                    losses.append(float(loss.detach()))
            row['step_ms'] = stats(ms)
            row['loss_first_last'] = [losses[0], losses[-1]]
            row['loss_finite'] = all(math.isfinite(v) for v in losses)
            if dev.type == 'cuda':
                row['peak_cuda_mb'] = torch.cuda.max_memory_allocated(dev) / 2**20
                torch.cuda.reset_peak_memory_stats(dev)
            del net, opt
            if dev.type == 'cuda':
                torch.cuda.empty_cache()
        except Exception as exc:  # noqa: BLE001
            row.update(_error(exc))
    return rows


# ---------------------------------------------------------------------------- 3. export + TRT
def tensorrt_available() -> tuple[bool, str]:
    try:
        import tensorrt
    except ImportError as exc:
        return False, f'import tensorrt failed: {exc}'
    if not hasattr(tensorrt, 'Builder'):
        return False, 'only tensorrt-stubs installed'
    return True, str(tensorrt.__version__)


def _ort_ids(onnx_path: Path, batch: np.ndarray) -> np.ndarray:
    from seg_ros.runtime.backends import OrtBackend

    be = OrtBackend(onnx_path, device='cpu')
    try:
        return np.concatenate([be.infer(f[None])[0] for f in batch])
    finally:
        be.close()


def _write_calibration_folder(folder: Path, n: int, size: tuple[int, int]) -> int:
    import cv2  # optional: the int8 section is skipped without it

    folder.mkdir(parents=True, exist_ok=True)
    big = (size[0] * 2, size[1] * 2)  # camera frames larger than the network, like a robot's
    for i, rgb in enumerate(frames(n, big, seed=100)):
        cv2.imwrite(str(folder / f'{i:04d}.png'), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return n


def _engine_check(trt_backend: Any, engine: Path, device: str, test: np.ndarray,
                  ref_ids: np.ndarray, iters: int, warmup: int,
                  max_batch: int) -> dict[str, Any]:
    from seg_ros.runtime.engine_cache import read_sidecar

    side = read_sidecar(engine)
    out: dict[str, Any] = {'build_s': round(side.build_seconds, 1),
                           'engine_mb': round(engine.stat().st_size / 2**20, 1)}
    if side.extra:
        out.update(side.extra)
    be = trt_backend.TrtBackend.from_engine(engine, device=device)
    try:
        out['latency_ms'], _ = _time_infer(be, test, iters, warmup)
        single = np.stack([be.infer(np.ascontiguousarray(f[None]))[0][0] for f in test])
        out['ids_agree_vs_ort_cpu'] = agreement(single, ref_ids)
        batches = {}
        for n in range(1, min(max_batch, len(test)) + 1):
            got, _ = be.infer(np.ascontiguousarray(test[:n]))
            batches[str(n)] = agreement(got, single[:n])
        out['dynamic_batch_agree_vs_single'] = batches
        out['describe'] = {k: v for k, v in be.describe().items() if k.startswith('tensorrt')}
    finally:
        be.close()
    return out


def export_trt_section(models: tuple[str, ...], size: tuple[int, int], device: str,
                       iters: int, warmup: int, calib_frames: int, work: Path,
                       budget: Budget) -> dict[str, Any]:
    from seg_ros.runtime.export import export_onnx

    ok, version = tensorrt_available()
    result: dict[str, Any] = {'tensorrt': version if ok else None,
                              'tensorrt_skipped': None if ok else version, 'models': []}
    trt_backend = None
    if ok:
        from seg_ros.runtime import trt_backend as _tb

        trt_backend = _tb
    max_batch = 4
    test = frames(max_batch, size, seed=2)
    cache = work / 'cache'
    for name in models:
        row: dict[str, Any] = {'model': name, 'size': list(size)}
        result['models'].append(row)
        if budget.left() < 30:
            row['skipped'] = 'time budget'
            continue
        try:
            net, meta = make_net(name, size)
            t = time.perf_counter()
            onnx32 = export_onnx(copy.deepcopy(net), meta, work / f'{name}.onnx', size=size,
                                 dynamic_batch=True)
            row['export_s'] = round(time.perf_counter() - t, 1)
            ref = _ort_ids(onnx32, test)
            from seg_ros.runtime.backends import OrtBackend

            ort = OrtBackend(onnx32, device='cpu')
            row['ort_dynamic_batch_agree'] = {
                str(n): agreement(ort.infer(np.ascontiguousarray(test[:n]))[0], ref[:n])
                for n in range(1, max_batch + 1)}
            ort.close()
            if trt_backend is None:
                continue
            v = trt_backend.trt_version()
            for precision in ('fp32', 'fp16'):
                if budget.left() < 60:
                    row[precision] = {'skipped': 'time budget'}
                    continue
                try:
                    src = onnx32
                    if precision == 'fp16' and v[:2] >= trt_backend.STRONGLY_TYPED_FP16_FROM:
                        src = export_onnx(copy.deepcopy(net), meta, work / f'{name}_fp16.onnx',
                                          size=size, dynamic_batch=True, fp16=True)
                    engine = trt_backend.build_or_load(src, precision, cache,
                                                       max_batch=max_batch, device=device)
                    row[precision] = _engine_check(trt_backend, engine, device, test, ref,
                                                   iters, warmup, max_batch)
                except Exception as exc:  # noqa: BLE001
                    row[precision] = _error(exc)
            if name == models[0]:  # int8 once: calibration is the slow part of a build
                row['int8'] = _int8(trt_backend, onnx32, size, device, test, ref, iters,
                                    warmup, max_batch, calib_frames, work, cache, budget)
        except Exception as exc:  # noqa: BLE001
            row.update(_error(exc))
    return result


def _int8(trt_backend: Any, onnx32: Path, size: tuple[int, int], device: str,
          test: np.ndarray, ref: np.ndarray, iters: int, warmup: int, max_batch: int,
          calib_frames: int, work: Path, cache: Path, budget: Budget) -> dict[str, Any]:
    if budget.left() < 90:
        return {'skipped': 'time budget'}
    if trt_backend.trt_version()[0] >= 11:
        return {'skipped': 'TensorRT >= 11 has no implicit int8 calibration'}
    try:
        n = _write_calibration_folder(work / 'calib', calib_frames, size)
    except ImportError as exc:
        return {'skipped': f'needs OpenCV for the calibration images ({exc})'}
    try:
        engine = trt_backend.build_or_load(onnx32, 'int8', cache, calib=work / 'calib',
                                           calib_frames=n, max_batch=max_batch, device=device,
                                           resize_mode='letterbox')
        out = _engine_check(trt_backend, engine, device, test, ref, iters, warmup, max_batch)
        out['calib_frames_given'] = n
        return out
    except Exception as exc:  # noqa: BLE001
        return _error(exc)


# ---------------------------------------------------------------------------- report
def _fmt(d: Any, key: str = 'p50') -> str:
    if isinstance(d, dict) and key in d:
        return f'{d[key]:.2f}'
    if isinstance(d, dict) and ('skipped' in d or 'error' in d):
        return 'skip' if 'skipped' in d else 'ERR'
    return '-'


def print_table(report: dict[str, Any]) -> None:
    print(f'\n{report["device_name"]}, torch {report["torch_version"]}, TensorRT '
          f'{report["export_trt"].get("tensorrt") or "-"}, {report["seconds"]:.0f} s')
    print(f'{"torch":<16}{"size":>10}{"fp32 p50":>10}{"p99":>8}{"fp16+g p50":>12}{"p99":>8}'
          f'{"agree":>8}')
    for r in report['torch']:
        size = 'x'.join(map(str, r['size']))
        if 'error' in r or 'skipped' in r:
            print(f'{r["model"]:<16}{size:>10}  {r.get("error") or r.get("skipped")}')
            continue
        agree = r.get('ids_agree_fp16_vs_fp32')
        print(f'{r["model"]:<16}{size:>10}{_fmt(r["fp32_eager_ms"]):>10}'
              f'{_fmt(r["fp32_eager_ms"], "p99"):>8}{_fmt(r["fp16_cl_graph_ms"]):>12}'
              f'{_fmt(r["fp16_cl_graph_ms"], "p99"):>8}'
              f'{"-" if agree is None else f"{100 * agree:.2f}%":>8}')
    print(f'{"amp train":<16}{"step p50 ms":>12}{"loss finite":>12}')
    for r in report['amp']:
        print(f'{r["model"]:<16}{_fmt(r.get("step_ms", r)):>12}'
              f'{str(r.get("loss_finite", r.get("error", r.get("skipped")))):>12}')
    et = report['export_trt']
    if et.get('tensorrt_skipped'):
        print(f'tensorrt: skipped ({et["tensorrt_skipped"]})')
    print(f'{"export/trt":<16}{"ORT b1-4":>10}{"fp32 p50":>10}{"agree":>8}{"fp16 p50":>10}'
          f'{"agree":>8}{"int8 frames":>12}')
    for r in et['models']:
        if 'error' in r or 'skipped' in r:
            print(f'{r["model"]:<16}  {r.get("error") or r.get("skipped")}')
            continue
        ort_ok = all(v == 1.0 for v in r.get('ort_dynamic_batch_agree', {}).values())
        cells = []
        for p in ('fp32', 'fp16'):
            e = r.get(p, {})
            a = e.get('ids_agree_vs_ort_cpu')
            cells += [_fmt(e.get('latency_ms', e)) if e else '-',
                      f'{100 * a:.2f}%' if a is not None else ('ERR' if 'error' in e else '-')]
        i8 = r.get('int8', {})
        frames_used = i8.get('calib_frames_consumed', i8.get('skipped', '-') if i8 else '-')
        print(f'{r["model"]:<16}{"equal" if ort_ok else "DIFF":>10}{cells[0]:>10}{cells[1]:>8}'
              f'{cells[2]:>10}{cells[3]:>8}{str(frames_used)[:12]:>12}')
    mc = report.get('multicam', {})
    if 'error' in mc or 'skipped' in mc:
        print(f'multicam: {mc.get("error") or mc.get("skipped")}')
    elif mc:
        print(f'multicam {mc["cameras"]} cameras {"x".join(map(str, mc["size"]))} '
              f'{mc["precision"]}: {mc["cameras"]} x batch 1 {_fmt(mc["sequential_ms"])} ms, '
              f'one batch {_fmt(mc["batched_ms"])} ms -> {mc["throughput_ratio"]:.2f}x '
              f'(target >= 2x), ids agree {100 * mc["ids_agree_batched_vs_single"]:.2f}%')


def _errors(obj: Any, path: str = '') -> list[str]:
    if isinstance(obj, dict):
        out = [f'{path}: {obj["error"]}'] if 'error' in obj else []
        for k, v in obj.items():
            out += _errors(v, f'{path}.{k}' if path else str(k))
        return out
    if isinstance(obj, list):
        return [e for i, v in enumerate(obj) for e in _errors(v, f'{path}[{i}]')]
    return []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cuda', help='cuda, cuda:N or cpu')
    p.add_argument('--quick', action='store_true',
                   help='one model at 64x128, few iterations (a smoke run of every section)')
    p.add_argument('--dry-run', action='store_true', help='= --device cpu --quick')
    p.add_argument('--models', default=','.join(MODELS))
    p.add_argument('--iters', type=int, default=50)
    p.add_argument('--warmup', type=int, default=10)
    p.add_argument('--amp-steps', type=int, default=10)
    p.add_argument('--trt-size', default='512x1024', help='HxW of the TensorRT exports')
    p.add_argument('--calib-frames', type=int, default=64)
    p.add_argument('--cameras', type=int, default=6, help='batch of the multicam section')
    p.add_argument('--budget-s', type=float, default=450.0,
                   help='wall-clock budget; later work is skipped and listed as such')
    p.add_argument('--work', default=None, help='folder for exports and engines (default temp)')
    p.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' / 'gpu_check.json'))
    args = p.parse_args(argv)
    if args.dry_run:
        args.device, args.quick = 'cpu', True
    models = tuple(m for m in args.models.split(',') if m)
    sizes: tuple[tuple[int, int], ...] = SIZES
    th, tw = (int(v) for v in args.trt_size.lower().split('x'))
    trt_size = (th, tw)
    if args.quick:
        models, sizes, trt_size = models[:1], ((64, 128),), (64, 128)
        args.iters, args.warmup, args.amp_steps = 3, 1, 2
        args.calib_frames = min(args.calib_frames, 8)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        print('gpu_check: error: torch sees no CUDA GPU (use --dry-run on a CPU machine)',
              file=sys.stderr)
        return 2
    budget = Budget(args.budget_s)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix='seg_ros_gpu_check_'))
    dev_name = torch.cuda.get_device_name(torch.device(args.device)) \
        if args.device.startswith('cuda') else platform.processor() or 'cpu'
    report: dict[str, Any] = {
        'device': args.device, 'device_name': dev_name, 'torch_version': torch.__version__,
        'python': platform.python_version(), 'quick': args.quick, 'budget_s': args.budget_s}
    print(f'gpu_check: {dev_name}, torch {torch.__version__}, models {", ".join(models)}',
          flush=True)
    report['torch'] = torch_section(models, sizes, args.device, args.iters, args.warmup,
                                    budget)
    print(f'  torch done ({budget.elapsed():.0f} s)', flush=True)
    report['amp'] = amp_section(models, sizes[0], args.device, args.amp_steps, 2, budget)
    print(f'  amp done ({budget.elapsed():.0f} s)', flush=True)
    try:
        report['export_trt'] = export_trt_section(models, trt_size, args.device, args.iters,
                                                  args.warmup, args.calib_frames, work, budget)
    except Exception as exc:  # noqa: BLE001
        report['export_trt'] = {'models': [], **_error(exc)}
    report['multicam'] = multicam_section((64, 128) if args.quick else (256, 512),
                                          args.device, args.cameras, args.iters,
                                          args.warmup, budget)
    print(f'  multicam done ({budget.elapsed():.0f} s)', flush=True)
    report['seconds'] = budget.elapsed()
    report['rclpy_imported'] = 'rclpy' in sys.modules
    errors = _errors(report)
    report['errors'] = errors
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print_table(report)
    print(f'\nwrote {out}')
    for e in errors:
        print(f'gpu_check: error: {e}', file=sys.stderr)
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main())
