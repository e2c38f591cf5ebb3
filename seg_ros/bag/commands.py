"""``seg-ros make-bag`` and ``seg-ros eval-bag``."""
from __future__ import annotations

import argparse
from pathlib import Path
import shutil

from seg_ros.arguments import (
    MODEL_FILE,
    add_model_argument,
    add_overwrite_argument,
    add_progress_argument,
    add_size_argument,
    check_output,
    plural,
)
from seg_ros.errors import SegRosError

# what eval-bag writes into --out: --overwrite removes these first, so no plot of an older
# run is left next to a new report
REPORT_FILES = ('report.json', 'report.md', 'per_class_iou.png', 'confusion_matrix.png',
                'latency_hist.png', 'samples.png', 'output_bag')


def add_make_bag_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``seg-ros make-bag``."""
    p.add_argument('src', nargs='?', type=Path,
                   help='image folder (images/ + optional masks/, or a flat folder of images), '
                        'or a dataset root with --dataset; omit with --synthetic')
    p.add_argument('--out', required=True, type=Path, help='bag folder to create')
    add_overwrite_argument(p, '--out bag')
    add_progress_argument(p)
    p.add_argument('--storage', choices=('sqlite3', 'mcap'), default='sqlite3',
                   help='rosbag2 storage plugin (default: sqlite3)')
    p.add_argument('--rate', type=float, default=10.0, metavar='HZ',
                   help='camera rate: frame i is stamped start + i/HZ (default: 10)')
    p.add_argument('--compressed', nargs='?', const='jpeg', choices=('jpeg', 'png'),
                   help='write sensor_msgs/CompressedImage (jpeg if no format is given)')
    p.add_argument('--jpeg-quality', type=int, default=90)
    p.add_argument('--from-bag', type=Path, metavar='BAG',
                   help='copy the image, label and camera_info topics of another bag (ROS 1, '
                        'any rosbag2 era, compressed) into a modern rosbag2')
    p.add_argument('--synthetic', type=int, metavar='N',
                   help='N frames of the synthetic drive generator (with labels)')
    add_size_argument(p, 'synthetic frame HxW (default: 256x512)', default=(256, 512))
    p.add_argument('--seed', type=int, default=0, help='synthetic drive seed')
    p.add_argument('--dataset', choices=('cityscapes', 'camvid', 'folder'),
                   help='read SRC as a dataset of this kind (labels go to --label-topic)')
    p.add_argument('--split', default='val', help='dataset split (default: val)')
    p.add_argument('--max-frames', type=int, help='stop after this many frames')
    p.add_argument('--image-topic', help='default /camera/image_raw (+ /compressed)')
    p.add_argument('--label-topic', default='/labels', help='mono8 label topic (default /labels)')
    p.add_argument('--camera-info-topic', default='/camera/camera_info')
    p.add_argument('--frame-id', default='camera')
    p.add_argument('--hfov', type=float, default=90.0,
                   help='horizontal field of view for the written CameraInfo (degrees)')


def run_make_bag(args: argparse.Namespace) -> int:
    """Write the bag and print a one-line summary."""
    import itertools

    from seg_ros.bag import make_bag as mb

    camera_info = None
    if args.from_bag is not None:
        if args.src is not None or args.dataset or args.synthetic is not None:
            raise SegRosError('--from-bag takes no SRC, --dataset or --synthetic')
        if not args.from_bag.exists():
            raise SegRosError(f'{args.from_bag}: no such bag')
        res = mb.from_bag(args.from_bag, args.out, storage=args.storage,
                          image_topic=args.image_topic, label_topic=args.label_topic,
                          max_frames=args.max_frames)
        print(f'read: {res.source_form}')
        for note in res.notes:
            print(f'note: {note}')
        labels = f', {res.labelled} labels on {res.label_topic}' if res.labelled else ''
        info = f', camera_info on {res.camera_info_topic}' if res.camera_info_topic else ''
        print(f'wrote {res.path} ({res.storage}): {res.frames} frames on {res.image_topic}'
              f'{labels}{info}')
        return 0
    if args.synthetic is not None:
        if args.src is not None or args.dataset:
            raise SegRosError('--synthetic takes no SRC or --dataset')
        size = args.size
        total, frames = mb.synthetic_frames(args.synthetic, size, args.seed)
        camera_info = mb.synthetic_camera_info(size, args.seed)
    elif args.src is None:
        raise SegRosError('give SRC (an image folder or dataset root) or --synthetic N')
    elif not args.src.exists():
        raise SegRosError(f'{args.src}: no such folder')
    elif args.dataset:
        total, frames = mb.dataset_frames(args.dataset, args.src, args.split)
    else:
        total, frames = mb.folder_frames(args.src)
    check_output(args.out, args.overwrite)
    if args.out.exists():
        _remove_bag(args.out)
    if args.max_frames is not None:
        total = min(total, args.max_frames)
        frames = itertools.islice(frames, args.max_frames)
    res = mb.make_bag(args.out, frames, total=total, storage=args.storage, rate_hz=args.rate,
                      compressed=args.compressed, image_topic=args.image_topic,
                      label_topic=args.label_topic, camera_info_topic=args.camera_info_topic,
                      frame_id=args.frame_id, jpeg_quality=args.jpeg_quality,
                      hfov_deg=args.hfov, camera_info=camera_info,
                      progress=not args.no_progress)
    labels = f', {plural(res.labelled, "label")} on {res.label_topic}' if res.labelled else ''
    print(f'wrote {res.path} ({res.storage}): {plural(res.frames, "frame")} on {res.image_topic}'
          f'{labels}, camera_info on {res.camera_info_topic}')
    return 0


def _remove_bag(path: Path) -> None:
    """Delete the bag ``make-bag --overwrite`` replaces; anything but a bag is kept."""
    bag_files = ('metadata.yaml', '.db3', '.mcap', '.db3-shm', '.db3-wal')
    if path.is_dir() and all(f.is_file() and f.name.endswith(bag_files)
                             for f in path.iterdir()):
        shutil.rmtree(path)
    else:
        raise SegRosError(f'--out {path} is not a rosbag2 folder; --overwrite replaces only '
                          'a bag')


def add_eval_bag_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``seg-ros eval-bag``."""
    p.add_argument('bag', type=Path,
                   help='ROS 1 .bag, rosbag2 folder, or a .db3 / .mcap file (any era)')
    add_model_argument(p, MODEL_FILE)
    p.add_argument('--weights', help='checkpoint (.pt) whose weights load into the registered '
                                     'model name given as --model')
    p.add_argument('--backend', default='auto',
                   help='auto, onnxruntime, torch or tensorrt (default: auto)')
    p.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N (default auto)')
    add_size_argument(p, "network input HxW (default: the model file's size)",
                      old=('--input-size',))
    p.add_argument('--image-topic', required=True, help='Image or CompressedImage topic')
    g = p.add_mutually_exclusive_group()
    g.add_argument('--label-topic', help='mono8 label topic in the bag (matched by stamp)')
    g.add_argument('--labels', type=Path, metavar='DIR', help='folder of label PNGs')
    p.add_argument('--label-match', choices=('auto', 'timestamp', 'name'), default='auto',
                   help='how label PNGs find their frame: file name = stamp '
                        '(<ns>.png, <sec>.<nsec>.png), or = source file stem / frame index; '
                        'auto: timestamp if every name is a stamp (default)')
    p.add_argument('--label-tolerance-ms', type=float, default=1.0,
                   help='largest |label stamp - image stamp| accepted (default: 1 ms)')
    p.add_argument('--out', required=True, type=Path, help='report folder')
    add_overwrite_argument(p, '--out folder')
    add_progress_argument(p)
    p.add_argument('--live', action='store_true',
                   help='play the bag into the segmentation node (separate processes) and '
                        'measure end-to-end latency, drops and rate')
    p.add_argument('--rate', type=float, default=1.0,
                   help='live playback speed factor (1.0 = recorded timing, like ros2 bag '
                        'play --rate)')
    p.add_argument('--write-bag', action='store_true',
                   help='also write OUT/output_bag: input images + /segmentation_node/mask and '
                        '/color (view in Foxglove or RViz)')
    p.add_argument('--samples', type=int, default=6, help='frames in the overlay strip')
    p.add_argument('--no-plots', action='store_true',
                   help='write report.json and report.md only (no PNGs): for batch runs')
    p.add_argument('--max-frames', type=int, help='evaluate only the first N frames')
    p.add_argument('--threads', type=int,
                   help='inference threads (offline: this process; live: the node)')
    p.add_argument('--node-timeout', type=float, default=120.0,
                   help='live: seconds to wait for the node to load and answer')
    p.add_argument('--warmup', type=int, default=3, metavar='N',
                   help='offline: untimed runs of the first frame before timing (default 3, '
                        'like live; 0 times the cold first frame)')


def run_eval_bag(args: argparse.Namespace) -> int:
    """Evaluate and print the headline figures."""
    from seg_ros.bag.eval_bag import EvalConfig, run_eval

    check_output(args.out, args.overwrite)
    for name in REPORT_FILES if args.out.is_dir() else ():
        target = args.out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    cfg = EvalConfig(
        bag=args.bag, model=args.model, image_topic=args.image_topic, out_dir=args.out,
        backend=args.backend, device=args.device, weights=args.weights,
        input_size=args.size,
        label_topic=args.label_topic, labels_dir=args.labels, label_match=args.label_match,
        label_tolerance_ms=args.label_tolerance_ms, live=args.live, rate=args.rate,
        write_bag=args.write_bag, samples=args.samples, plots=not args.no_plots,
        max_frames=args.max_frames, threads=args.threads, node_timeout_s=args.node_timeout,
        warmup=args.warmup)
    report = run_eval(cfg, progress=not args.no_progress)
    form = report['bag'].get('form') or {}
    print(f'read: {form.get("description", "")}')
    for note in form.get('notes', []):
        print(f'note: {note}')
    print(summary_line(report))
    print(f'report: {args.out / "report.md"}')
    return 0


def summary_line(report: dict) -> str:
    """One line with mIoU, latency and frame accounting."""
    m = report.get('metrics') or {}
    lat = report.get('latency_ms') or {}
    fr = report.get('frames') or {}
    parts = [f'{report["mode"]}:']
    if m and m.get('miou') is not None:
        parts.append(f'mIoU {m["miou"]:.4f}, pixel acc {m["pixel_accuracy"]:.4f} over '
                     f'{plural(fr.get("evaluated") or 0, "labelled frame")}')
    elif m:
        parts.append('no valid label pixels in '
                     f'{plural(fr.get("evaluated") or 0, "labelled frame")}')
    else:
        parts.append('no labels')
    if lat.get('n'):
        warm = (report.get('warmup') or {}).get('runs')
        parts.append(f'latency p50 {lat["p50"]:.1f} / p90 {lat["p90"]:.1f} / p99 '
                     f'{lat["p99"]:.1f} ms' + (f' (after {warm} warm-up runs)' if warm else ''))
    if report['mode'] == 'live':
        r = report.get('rate_hz') or {}
        rate = f'{r["output"]:.1f} Hz' if r.get('output') else 'n/a'
        parts.append(f'dropped {fr.get("dropped")}/{fr.get("published")}, output {rate}')
    if fr.get('without_label'):
        parts.append(f'{plural(fr["without_label"], "frame")} without label')
    return ', '.join(parts[:1]) + ' ' + ', '.join(parts[1:])


def add_extract_frames_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``seg-ros extract-frames``."""
    p.add_argument('bag', type=Path,
                   help='ROS 1 .bag, rosbag2 folder, or a .db3 / .mcap file (any era)')
    p.add_argument('--topic', required=True, help='Image or CompressedImage topic')
    g = p.add_mutually_exclusive_group()
    g.add_argument('--every', type=int, metavar='N', help='every N-th frame (default: all)')
    g.add_argument('--stamps', type=Path, metavar='FILE',
                   help='only these frames: one stamp a line (nanoseconds, <sec>.<nsec>, or a '
                        'stamp-named file name)')
    p.add_argument('--tolerance-ms', type=float, default=1.0,
                   help='largest |listed stamp - frame stamp| for --stamps (default: 1 ms)')
    p.add_argument('--out', required=True, type=Path,
                   help='folder for <sec>.<nsec>.png (+ camera_info.yaml)')
    p.add_argument('--format', choices=('png', 'jpg'), default='png',
                   help='image file format (default: png, lossless)')
    p.add_argument('--camera-info-topic',
                   help='CameraInfo topic (default: <camera>/camera_info next to --topic, or '
                        "the bag's only one)")
    p.add_argument('--overwrite', action='store_true', help='replace existing files')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')


def run_extract_frames(args: argparse.Namespace) -> int:
    """Extract and print what was written."""
    from seg_ros.bag.extract import extract_frames

    res = extract_frames(args.bag, args.topic, args.out, every=args.every,
                         stamps_file=args.stamps, tolerance_ms=args.tolerance_ms,
                         fmt=args.format, camera_info_topic=args.camera_info_topic,
                         overwrite=args.overwrite, progress=not args.no_progress)
    print(f'read: {res.form}')
    for note in res.notes:
        print(f'note: {note}')
    n = len(res.files)
    print(f'wrote {n} frame{"" if n == 1 else "s"} of {res.topic} to {res.out} as '
          f'<sec>.<nsec>.{args.format} (the names eval-bag --labels matches by stamp)')
    if res.camera_info is not None:
        change = (' (the calibration changes during the bag: this is the one nearest the first '
                  'frame)' if res.camera_info_changes else '')
        print(f'camera_info: {res.camera_info} from {res.camera_info_topic}{change}')
    else:
        print('camera_info: none (no CameraInfo topic found; pass --camera-info-topic)')
    if res.undecodable:
        print(f'skipped {len(res.undecodable)} undecodable frames ({res.undecodable[0]})')
    return 0


COMMANDS = {
    'make-bag': (add_make_bag_arguments, run_make_bag),
    'eval-bag': (add_eval_bag_arguments, run_eval_bag),
    'extract-frames': (add_extract_frames_arguments, run_extract_frames),
}
