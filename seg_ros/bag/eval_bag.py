"""Score a model on a rosbag: offline (read the bag, run the pipeline as fast as it can) or
live (play the bag into the running segmentation node and record what it publishes).

Both modes produce the same report (``seg_ros.bag.report``); only the latency means something
different, and the report says which: offline it is decode + pipeline time per frame, live it is
publish-to-mask-received time across processes, as the robot would see it.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
import datetime
import os
from pathlib import Path
import time
from typing import Any

import numpy as np

from seg_ros.bag.io import (
    COMPRESSED_TYPE,
    IMAGE_TYPE,
    BagFrame,
    BagReader,
    BagReadError,
    BagWriter,
    bag_sha256,
    decode_frame,
)
from seg_ros.bag.labels import (
    DEFAULT_TOLERANCE_MS,
    LabelMatcher,
    encode_label,
    labels_from_dir,
)
from seg_ros.bag.report import Accumulator, colorize, latency_stats, metrics_section, write_report
from seg_ros.errors import SegRosError
from seg_ros.progress import progress_bar

OUTPUT_PREFIX = '/segmentation_node'  # the node's default name: output bags look like a recording
OUTPUT_BAG_NAME = 'output_bag'
MODEL_SUFFIXES = ('.onnx', '.engine', '.pt', '.pth', '.ckpt')
# Untimed runs of the first frame before offline timing starts, as live sends the first frame
# until three masks came back (seg_ros.bag.live.WARMUP_MASKS): the first message builds rosbags'
# CDR decoder and the first inferences are cold, which dominate a short bag's percentiles.
WARMUP_RUNS = 3


@dataclass
class EvalConfig:
    """Everything one eval-bag run needs (also written into the report)."""

    bag: Path
    model: str
    image_topic: str
    out_dir: Path
    backend: str = 'auto'
    device: str = 'auto'
    weights: str | None = None
    input_size: tuple[int, int] | None = None
    label_topic: str | None = None
    labels_dir: Path | None = None
    label_match: str = 'auto'
    label_tolerance_ms: float = DEFAULT_TOLERANCE_MS
    live: bool = False
    rate: float = 1.0
    write_bag: bool = False
    samples: int = 6
    plots: bool = True
    max_frames: int | None = None
    threads: int | None = None
    node_timeout_s: float = 120.0
    warmup: int = WARMUP_RUNS

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, Path):
                d[k] = str(v)
            elif isinstance(v, tuple):
                d[k] = list(v)
        return d


@dataclass
class Prepared:
    """The bag opened and indexed, labels matched, before any inference."""

    reader: BagReader
    image_msgtype: str
    stamps: list[int]
    scan_error: str
    matcher: LabelMatcher | None
    label_keys: list[Any]
    names: list[str] | None
    frames_in_topic: int
    warnings: list[str] = field(default_factory=list)
    frames_listed: int | None = None
    max_frames: int | None = None

    @property
    def frames(self) -> int:
        """Frames that will be evaluated."""
        return len(self.stamps)

    @property
    def frames_expected(self) -> int:
        """Frames a complete run reads: the selection, or -- when metadata.yaml lists more
        messages than the storage holds -- the listed count (capped by --max-frames)."""
        listed = self.frames_in_topic if self.frames_listed is None else self.frames_listed
        if listed <= self.frames_in_topic:
            return self.frames
        return max(self.frames, min(listed, self.max_frames or listed))


def _label_matcher(reader: BagReader, cfg: EvalConfig, warnings: list[str]) -> LabelMatcher | None:
    if cfg.label_topic and cfg.labels_dir:
        raise SegRosError('give either --label-topic or --labels, not both')
    if cfg.labels_dir:
        return labels_from_dir(cfg.labels_dir, cfg.label_match, cfg.label_tolerance_ms)
    if not cfg.label_topic:
        return None
    if cfg.label_match == 'name':
        raise SegRosError('--label-match name needs --labels DIR; topic labels match by stamp')
    items: list[tuple[int, object]] = []
    try:
        for stamp, label in reader.label_messages(cfg.label_topic):
            items.append((stamp, encode_label(label)))
    except BagReadError as exc:
        if not items:
            raise
        # a damaged bag: keep the labels before the break, the image loop reports the damage
        warnings.append(f'label topic read stopped after {len(items)} labels: {exc}')
    if not items:
        raise SegRosError(f'{cfg.bag}: label topic {cfg.label_topic!r} has no messages')
    return LabelMatcher.from_stamped(items, cfg.label_tolerance_ms, cfg.label_topic)


def prepare(cfg: EvalConfig) -> Prepared:
    """Open the bag, check the topics, read the stamps, match the labels.

    Raises:
        SegRosError: missing bag/topic, no readable frame, labels that never match.
    """
    reader = BagReader(cfg.bag)
    try:
        # topics are used by name from here on (live passes it to the player): the stored one
        cfg.image_topic = reader.resolve_topic(cfg.image_topic)
        if cfg.label_topic:
            cfg.label_topic = reader.resolve_topic(cfg.label_topic)
        info = reader.require_topic(cfg.image_topic)
        stamps, scan_error = reader.stamps(cfg.image_topic)
        if not stamps:
            raise BagReadError(f'{cfg.bag}: no readable message on {cfg.image_topic!r}'
                               + (f' ({scan_error})' if scan_error else ''))
        # Frames are counted by reading them; metadata.yaml (or the storage index) only claims
        # a count, which a damaged or hand-edited bag gets wrong in either direction.
        readable = len(stamps)
        claimed = reader.metadata_count(cfg.image_topic)
        listed = info.count if claimed is None else claimed
        warnings: list[str] = []
        if listed != readable:
            where = 'metadata.yaml' if claimed is not None else 'the bag index'
            how = (f'only {readable} could be read' if scan_error else
                   f'the storage holds {readable} (counted by reading)')
            warnings.append(f'{where} lists {listed} messages on {cfg.image_topic} but {how}')
        if cfg.max_frames is not None:
            if cfg.max_frames < 1:
                raise SegRosError(f'--max-frames must be >= 1, got {cfg.max_frames}')
            stamps = stamps[:cfg.max_frames]
        if reader.salvaged:
            warnings.append(f'the bag is damaged ({reader.damage}); frames were recovered by '
                            'scanning its storage file')
        matcher = _label_matcher(reader, cfg, warnings)
        names = reader.frame_names()
        keys: list[Any] = []
        if matcher is not None:
            keys = [matcher.find(s, i, names) for i, s in enumerate(stamps)]
            if all(k is None for k in keys):
                raise SegRosError(_no_match_message(cfg, matcher, stamps))
        return Prepared(reader=reader, image_msgtype=info.msgtype, stamps=stamps,
                        scan_error=scan_error, matcher=matcher, label_keys=keys, names=names,
                        frames_in_topic=readable, warnings=warnings, frames_listed=listed,
                        max_frames=cfg.max_frames)
    except BaseException:
        reader.close()
        raise


def _no_match_message(cfg: EvalConfig, matcher: LabelMatcher, stamps: list[int]) -> str:
    where = matcher.source
    if matcher.mode == 'timestamp':
        label_stamps = matcher._stamps
        s = np.asarray(stamps, dtype=np.int64)
        pos = np.clip(np.searchsorted(label_stamps, s), 1, len(label_stamps) - 1) \
            if len(label_stamps) > 1 else np.zeros_like(s)
        gaps = np.minimum(np.abs(label_stamps[pos] - s), np.abs(label_stamps[pos - 1] - s)) \
            if len(label_stamps) > 1 else np.abs(label_stamps[0] - s)
        return (f'labels never match: none of {len(matcher)} labels from {where} is within '
                f'{matcher.tolerance_ns / 1e6:g} ms of any of {len(stamps)} image stamps on '
                f'{cfg.image_topic} (closest gap {float(gaps.min()) / 1e6:.3f} ms; first image '
                f'stamp {stamps[0]}, first label stamp {int(label_stamps[0])}); raise '
                '--label-tolerance-ms or check the label stamps')
    return (f'labels never match: none of {len(matcher)} label files in {where} is named after '
            f'a frame of {cfg.image_topic} (expected the source file stems recorded by make-bag '
            'or frame indices such as 000000.png)')


def sample_indices(n: int, k: int, keys: list[Any]) -> set[int]:
    """k frame indices spread over the run, preferring labelled frames."""
    if k <= 0 or n == 0:
        return set()
    pool = [i for i in range(n) if not keys or keys[i] is not None] or list(range(n))
    picks = np.linspace(0, len(pool) - 1, min(k, len(pool))).round().astype(int)
    return {pool[i] for i in picks}


def load_segmenter(cfg: EvalConfig) -> Any:
    """The runtime pipeline for ``cfg.model`` (the same one the node runs)."""
    from seg_ros.runtime.segmenter import Segmenter

    kw: dict[str, Any] = {'backend': cfg.backend, 'device': cfg.device}
    if cfg.weights:
        kw['weights'] = cfg.weights
    if cfg.input_size:
        kw['input_size'] = tuple(cfg.input_size)
    if cfg.threads:
        kw['threads'] = cfg.threads
    return Segmenter.from_file(cfg.model, **kw)


def model_meta(cfg: EvalConfig) -> Any:
    """The model's :class:`~seg_ros.metadata.ModelMeta` without building an inference session
    (cheap for .onnx and checkpoints; other kinds go through the Segmenter)."""
    path = Path(cfg.model)
    if path.suffix == '.onnx' and path.is_file():
        from seg_ros.runtime.backends import read_onnx_meta

        return read_onnx_meta(path)
    ckpt = Path(cfg.weights) if cfg.weights else path
    if ckpt.suffix in ('.pt', '.pth', '.ckpt') and ckpt.is_file():
        from seg_ros.models.checkpoint import load_checkpoint

        return load_checkpoint(ckpt)['meta']
    seg = load_segmenter(cfg)
    try:
        return seg.meta
    finally:
        seg.close()


def check_label_shape(pred: np.ndarray, label: np.ndarray, index: int) -> None:
    if pred.shape != label.shape:
        raise SegRosError(f'frame {index}: label is {label.shape[0]}x{label.shape[1]} (HxW) but '
                          f'the image is {pred.shape[0]}x{pred.shape[1]}; labels must have the '
                          'image resolution')


class OutputBag:
    """The --write-bag output: input images copied unchanged, plus mask and colour topics."""

    def __init__(self, path: Path, storage: str, palette: list[list[int]]) -> None:
        self.writer = BagWriter(path, storage)
        self.palette = palette
        self.path = path
        self.writer.__enter__()

    def copy(self, topic: str, msgtype: str, log_time_ns: int, raw: bytes) -> None:
        """Copy an input message unchanged."""
        self.writer.write_raw(topic, msgtype, log_time_ns, raw)

    def add_prediction(self, ids: np.ndarray, frame: BagFrame, log_time_ns: int) -> None:
        """Mask (mono8 class ids) and colour (rgb8) with the input's header, byte for byte
        (``frame.stamp`` as recorded, not re-derived from nanoseconds)."""
        self.writer.write_image(f'{OUTPUT_PREFIX}/mask', ids, 'mono8', frame.stamp_ns,
                                frame.frame_id, log_time_ns, stamp=frame.stamp)
        self.writer.write_image(f'{OUTPUT_PREFIX}/color', colorize(ids, self.palette), 'rgb8',
                                frame.stamp_ns, frame.frame_id, log_time_ns, stamp=frame.stamp)

    def close(self) -> dict[str, Any]:
        """Finish the bag (metadata.yaml) and describe it for the report."""
        self.writer.__exit__(None, None, None)
        return {'path': str(self.path), 'storage': self.writer.storage,
                'topics': dict(self.writer.counts)}

    def abort(self) -> None:
        """Remove the partial output bag after an unexpected error."""
        self.writer.__exit__(RuntimeError, None, None)


def image_messages(cfg: EvalConfig, prep: Prepared,
                   out_bag: OutputBag | None) -> Iterator[tuple[int, int, bytes, str]]:
    """The first ``prep.frames`` image-topic messages as ``(index, log time, raw, msgtype)``.

    With ``out_bag``, the camera_info and label messages read along the way are copied into
    it; each caller copies the image messages itself, after its own checks.
    """
    copy_topics: list[str] = []
    if out_bag is not None:
        copy_topics = prep.reader.camera_info_topics() + ([cfg.label_topic]
                                                           if cfg.label_topic else [])
    index = 0
    for topic, t, raw, msgtype in prep.reader.raw_messages([cfg.image_topic] + copy_topics):
        if topic != cfg.image_topic:
            if out_bag is not None:
                out_bag.copy(topic, msgtype, t, raw)
            continue
        if index >= prep.frames:
            break
        yield index, t, raw, msgtype
        index += 1


def evaluate_offline(cfg: EvalConfig, prep: Prepared, seg: Any,
                     progress: bool = True) -> tuple[Accumulator, dict[str, Any]]:
    """Run every frame through ``seg`` as fast as possible.

    Returns:
        (accumulator, extra report fields). A bag that breaks off mid-way ends the loop and
        sets ``extra['error']``; everything read before is in the accumulator.
    """
    meta = seg.meta
    acc = Accumulator(meta.num_classes, sample_indices(prep.frames, cfg.samples,
                                                       prep.label_keys))
    if cfg.warmup < 0:
        raise SegRosError(f'--warmup must be >= 0, got {cfg.warmup}')
    what = ('offline: message deserialise + image decode + preprocess + inference + '
            'postprocess, per frame, this process')
    if cfg.warmup:
        what += (f'; after {cfg.warmup} untimed warm-up runs of frame 0 (decoder build, cold '
                 'inference), as live warms up before playback')
    else:
        what += '; no warm-up (--warmup 0): the first frame includes decoder build and cold start'
    extra: dict[str, Any] = {'latency_what': what}
    out_bag = (OutputBag(cfg.out_dir / OUTPUT_BAG_NAME, prep.reader.output_storage,
                         meta.palette) if cfg.write_bag else None)
    warm_ms: list[float] = []
    bar = progress_bar(total=prep.frames, desc='eval-bag', unit='frame', enabled=progress)
    try:
        for index, t, raw, msgtype in image_messages(cfg, prep, out_bag):
            if index == 0:
                for _ in range(cfg.warmup):
                    w0 = time.perf_counter()
                    first = decode_frame(raw, msgtype, index, t, cfg.bag)
                    if first.rgb is not None:
                        seg(first.rgb)
                    warm_ms.append((time.perf_counter() - w0) * 1e3)
            t0 = time.perf_counter()
            frame = decode_frame(raw, msgtype, index, t, cfg.bag)
            if out_bag is not None:
                out_bag.copy(cfg.image_topic, msgtype, t, raw)
            if frame.rgb is None:
                acc.frames_undecodable += 1
                extra.setdefault('undecodable_examples', []).append(
                    f'frame {index}: {frame.error}')
            else:
                result = seg(frame.rgb)
                latency = (time.perf_counter() - t0) * 1e3
                label = None
                if prep.matcher is not None and prep.label_keys[index] is not None:
                    label = prep.matcher.load(prep.label_keys[index])
                    check_label_shape(result.ids, label, index)
                acc.add(index, frame.rgb, result.ids, label, latency,
                        getattr(result, 'timings', None))
                if out_bag is not None:
                    out_bag.add_prediction(result.ids, frame, t)
            acc.frames_read += 1
            bar.update(1)
    except BagReadError as exc:
        extra['error'] = str(exc)
    except BaseException:
        if out_bag is not None:
            out_bag.abort()
        raise
    finally:
        bar.close()
    if out_bag is not None:
        extra['output_bag'] = out_bag.close()
    extra['warmup'] = {'runs': cfg.warmup, 'frame': 0 if cfg.warmup else None,
                       'ms': [round(x, 3) for x in warm_ms]}
    if acc.stage_ms:
        extra['stage_ms_p50'] = {k: float(np.median(v)) for k, v in acc.stage_ms.items()}
    return acc, extra


def build_report(cfg: EvalConfig, prep: Prepared, acc: Accumulator, seg_info: dict[str, Any],
                 extra: dict[str, Any], class_names: list[str]) -> dict[str, Any]:
    """Assemble report.json's content."""
    error = extra.pop('error', None)
    if error is None and acc.frames_read < prep.frames_expected:
        # every readable message was read, yet metadata.yaml promised more: a cut bag
        error = (f'{cfg.bag}: metadata.yaml lists {prep.frames_listed} messages on '
                 f'{cfg.image_topic} but the storage holds only {prep.frames_in_topic}; the '
                 f'bag is incomplete (cut or damaged)')
    sha = bag_sha256(cfg.bag)
    frames: dict[str, Any] = {
        'in_topic': prep.frames_in_topic, 'in_metadata': prep.frames_listed,
        'selected': prep.frames, 'expected': prep.frames_expected, 'read': acc.frames_read,
        'evaluated': acc.frames_evaluated, 'without_label': acc.frames_without_label,
        'undecodable': acc.frames_undecodable}
    frames.update(extra.pop('frames', {}))
    from seg_ros import __version__

    report: dict[str, Any] = {
        'seg_ros_version': __version__,
        'created_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds'),
        'mode': 'live' if cfg.live else 'offline',
        'complete': error is None,
        'error': error,
        'warnings': prep.warnings + extra.pop('warnings', []),
        'config': dict(cfg.to_dict(), labels=prep.matcher.describe() if prep.matcher else None),
        'bag': {'path': str(cfg.bag), 'storage': prep.reader.storage_id, 'sha256': sha['sha256'],
                'files_sha256': sha['files'], 'image_topic': cfg.image_topic,
                'image_msgtype': prep.image_msgtype, 'salvaged': prep.reader.salvaged,
                'form': prep.reader.form.to_dict()},
        'model': seg_info,
        'frames': frames,
        'metrics': metrics_section(acc, class_names),
        'latency_ms': latency_stats(acc.latencies_ms),
    }
    report.update(extra)
    return report


def run_eval(cfg: EvalConfig, progress: bool = True) -> dict[str, Any]:
    """Offline or live evaluation of a bag; writes the report into ``cfg.out_dir``.

    Returns:
        The report dict.

    Raises:
        SegRosError: bad input; for a bag that breaks off after some frames, the partial
            report is written first and the message names it.
    """
    if cfg.rate <= 0:
        raise SegRosError(f'--rate must be > 0, got {cfg.rate}')
    if cfg.image_topic is None:
        raise SegRosError('--image-topic is required')
    model_path = Path(cfg.model)
    if (model_path.suffix in MODEL_SUFFIXES or os.sep in cfg.model) and not model_path.is_file():
        raise SegRosError(f'model file not found: {cfg.model}')
    if cfg.write_bag and (cfg.out_dir / OUTPUT_BAG_NAME).exists():
        raise SegRosError(f'{cfg.out_dir / OUTPUT_BAG_NAME} exists already; choose another '
                          '--out or remove it')
    prep = prepare(cfg)
    try:
        if prep.image_msgtype not in (IMAGE_TYPE, COMPRESSED_TYPE):
            raise SegRosError(f'{cfg.image_topic} is {prep.image_msgtype}, not an image topic')
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
        if cfg.live:
            # The node loads the model; this process needs only its metadata and must not hold
            # a second inference session competing with the node for the CPU.
            from seg_ros.bag.live import evaluate_live

            meta = model_meta(cfg)
            seg_info = {'name': meta.model, 'num_classes': meta.num_classes,
                        'backend': f'{cfg.backend} (in the node)',
                        'input_size': list(cfg.input_size or meta.input_size),
                        'file': cfg.model}
            acc, extra = evaluate_live(cfg, prep, meta, progress=progress)
        else:
            seg = load_segmenter(cfg)
            try:
                meta = seg.meta
                seg_info = {'name': meta.model, 'num_classes': meta.num_classes,
                            'backend': getattr(seg, 'backend_name', cfg.backend),
                            'input_size': list(getattr(seg, 'input_size', None)
                                               or meta.input_size),
                            'file': cfg.model}
                acc, extra = evaluate_offline(cfg, prep, seg, progress=progress)
            finally:
                close = getattr(seg, 'close', None)
                if close is not None:
                    close()
        report = build_report(cfg, prep, acc, seg_info, extra, list(meta.class_names))
        write_report(cfg.out_dir, report, acc, list(meta.class_names),
                     [list(c) for c in meta.palette], plots=cfg.plots)
    finally:
        prep.reader.close()
    if not report['complete']:
        listed = prep.frames_listed
        counts = (f' ({prep.frames_in_topic} readable, metadata.yaml lists {listed})'
                  if listed is not None and listed != prep.frames_in_topic else '')
        raise SegRosError(f'{report["error"]} -- partial report for {acc.frames_read} of '
                          f'{prep.frames_expected} frames{counts} written to '
                          f'{cfg.out_dir}/report.json')
    return report
