"""``seg-ros demo`` (what ``make demo`` runs): a synthetic drive through the live node, scored.

1. Writes a synthetic drive (a world seed the shipped model was not trained on) into an MCAP
   rosbag2 with labels and camera_info: ``demo_out/drive_bag``.
2. Scores the shipped model on it offline (the bag read directly, as fast as the CPU goes):
   ``demo_out/offline/``.
3. Starts the segmentation node with the shipped model on ONNX Runtime (the CPU default), plays
   the bag into it in real time from another process, records the node's masks and scores them:
   ``demo_out/report.{json,md}``, plots, ``samples.png``, ``demo_overlay.png`` and
   ``demo_out/output_bag`` (input + mask + colour; open it in Foxglove).
4. Prints mIoU and latency.

The shipped model is ``models/regseg48_synthetic.pt`` with its ONNX export
``models/regseg48_synthetic.onnx`` (see models/README.md). If the ONNX file is missing or was
exported from another checkpoint, the checkpoint runs and ONNX Runtime exports it once into the
runtime's cache (``~/.cache/seg_ros/``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
import shutil
import time
from typing import Any

from seg_ros.arguments import (
    add_overwrite_argument,
    add_progress_argument,
    add_size_argument,
    check_output,
)
from seg_ros.errors import SegRosError

SHIPPED_CHECKPOINT = 'regseg48_synthetic.pt'
SHIPPED_ONNX = 'regseg48_synthetic.onnx'
# The training config draws its worlds from other seeds; this drive is held out.
DEMO_SEED = 2026
DEMO_MARKER = '.seg_ros_demo'
# ONNX metadata key under which the export records which checkpoint it came from.
SOURCE_SHA_KEY = 'seg_ros.source_sha256'


# What the shipped model has and has not seen: written into the demo's report (issue 18).
SHIPPED_SCOPE = (
    'The shipped model (models/regseg48_synthetic.pt) was trained on the synthetic streets of '
    '`seg_ros.data.synthetic` only: 32 worlds at 128x256, then 48 and 96 worlds at 256x512 '
    '(config/train/synthetic_stage1.yaml, synthetic.yaml, synthetic_stage3_upscaled.yaml), '
    'and it runs them resized to 320x640. This drive '
    '(world seed {seed}) is none of them, so the score above is on a street it never saw -- '
    'but on the same renderer. It has never seen a real camera image: on a real camera its '
    'output means nothing. For real cameras use converted Cityscapes weights '
    '(models/README.md) or train on your own labelled frames (config/train/folder.yaml, '
    'docs/training.md).')


def models_dir() -> Path:
    """``models/`` of the source tree, else of the installed package share folder."""
    root = Path(__file__).resolve().parents[1]
    source = root / 'models'
    if (root / 'package.xml').is_file():  # the source tree (pip install -e, or a checkout)
        return source
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory('seg_ros')) / 'models'
    except Exception:  # not an ament install: report the source location as missing
        return source


def cache_dir() -> Path:
    """The runtime's cache folder (``$SEG_ROS_CACHE``, default ~/.cache/seg_ros)."""
    from seg_ros.runtime.segmenter import default_cache_dir

    return default_cache_dir()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with path.open('rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def onnx_source_sha(onnx_path: Path) -> str | None:
    """The checkpoint sha256 an ONNX file records (None when it records none)."""
    try:
        import onnx

        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception:  # unreadable: treated as "not ours", the demo re-exports
        return None
    for prop in model.metadata_props:
        if prop.key == SOURCE_SHA_KEY:
            return prop.value
    return None


def export_onnx(checkpoint: Path, out: Path, input_size: tuple[int, int] | None = None) -> Path:
    """Export a checkpoint with the runtime's exporter and record its sha256 in the ONNX."""
    from seg_ros.runtime.export import export_onnx as runtime_export
    from seg_ros.runtime.export import load_model_and_meta

    net, meta = load_model_and_meta(str(checkpoint))
    # One atomic write with the sha inside: no half-made file next to the model on a kill.
    return runtime_export(net, meta, out, size=input_size,
                          extra_meta={SOURCE_SHA_KEY: sha256_file(checkpoint)})


def resolve_model(checkpoint: Path, shipped_onnx: Path | None) -> tuple[Path, str]:
    """The model file to run: the shipped ONNX when it records ``checkpoint``'s sha256, else the
    checkpoint itself (ONNX Runtime then exports it once into the runtime's cache,
    ``$SEG_ROS_CACHE`` or ~/.cache/seg_ros). Returns (path, how it was chosen)."""
    if shipped_onnx is not None and shipped_onnx.is_file() \
            and onnx_source_sha(shipped_onnx) == sha256_file(checkpoint):
        return shipped_onnx, 'shipped ONNX export of the checkpoint'
    if shipped_onnx is not None and shipped_onnx.is_file():
        print(f'demo: {shipped_onnx.name} was not exported from {checkpoint.name} (stale); '
              'running the checkpoint (exported once into the cache)', flush=True)
    return checkpoint, 'checkpoint, exported to ONNX once and cached by the runtime'


def untrained_checkpoint(size: tuple[int, int]) -> Path:
    """A randomly initialised regseg48 (seed 0) checkpoint, for developing without the
    shipped model. Its scores mean nothing."""
    import torch

    from seg_ros.metadata import ModelMeta
    from seg_ros.models.checkpoint import save_checkpoint
    from seg_ros.models.registry import create_model

    path = cache_dir() / 'untrained' / f'regseg48_untrained_{size[0]}x{size[1]}.pt'
    if not path.is_file():
        torch.manual_seed(0)
        model = create_model('regseg48', num_classes=19)
        meta = ModelMeta.for_dataset('regseg48', 'cityscapes', input_size=list(size))
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, model, meta)
    return path


def _prepare_out(out: Path, overwrite: bool = False) -> None:
    """Refuse an existing ``out`` unless ``overwrite``; even then replace it only if an earlier
    demo made it: never delete a user's folder."""
    check_output(out, overwrite)
    if out.exists():
        if not (out / DEMO_MARKER).is_file() and any(out.iterdir()):
            raise SegRosError(f'{out} exists and was not written by seg-ros demo; choose '
                              'another --out')
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / DEMO_MARKER).write_text('written by seg-ros demo; deleted by the next run\n')


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``seg-ros demo``."""
    p.add_argument('--out', type=Path, default=Path('demo_out'), help='output folder')
    add_overwrite_argument(p, '--out folder of an earlier demo')
    add_progress_argument(p)
    p.add_argument('--frames', type=int, default=80, help='frames in the drive (default 80)')
    add_size_argument(p, 'camera frame HxW (default 256x512)', default=(256, 512))
    p.add_argument('--rate', type=float, default=10.0, help='camera rate in Hz (default 10)')
    p.add_argument('--seed', type=int, default=DEMO_SEED, help='synthetic world seed')
    p.add_argument('--storage', choices=('sqlite3', 'mcap'), default='mcap')
    p.add_argument('--model', type=Path,
                   help='model to run, a .pt checkpoint or an .onnx file (default: the shipped '
                        'models/regseg48_synthetic.pt)')
    p.add_argument('--backend', default='onnxruntime',
                   help='backend of the node (default onnxruntime, the CPU default)')
    p.add_argument('--untrained', action='store_true',
                   help='development only: run a randomly initialised regseg48 when no '
                        'trained checkpoint exists (scores are meaningless)')
    p.add_argument('--no-offline', action='store_true', help='skip the offline evaluation')
    p.add_argument('--export-onnx', action='store_true',
                   help='only (re-)export the shipped checkpoint to models/'
                        f'{SHIPPED_ONNX} (after retraining) and exit')


def run(args: argparse.Namespace) -> int:
    """Run the demo; prints the headline figures."""
    from seg_ros.bag.commands import summary_line
    from seg_ros.bag.eval_bag import EvalConfig, run_eval
    from seg_ros.bag.make_bag import make_bag, synthetic_camera_info, synthetic_frames

    t0 = time.monotonic()
    if args.export_onnx:
        ckpt = args.model or models_dir() / SHIPPED_CHECKPOINT
        if not ckpt.is_file():
            raise SegRosError(f'{ckpt} not found; train it first (see models/README.md)')
        target = models_dir() / SHIPPED_ONNX if args.model is None \
            else ckpt.with_suffix('.onnx')
        export_onnx(ckpt, target)
        print(f'demo: exported {ckpt} -> {target}')
        return 0
    size = args.size
    if args.frames < 2:
        raise SegRosError('--frames must be >= 2')
    untrained = False
    shipped_onnx: Path | None = None
    if args.model is not None:
        checkpoint = args.model
        if not checkpoint.is_file():
            raise SegRosError(f'model {checkpoint} not found')
    elif args.untrained:
        checkpoint, untrained = untrained_checkpoint(size), True
    else:
        checkpoint = models_dir() / SHIPPED_CHECKPOINT
        shipped_onnx = models_dir() / SHIPPED_ONNX
        if not checkpoint.is_file():
            raise SegRosError(f'the shipped demo model {checkpoint} is missing; train it with '
                              '`seg-ros train config/train/synthetic.yaml` (see models/README.md)')
    if untrained:
        print('demo: WARNING: running an UNTRAINED regseg48 (random weights, --untrained); '
              'its mIoU is meaningless. The real demo uses models/regseg48_synthetic.pt.',
              flush=True)
    model_file, how = (checkpoint, 'checkpoint') if args.backend == 'torch' else \
        resolve_model(checkpoint, shipped_onnx)
    print(f'demo: model {model_file} ({how}), backend {args.backend}', flush=True)

    out: Path = args.out
    _prepare_out(out, args.overwrite)
    progress = not args.no_progress
    bag = out / 'drive_bag'
    n, frames = synthetic_frames(args.frames, size, args.seed)
    made = make_bag(bag, frames, total=n, storage=args.storage, rate_hz=args.rate,
                    camera_info=synthetic_camera_info(size, args.seed), progress=progress)
    t_bag = time.monotonic()

    common: dict[str, Any] = {'bag': bag, 'model': str(model_file),
                              'image_topic': made.image_topic, 'backend': args.backend,
                              'device': 'cpu',
                              'label_topic': made.label_topic}
    offline = None
    if not args.no_offline:
        offline = run_eval(EvalConfig(out_dir=out / 'offline', samples=3, **common),
                           progress=progress)
        print(summary_line(offline), flush=True)
    t_off = time.monotonic()
    live = run_eval(EvalConfig(out_dir=out, live=True, rate=1.0, write_bag=True, samples=3,
                               **common), progress=progress)
    t_live = time.monotonic()
    if (out / 'samples.png').is_file():
        shutil.copyfile(out / 'samples.png', out / 'demo_overlay.png')
    summary = {
        'model': str(model_file), 'checkpoint': str(checkpoint), 'untrained': untrained,
        'frames': args.frames, 'size': list(size), 'camera_rate_hz': args.rate,
        'seed': args.seed,
        'live': {'miou': (live.get('metrics') or {}).get('miou'),
                 'latency_ms': live['latency_ms'], 'frames': live['frames'],
                 'rate_hz': live.get('rate_hz')},
        'offline': None if offline is None else {
            'miou': (offline.get('metrics') or {}).get('miou'),
            'latency_ms': offline['latency_ms']},
        'wall_s': {'make_bag': t_bag - t0, 'offline': t_off - t_bag, 'live': t_live - t_off,
                   'total': time.monotonic() - t0}}
    if args.model is None and not untrained:
        scope = SHIPPED_SCOPE.format(seed=args.seed)
        summary['model_scope'] = scope
        report_md = out / 'report.md'
        if report_md.is_file():
            with open(report_md, 'a', encoding='utf-8') as f:
                f.write(f'\n## What this model has seen\n\n{scope}\n')
    (out / 'demo_summary.json').write_text(json.dumps(summary, indent=2) + '\n')
    print(summary_line(live))
    if untrained:
        print('demo: (UNTRAINED model: the mIoU above is meaningless)')
    print(f'demo: finished in {summary["wall_s"]["total"]:.0f} s; report {out / "report.md"}, '
          f'overlays {out / "demo_overlay.png"}, output bag {out / "output_bag"}')
    return 0


COMMANDS = {'demo': (add_arguments, run)}
