"""``seg-ros export | build-engine | bench | predict | quantize``."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
import sys
from typing import Any

from seg_ros.arguments import (
    MODEL_FILE,
    add_model_argument,
    add_overwrite_argument,
    add_progress_argument,
    add_size_argument,
    check_output,
    format_size,
    non_negative_int,
    plural,
    positive_int,
    size_type,
)
from seg_ros.errors import SegRosError
from seg_ros.runtime.backends import BACKENDS, PRECISIONS

log = logging.getLogger('seg_ros.runtime')
WEIGHTS_HELP = 'checkpoint (.pt) whose weights load into the registered model name given as MODEL'


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format='%(levelname)s %(name)s: %(message)s')


# ---------------------------------------------------------------------------- export
def _export_args(p: argparse.ArgumentParser) -> None:
    add_model_argument(p, 'seg_ros checkpoint (.pt) or registered model name', positional=True)
    add_size_argument(p, 'network input HxW (default: the checkpoint metadata input size)',
                      old=('--input-size',))
    p.add_argument('--out', required=True, help='output .onnx file')
    add_overwrite_argument(p, '--out file')
    p.add_argument('--weights', default=None, help=WEIGHTS_HELP)
    p.add_argument('--num-classes', type=int, default=None,
                   help='classes of a bare model name without weights (default 19)')
    p.add_argument('--dynamic-batch', action='store_true', help='dynamic batch axis')
    p.add_argument('--fp16', action='store_true',
                   help='float16 network inside the graph (IO stays uint8); for GPUs')
    p.add_argument('--no-confidence', action='store_true',
                   help='omit the confidence output (ids only)')
    p.add_argument('--trt-version', choices=('8.5', '8.6', '10'), default='10',
                   help='TensorRT the graph is for: 10 (default: TensorRT 10.x/11, JetPack '
                        '6.1/6.2, and what ONNX Runtime / OpenVINO run), 8.6 (JetPack 6.0) or '
                        "8.5 (JetPack 5.1); the graph is checked against that parser's rules")


def _export_run(args: argparse.Namespace) -> int:
    from seg_ros.runtime.export import export_onnx, load_model_and_meta

    _setup_logging()
    check_output(args.out, args.overwrite)
    net, meta = load_model_and_meta(args.model, args.weights, args.size, args.num_classes)
    out = export_onnx(net, meta, args.out, size=tuple(meta.input_size),  # type: ignore[arg-type]
                      dynamic_batch=args.dynamic_batch, fp16=args.fp16,
                      confidence=not args.no_confidence, trt_version=args.trt_version)
    print(f'wrote {out} ({meta.model}, {format_size(meta.input_size)}, uint8 NHWC RGB in -> '
          'uint8 ids'
          f'{"" if args.no_confidence else " + confidence"} out, '
          f'{out.stat().st_size / 1e6:.1f} MB, passes the TensorRT {args.trt_version} parser '
          'rules)')
    return 0


# ---------------------------------------------------------------------------- build-engine
def _build_args(p: argparse.ArgumentParser) -> None:
    add_model_argument(p, 'ONNX file from `seg-ros export`', positional=True,
                       metavar='MODEL.onnx')
    p.add_argument('--precision', choices=('fp32', 'fp16', 'int8'), default='fp16')
    p.add_argument('--calib', default=None,
                   help='int8 calibration frames: an image folder or a rosbag2 (dir/.mcap/.db3)')
    p.add_argument('--calib-topic', default=None, help='image topic in the calibration bag')
    p.add_argument('--calib-frames', type=int, default=256, help='frames used for int8 '
                   'calibration')
    p.add_argument('--calib-batch', type=int, default=None,
                   help='calibration batch of a --dynamic-batch ONNX (default 8; a static '
                        'ONNX calibrates with its own batch)')
    p.add_argument('--resize-mode', choices=('stretch', 'letterbox'), default='stretch',
                   help="how calibration frames are fitted: the deployment's resize_mode")
    p.add_argument('--out', default=None,
                   help='engine file (default: in the engine cache, keyed by ONNX + GPU + '
                        'TensorRT + precision + shape)')
    p.add_argument('--cache-dir', default=None, help='engine cache folder')
    p.add_argument('--max-batch', type=int, default=1, help='largest batch (dynamic ONNX)')
    p.add_argument('--opt-batch', type=int, default=None,
                   help='batch the profile is tuned for (default: --max-batch)')
    p.add_argument('--allow-tf32', action='store_true',
                   help='let fp32 engines use TF32 (off: fp32 means fp32)')
    p.add_argument('--device', default='cuda', help='cuda (the current GPU) or cuda:N')
    p.add_argument('--workspace-mb', type=int, default=2048, help='builder workspace limit')
    p.add_argument('--rebuild', action='store_true', help='ignore a valid cached engine')


def _build_run(args: argparse.Namespace) -> int:
    from seg_ros.runtime import trt_backend
    from seg_ros.runtime.segmenter import default_cache_dir

    _setup_logging()
    if args.precision == 'int8' and not args.calib:
        raise SegRosError('int8 needs --calib DIR_OR_BAG (real frames from your camera)')
    from seg_ros.runtime.trt_rules import check_for_installed_trt

    check_for_installed_trt(Path(args.model))
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    path = trt_backend.build_or_load(
        Path(args.model), precision=args.precision, cache_dir=cache,
        out=Path(args.out) if args.out else None, calib=args.calib,
        calib_topic=args.calib_topic, calib_frames=args.calib_frames,
        max_batch=args.max_batch, workspace_mb=args.workspace_mb, rebuild=args.rebuild,
        device=args.device, resize_mode=args.resize_mode, opt_batch=args.opt_batch,
        allow_tf32=args.allow_tf32, calib_batch=args.calib_batch)
    print(f'engine: {path} (sidecar {path.with_suffix(".json").name})')
    return 0


# ---------------------------------------------------------------------------- bench
def _bench_args(p: argparse.ArgumentParser) -> None:
    add_model_argument(p, MODEL_FILE, positional=True)
    p.add_argument('--backend', choices=BACKENDS, default='auto')
    p.add_argument('--device', default='auto', help='auto, cpu, cuda, cuda:N')
    p.add_argument('--precision', choices=PRECISIONS, default='auto',
                   help='auto: fp16 on CUDA, bf16 on OpenVINO with native bf16, else fp32')
    add_size_argument(p, "network input HxW (default: the model file's size)",
                      old=('--input-size',))
    p.add_argument('--frame-size', type=size_type(), default=None, metavar='HxW',
                   help='camera frame HxW (default: the network size, i.e. no resize)')
    p.add_argument('--resize-mode', choices=('stretch', 'letterbox'), default='stretch')
    p.add_argument('--weights', default=None, help=WEIGHTS_HELP)
    p.add_argument('--threads', type=positive_int, default=None, help='CPU threads')
    p.add_argument('--iters', type=positive_int, default=50, help='timed frames (>= 1)')
    p.add_argument('--warmup', type=non_negative_int, default=5, help='untimed frames first')
    p.add_argument('--confidence', action='store_true', help='also compute confidence')
    p.add_argument('--color', action='store_true', help='also colour the mask')
    p.add_argument('--overlay', action='store_true', help='also compute the overlay')
    p.add_argument('--cuda-graph', action='store_true', help='torch backend: CUDA graph')
    p.add_argument('--baseline', choices=('none', 'torch-eager'), default='none',
                   help='also time the bare network in torch eager fp32 NCHW (same frames, '
                        'same process) and report speed-up and ids agreement')
    p.add_argument('--engine-cache-dir', default=None)
    p.add_argument('--json', action='store_true', help='print one JSON object')
    add_progress_argument(p)


def _bench_run(args: argparse.Namespace) -> int:
    import numpy as np

    from seg_ros.runtime.bench import (
        bench_frames,
        bench_segmenter,
        peak_rss_mb,
        torch_eager_baseline,
    )
    from seg_ros.runtime.cpu import cpu_info
    from seg_ros.runtime.segmenter import Segmenter, model_kind

    if not args.json:
        _setup_logging()
    if args.baseline == 'torch-eager':
        if model_kind(args.model) in ('onnx', 'engine'):
            raise SegRosError('--baseline torch-eager needs a checkpoint or model name (the '
                              'torch model), not an exported file')
        if model_kind(args.model) == 'name' and not args.weights:
            raise SegRosError('--baseline torch-eager with a bare model name needs --weights '
                              '(or a checkpoint) so both runs use the same weights')
    opts: dict[str, Any] = {'cuda_graph': True} if args.cuda_graph else {}
    seg = Segmenter.from_file(args.model, backend=args.backend, device=args.device,
                              precision=args.precision, input_size=args.size,
                              resize_mode=args.resize_mode, weights=args.weights,
                              engine_cache_dir=args.engine_cache_dir, threads=args.threads,
                              **opts)
    backend = seg.backend
    assert backend is not None
    frame_size = args.frame_size or seg.input_size
    frames = bench_frames(frame_size, n=max(1, min(8, args.iters)))
    step = ids_ref = None
    if args.baseline == 'torch-eager':
        from seg_ros.runtime.export import load_model_and_meta

        net, meta = load_model_and_meta(args.model, args.weights, seg.input_size)
        step, ids_ref = torch_eager_baseline(net, meta.mean, meta.std, frames, seg.input_size,
                                             args.threads)
    pipe = bench_segmenter(seg, frames, args.iters, args.warmup, args.confidence, args.color,
                           args.overlay, progress=not args.json and not args.no_progress,
                           baseline=step)
    result: dict[str, Any] = {
        **backend.describe(), 'precision': seg.precision,
        'precision_reason': seg.precision_reason, 'cpu': cpu_info().summary(),
        'frame_size': list(frame_size),
        'threads': args.threads, 'resize_mode': args.resize_mode, 'iters': args.iters,
        'pipeline': pipe}
    result['pre_post_over_inference'] = (pipe['preprocess_ms']['median']
                                         + pipe['postprocess_ms']['median']) \
        / pipe['inference_ms']['median']
    if ids_ref is not None:
        base = pipe.pop('baseline')
        agree = []
        for k, frame in enumerate(frames):
            ref = ids_ref(k)
            got = seg(frame).ids
            if got.shape != ref.shape:  # frame != network size: compare at network size
                import cv2

                got = cv2.resize(got, ref.shape[::-1], interpolation=cv2.INTER_NEAREST_EXACT)
            agree.append(float((got == ref).mean()))
        result['baseline_torch_eager'] = base
        result['speedup_wall'] = base['total_ms']['median'] / pipe['total_ms']['median']
        result['speedup_cpu'] = base['cpu_ms']['median'] / pipe['cpu_ms']['median']
        result['ids_agreement_vs_eager'] = float(np.mean(agree))
    result['peak_rss_mb'] = peak_rss_mb()
    if backend.name in ('torch', 'tensorrt') and 'cuda' in backend.device:
        import torch

        # + TensorRT's own allocations, which torch's allocator does not see
        result['peak_cuda_mb'] = torch.cuda.max_memory_allocated() / 2**20 + \
            float(result.get('tensorrt_memory_mb', 0.0))
    seg.close()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_bench(result)
    return 0


def _print_bench(r: dict[str, Any]) -> None:
    p = r['pipeline']
    print(f'{r["model"]} on {r["backend"]} ({r["device"]}, {r["precision"]}: '
          f'{r["precision_reason"]}), CPU {r["cpu"]}, network '
          f'{r["input_size"][0]}x{r["input_size"][1]}, frames '
          f'{r["frame_size"][0]}x{r["frame_size"][1]}, {r["iters"]} iters')
    print(f'{"stage":<16}{"median":>10}{"p90":>10}{"p99":>10}  (ms)')
    for k in ('preprocess_ms', 'inference_ms', 'postprocess_ms', 'total_ms'):
        s = p[k]
        print(f'{k[:-3]:<16}{s["median"]:>10.2f}{s["p90"]:>10.2f}{s["p99"]:>10.2f}')
    print(f'FPS {p["fps"]:.1f}; pre+post = {100 * r["pre_post_over_inference"]:.1f}% of '
          f'inference; peak RSS {r["peak_rss_mb"]:.0f} MiB')
    print(f'CPU time per frame (all threads): median {p["cpu_ms"]["median"]:.1f} ms')
    if 'baseline_torch_eager' in r:
        b = r['baseline_torch_eager']
        print(f'torch eager fp32 NCHW (interleaved): median {b["total_ms"]["median"]:.2f} ms, '
              f'p90 {b["total_ms"]["p90"]:.2f}, CPU {b["cpu_ms"]["median"]:.1f} ms; pipeline '
              f'is {r["speedup_wall"]:.2f}x faster (wall), {r["speedup_cpu"]:.2f}x (CPU '
              f'time); ids agree on {100 * r["ids_agreement_vs_eager"]:.3f}% of pixels')


# ---------------------------------------------------------------------------- predict
def _predict_args(p: argparse.ArgumentParser) -> None:
    add_model_argument(p, MODEL_FILE, positional=True, inputs_after='images')
    p.add_argument('images', nargs='+',
                   help='image files (PNG, JPEG, ...), folders (their images) or quoted globs '
                        '("frames/*.png", "data/**/*.jpg")')
    p.add_argument('--out', required=True, help='output folder')
    add_overwrite_argument(p, '--out folder')
    p.add_argument('--backend', choices=BACKENDS, default='auto')
    p.add_argument('--device', default='auto')
    p.add_argument('--precision', choices=PRECISIONS, default='auto',
                   help='auto: fp16 on CUDA, bf16 on OpenVINO with native bf16, else fp32')
    add_size_argument(p, "network input HxW (default: the model file's size)",
                      old=('--input-size',))
    p.add_argument('--resize-mode', choices=('stretch', 'letterbox'), default='stretch')
    p.add_argument('--weights', default=None, help=WEIGHTS_HELP)
    p.add_argument('--palette', default=None,
                   help='cityscapes, camvid or a YAML palette file (default: model metadata)')
    p.add_argument('--alpha', type=_alpha, default=0.5, help='overlay alpha, 0..1')
    p.add_argument('--confidence', action='store_true', help='also write confidence PNGs')
    p.add_argument('--threads', type=positive_int, default=None)
    p.add_argument('--engine-cache-dir', default=None)
    add_progress_argument(p)


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number 0..1, got {text!r}') from None
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f'must be 0..1, got {text!r}')
    return value


def expand_inputs(inputs: list[str]) -> tuple[list[str], list[str]]:
    """``predict``'s inputs as image files: (files, inputs that were not found).

    A folder stands for the images directly in it (sorted); a name with ``*``, ``?`` or ``[``
    that is not itself a file is a glob (``**`` recurses), matched to its files sorted; other
    names are files. Unreadable files stay in the list (the reader reports them).

    Raises:
        SegRosError: a folder without images or a glob that matches no file.
    """
    import glob

    from seg_ros.fileio import IMAGE_SUFFIXES

    files: list[str] = []
    missing: list[str] = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = sorted(str(p) for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise SegRosError(f'{name}: no images in this folder '
                                  f'({", ".join(IMAGE_SUFFIXES)})')
            files += found
        elif not path.exists() and any(c in name for c in '*?['):
            found = sorted(p for p in glob.glob(name, recursive=True) if Path(p).is_file())
            if not found:
                raise SegRosError(f'{name}: no file matches')
            files += found
        elif path.exists():
            files.append(name)
        else:
            missing.append(name)
    return files, missing


def output_names(images: list[str]) -> list[tuple[str, Path]]:
    """(input, output path without suffix) for ``predict``: no two inputs share an output.

    Outputs keep the inputs' paths relative to the deepest folder they all share, so
    ``a/frame.png b/frame.png`` become ``a/frame`` and ``b/frame``; files of one folder that
    differ only in their extension keep it (``frame.png`` -> ``frame.png``, ``frame.jpg`` ->
    ``frame.jpg``, each then suffixed ``.png`` / ``.jpg`` by the writer). The same file given
    twice is segmented once.

    Raises:
        SegRosError: two different inputs would still write the same output.
    """
    import os

    unique: dict[Path, str] = {}
    for name in images:
        unique.setdefault(Path(os.path.abspath(name)), name)
    paths = list(unique)
    if not paths:
        return []
    base = Path(os.path.commonpath([str(p.parent) for p in paths]))
    rel = [p.relative_to(base) for p in paths]
    stems = [r.with_suffix('') for r in rel]
    counts: dict[Path, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    out = [r if counts[s] > 1 else s for r, s in zip(rel, stems)]
    seen: dict[Path, str] = {}
    for path, o in zip(paths, out):
        other = seen.setdefault(o, unique[path])
        if other != unique[path]:
            raise SegRosError(f'{other} and {unique[path]} would write the same output '
                              f'{o}; rename one of them')
    return [(unique[p], o) for p, o in zip(paths, out)]


def _write_image(path: Path, image: Any) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise SegRosError(f'cannot write {path}')


def _predict_run(args: argparse.Namespace) -> int:
    import cv2

    from seg_ros.metadata import load_palette
    from seg_ros.progress import progress_bar
    from seg_ros.runtime.segmenter import Segmenter

    _setup_logging()
    # everything that can be refused without the model is checked before loading it
    palette = load_palette(args.palette)[1] if args.palette else None
    check_output(args.out, args.overwrite)
    files, missing = expand_inputs(args.images)
    if not files:
        raise SegRosError(f'{missing[0]} not found' if len(missing) == 1 else
                          f'none of the {len(missing)} inputs exist: {", ".join(missing[:3])}')
    for name in missing:
        print(f'seg-ros predict: skipping {name}: not found', file=sys.stderr)
    targets = output_names(files)
    seg = Segmenter.from_file(args.model, backend=args.backend, device=args.device,
                              precision=args.precision, input_size=args.size,
                              resize_mode=args.resize_mode, weights=args.weights,
                              engine_cache_dir=args.engine_cache_dir, threads=args.threads)
    try:
        if palette is not None:
            seg.set_palette(palette)
        out = Path(args.out)
        failed, done = len(missing), 0
        for name, rel in progress_bar(targets, enabled=not args.no_progress, desc='predict',
                                      unit='image'):
            bgr = cv2.imread(name, cv2.IMREAD_COLOR)
            if bgr is None:
                print(f'seg-ros predict: skipping {name}: not a readable image',
                      file=sys.stderr)
                failed += 1
                continue
            res = seg(bgr, color_order='bgr', confidence=args.confidence, color=True,
                      overlay=True, overlay_alpha=args.alpha)
            _write_image(out / 'ids' / f'{rel}.png', res.ids)
            _write_image(out / 'color' / f'{rel}.png',
                         cv2.cvtColor(res.color, cv2.COLOR_RGB2BGR))  # type: ignore[arg-type]
            _write_image(out / 'overlay' / f'{rel}.jpg',
                         cv2.cvtColor(res.overlay, cv2.COLOR_RGB2BGR))  # type: ignore[arg-type]
            if res.confidence is not None:
                _write_image(out / 'confidence' / f'{rel}.png', res.confidence)
            done += 1
            t = res.timings
            print(f'{name}: {format_size(bgr.shape)}, inference '
                  f'{t["inference_ms"]:.1f} ms -> {rel}')
    finally:
        seg.close()
    print(f'wrote {plural(done, "result")} to {out}/ (ids/, color/, overlay/)')
    if failed and not done:
        raise SegRosError('no image could be read')
    return 0 if not failed else 1


# ---------------------------------------------------------------------------- quantize
def _quantize_args(p: argparse.ArgumentParser) -> None:
    add_model_argument(p, 'fp32 ONNX file from `seg-ros export`', positional=True,
                       metavar='MODEL.onnx')
    p.add_argument('--calib', required=True,
                   help='frames: an image folder or a rosbag2 (dir/.mcap/.db3)')
    p.add_argument('--calib-topic', default=None, help='image topic in the bag')
    p.add_argument('--frames', type=int, default=64,
                   help='frames read from the source, spread evenly over it (default 64)')
    p.add_argument('--held-out', type=int, default=16,
                   help='of those, frames kept out of calibration to measure the ids '
                        'agreement with fp32 (default 16)')
    p.add_argument('--resize-mode', choices=('stretch', 'letterbox'), default='stretch',
                   help='how frames are fitted to the network input, as on the robot')
    p.add_argument('--min-agreement', type=float, default=0.99,
                   help='write the int8 file only if this share of held-out pixels keeps '
                        'its fp32 class id (default 0.99)')
    p.add_argument('--threads', type=int, default=None, help='CPU threads for the check')
    p.add_argument('--out', required=True, help='int8 .onnx file to write')
    add_overwrite_argument(p, '--out file')
    add_progress_argument(p)


def _quantize_run(args: argparse.Namespace) -> int:
    from seg_ros.runtime.backends import read_onnx_meta
    from seg_ros.runtime.calibration import CalibrationData
    from seg_ros.runtime.cpu import cpu_info
    from seg_ros.runtime.quantize import quantize_onnx, require_fp32_export, split_frames

    _setup_logging()
    check_output(args.out, args.overwrite)
    meta = read_onnx_meta(args.model)
    import onnx

    require_fp32_export(onnx.load(args.model, load_external_data=False), args.model)  # fail fast
    h, w = meta.input_size
    data = CalibrationData(args.calib, (h, w), num_frames=args.frames, batch_size=1,
                           topic=args.calib_topic, resize_mode=args.resize_mode,
                           mean=tuple(meta.mean))  # type: ignore[arg-type]
    calib, held_out = split_frames(list(data.frames()), args.held_out)
    report = quantize_onnx(args.model, calib, held_out, args.out, args.min_agreement,
                           args.threads)
    print(f'int8 vs fp32 ids agreement on {report.held_out_frames} held-out frames: '
          f'{report.agreement:.2%} (worst frame {report.worst_frame:.2%}); calibrated on '
          f'{report.calibration_frames} frames; CPU {cpu_info().summary()}')
    if not report.written:
        raise SegRosError(f'int8 keeps {report.agreement:.2%} of the ids, below '
                          f'--min-agreement {args.min_agreement:.2%}: {args.out} not written')
    print(f'wrote {args.out}')
    return 0


COMMANDS = {
    'export': (_export_args, _export_run),
    'build-engine': (_build_args, _build_run),
    'bench': (_bench_args, _bench_run),
    'predict': (_predict_args, _predict_run),
    'quantize': (_quantize_args, _quantize_run),
}
