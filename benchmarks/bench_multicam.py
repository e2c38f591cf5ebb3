"""Benchmark of multi_camera_segmentation_node (issue 19): one batched node vs N single nodes.

    .venv/bin/python benchmarks/bench_multicam.py --cameras 2 4 6 --size 256x512 \\
        --seconds 60 --out benchmarks/results/multicam

For each camera count N, this process publishes N synchronised cameras at ``--rate`` Hz
(sensor-data QoS, like camera drivers; one stamp per tick shared by all cameras) to

1. one ``multi_camera_segmentation_node`` serving all N cameras (one model, batched), and
2. N ``segmentation_node`` processes, one per camera (today's ``multi_camera.launch.py``),

one setup at a time, and records every mask that comes back. Figures per setup: output
frames/s per camera and in total, end-to-end latency (publish here -> mask received here)
p50/p99, and the total resident memory of the node processes (sampled every second; mean and
max over the measured window). ``--rounds`` R alternates the two setups R times (batched,
singles, batched, ...): a shared 2-core VM drifts by +-10 % within minutes, so every figure is
the median of the rounds and the JSON keeps each round and each round's ratio. Equal thread
budget: the batched node gets ``--threads`` inference threads, each single node
``max(1, threads // N)`` (the JSON says when N single nodes oversubscribe the budget because
one thread each is already more). ``--backend`` defaults to what both nodes pick on a CPU
(``backend auto``): OpenVINO when installed (bf16 on CPUs with native bf16; the batched node
splits its batch over one stream per thread), else ONNX Runtime.

The model is the shipped checkpoint ``models/regseg48_synthetic.pt`` exported once with a
dynamic batch axis (the shipped ``.onnx`` has a fixed batch of 1; same weights), or
``--model`` (an ONNX file). Camera frames are synthetic drive frames at ``--size``, resized
by the nodes to the network input. Writes ``bench_multicam.json`` and ``bench_multicam.png``
to ``--out``. The machine may be shared: the JSON records the load average around each run.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import sys
import time
from typing import Any

import numpy as np
from tqdm import tqdm

from seg_ros.runtime.cpu import cpu_info
from seg_ros.testing.node_harness import NodeProcess, RosClient, make_image, rss_mib
from seg_ros.testing.ros_env import ros_environment

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CHECKPOINT = ROOT / 'models' / 'regseg48_synthetic.pt'
MULTI_NODE = '/multi_camera_segmentation_node'


def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split('x')
    return int(h), int(w)


def export_dynamic(checkpoint: Path) -> Path:
    """``checkpoint`` exported to ONNX with a dynamic batch axis, cached (not in --out)."""
    import hashlib

    from seg_ros.runtime.segmenter import default_cache_dir

    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:16]
    path = default_cache_dir() / 'bench_multicam' / f'{checkpoint.stem}-dynamic-{digest}.onnx'
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    from seg_ros.runtime.export import export_onnx, load_model_and_meta

    print(f'exporting {checkpoint} with a dynamic batch axis to {path} (once)', flush=True)
    net, meta = load_model_and_meta(str(checkpoint), None, None)
    tmp = path.with_name(path.name + f'.pid{os.getpid()}.tmp.onnx')
    export_onnx(net, meta, tmp, size=tuple(meta.input_size), dynamic_batch=True)
    tmp.replace(path)
    return path


def _common_args(model: Path, threads: int, backend: str) -> list[str]:
    return ['-p', f'model:={model.resolve()}', '-p', f'backend:={backend}', '-p', 'device:=cpu',
            '-p', f'threads:={threads}', '-p', 'no_input_warn_s:=0.0']


def start_batched(model: Path, n: int, threads: int, backend: str,
                  log_dir: Path) -> tuple[list[NodeProcess], dict[str, str]]:
    """One multi-camera node for cameras cam0..cam{n-1}; returns (processes, mask topics)."""
    names = [f'cam{i}' for i in range(n)]
    proc = NodeProcess([*_common_args(model, threads, backend),
                        '-p', f'cameras:=[{",".join(names)}]'],
                       log_dir / f'batched_{n}.log', env=dict(os.environ),
                       module='seg_ros.ros.multicam_node')
    return [proc], {c: f'{MULTI_NODE}/{c}/mask' for c in names}


def start_singles(model: Path, n: int, threads: int, backend: str,
                  log_dir: Path) -> tuple[list[NodeProcess], dict[str, str]]:
    """One segmentation node per camera, in namespace /camK (as multi_camera.launch.py)."""
    procs, topics = [], {}
    for i in range(n):
        name = f'cam{i}'
        procs.append(NodeProcess([*_common_args(model, threads, backend),
                                  '-r', f'__ns:=/{name}', '-r', f'image:=/{name}/image_raw'],
                                 log_dir / f'single_{n}_{name}.log', env=dict(os.environ)))
        topics[name] = f'/{name}/segmentation_node/mask'
    return procs, topics


def measure(procs: list[NodeProcess], topics: dict[str, str], frames: list[np.ndarray],
            rate: float, warmup_s: float, seconds: float, label: str,
            progress: bool = True) -> dict[str, Any]:
    """Stream every camera at ``rate`` Hz; per-camera fps, latency, total RSS."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    client = RosClient('bench_multicam_' + ''.join(ch if ch.isalnum() else '_' for ch in label))
    try:
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        pubs = {c: client.node.create_publisher(Image, f'/{c}/image_raw',
                                                qos_profile_sensor_data) for c in topics}
        for topic in topics.values():
            client.record(topic, Image, reliable, keep=True)

        def ready() -> bool:
            return (all(p.alive() for p in procs)
                    and all(pub.get_subscription_count() > 0 for pub in pubs.values())
                    and all(client.node.count_publishers(t) > 0 for t in topics.values()))
        if not client.spin_until(ready, 300):
            logs = '\n'.join(p.log()[-1500:] for p in procs)
            raise RuntimeError(f'{label}: nodes did not start:\n{logs}')
        msgs = {c: [make_image(f, frame_id=c) for f in frames] for c in topics}
        sent: dict[int, int] = {}
        rss: list[tuple[float, float]] = []
        load_start = os.getloadavg()
        period = 1.0 / rate
        start = time.monotonic()
        measure_from = start + warmup_s
        end = measure_from + seconds
        next_pub, next_rss, tick = start, measure_from, 0
        bar = tqdm(total=int(warmup_s + seconds), desc=label, unit='s', leave=False,
                   disable=not (progress and sys.stdout.isatty()))
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_pub:
                stamp = time.time_ns()  # one stamp per tick: the cameras are synchronised
                sent_at = time.monotonic_ns()
                for c, pub in pubs.items():
                    msg = msgs[c][tick % len(frames)]
                    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
                    pub.publish(msg)
                if now >= measure_from:
                    sent[stamp] = sent_at
                tick += 1
                next_pub += period
                if next_pub < now - 1.0:  # this process fell far behind: no burst
                    next_pub = now + period
            if now >= next_rss:
                rss.append((now - measure_from, sum(rss_mib(p.pid()) for p in procs)))
                next_rss += 1.0
                bar.update(int(now - start) - bar.n)
            client.executor.spin_once(timeout_sec=max(0.0, min(next_pub, next_rss)
                                                      - time.monotonic()))
            for topic in topics.values():  # keep only arrival times: bounded memory
                client.received[topic].clear()
        client.spin_for(2.0)  # answers still in flight
        bar.close()
        per_camera, all_lat = {}, []
        for c, topic in topics.items():
            arrival = client.arrival_ns[topic]
            lat = [(arrival[s] - t) / 1e6 for s, t in sent.items() if s in arrival]
            all_lat += lat
            per_camera[c] = {'answered': len(lat), 'fps': len(lat) / seconds,
                             'latency_p50_ms': float(np.percentile(lat, 50)) if lat else None,
                             'latency_p99_ms': float(np.percentile(lat, 99)) if lat else None}
        mem = [m for _, m in rss]
        return {
            'published_per_camera': len(sent), 'publish_rate_hz': len(sent) / seconds,
            'per_camera': per_camera,
            'fps_per_camera_mean': float(np.mean([v['fps'] for v in per_camera.values()])),
            'fps_total': float(sum(v['fps'] for v in per_camera.values())),
            'latency_p50_ms': float(np.percentile(all_lat, 50)) if all_lat else None,
            'latency_p99_ms': float(np.percentile(all_lat, 99)) if all_lat else None,
            'rss_total_mib_mean': float(np.mean(mem)) if mem else None,
            'rss_total_mib_max': float(np.max(mem)) if mem else None,
            'processes': len(procs), 'load_avg_start': load_start,
            'load_avg_end': os.getloadavg()}
    finally:
        client.close()


def median_run(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-key median of ``measure`` results (numbers only; the rest from round 1)."""
    out = dict(rounds[0])
    for key, value in rounds[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            vals = [r[key] for r in rounds if r.get(key) is not None]
            out[key] = float(np.median(vals)) if vals else None
    out['rounds'] = len(rounds)
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    """Per-camera fps, latency p50/p99 and total RSS per camera count, batched vs singles."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    counts = sorted(int(n) for n in result['runs'])
    x = np.arange(len(counts))
    width = 0.38
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.5))
    for k, (mode, label) in enumerate((('batched', '1 batched node'),
                                       ('singles', 'N single nodes'))):
        runs = [result['runs'][str(n)][mode] for n in counts]
        off = (k - 0.5) * width
        a.bar(x + off, [r['fps_per_camera_mean'] for r in runs], width, label=label)
        p50 = [r['latency_p50_ms'] or 0.0 for r in runs]
        p99 = [r['latency_p99_ms'] or 0.0 for r in runs]
        b.bar(x + off, p50, width, label=f'{label} p50')
        b.scatter(x + off, p99, marker='_', s=400, color='k' if k else 'r',
                  label=f'{label} p99', zorder=3)
        c.bar(x + off, [r['rss_total_mib_mean'] or 0.0 for r in runs], width, label=label)
    a.axhline(result['config']['rate_hz'], color='k', ls=':', label='camera rate')
    # legends where the bars are lowest: fps falls with N, latency and memory grow
    for ax, title, ylabel, where in ((a, 'output per camera', 'frames/s', 'center right'),
                                     (b, 'end-to-end latency', 'ms', 'upper left'),
                                     (c, 'total resident memory', 'MiB', 'upper left')):
        ax.set_xticks(x)
        ax.set_xticklabels([f'N={n}' for n in counts])
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8, loc=where)
    cfg = result['config']
    fig.suptitle(f'multi_camera_segmentation_node vs N segmentation_node, {cfg["model_name"]} '
                 f'{cfg["network_input"]}, frames {cfg["size"]} at {cfg["rate_hz"]:g} Hz, '
                 f'{cfg["backend"]} CPU, {cfg["threads"]}-thread budget, {cfg["cpus"]} CPUs'
                 f'; median of {cfg.get("rounds", 1)} rounds')
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints a summary and writes JSON + PNG."""
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--model', type=Path,
                   help='ONNX file (default: the shipped checkpoint exported with a dynamic '
                        'batch axis)')
    p.add_argument('--cameras', type=int, nargs='+', default=[2, 4, 6])
    p.add_argument('--size', type=_size, default=(256, 512), help='camera frame HxW')
    p.add_argument('--rate', type=float, default=30.0, help='camera rate (Hz)')
    p.add_argument('--threads', type=int, default=os.cpu_count() or 1,
                   help='inference thread budget (the batched node; split among singles)')
    p.add_argument('--backend', choices=('onnxruntime', 'openvino'),
                   help="default: the nodes' CPU default (backend auto): openvino when "
                        'installed, else onnxruntime')
    p.add_argument('--warmup-s', type=float, default=5.0)
    p.add_argument('--seconds', type=float, default=30.0, help='measured seconds per setup')
    p.add_argument('--rounds', type=int, default=3,
                   help='alternations of the two setups per camera count (medians reported)')
    p.add_argument('--out', type=Path, default=ROOT / 'benchmarks' / 'results' / 'multicam')
    p.add_argument('--no-progress', action='store_true', help='no progress bars')
    args = p.parse_args(argv)
    if args.backend is None:
        from seg_ros.runtime.backends import openvino_installed

        args.backend = 'openvino' if openvino_installed() else 'onnxruntime'
    args.out.mkdir(parents=True, exist_ok=True)

    env = ros_environment()
    os.environ.update({k: env[k] for k in ('ROS_DOMAIN_ID', 'RMW_IMPLEMENTATION',
                                           'FASTDDS_DEFAULT_PROFILES_FILE',
                                           'FASTRTPS_DEFAULT_PROFILES_FILE',
                                           'ROS_AUTOMATIC_DISCOVERY_RANGE')})
    model = args.model if args.model else export_dynamic(SHIPPED_CHECKPOINT)
    from seg_ros.data.synthetic import SyntheticDrive
    from seg_ros.runtime.segmenter import Segmenter

    with Segmenter.from_file(str(model), backend='onnxruntime', device='cpu', threads=1) as seg:
        meta_name, net = seg.meta.model, seg.input_size
        max_batch = seg.backend.max_batch
    cpu = cpu_info().summary()
    drive = SyntheticDrive(size=args.size, seed=7)
    frames = [drive.frame(i)[0] for i in range(6)]
    result: dict[str, Any] = {'config': {
        'model': str(model), 'model_name': meta_name,
        'network_input': f'{net[0]}x{net[1]}', 'model_max_batch': int(max_batch),
        'size': f'{args.size[0]}x{args.size[1]}', 'rate_hz': args.rate,
        'threads': args.threads, 'backend': args.backend, 'warmup_s': args.warmup_s,
        'seconds': args.seconds, 'rounds': args.rounds, 'cpus': os.cpu_count(),
        'cpu': cpu, 'command': ' '.join(sys.argv)},
        'runs': {}}
    log_dir = args.out / 'logs'
    log_dir.mkdir(exist_ok=True)
    print(f'CPU: {cpu}; {os.cpu_count()} cores', flush=True)
    for n in args.cameras:
        single_threads = max(1, args.threads // n)
        run: dict[str, Any] = {'single_node_threads': single_threads,
                               'singles_oversubscribe': single_threads * n > args.threads}
        rounds: dict[str, list[dict[str, Any]]] = {'batched': [], 'singles': []}
        for k in range(args.rounds):
            for mode, starter, threads in (('batched', start_batched, args.threads),
                                           ('singles', start_singles, single_threads)):
                procs, topics = starter(model, n, threads, args.backend, log_dir)
                label = f'N={n} {mode} round {k + 1}/{args.rounds}'
                try:
                    r = measure(procs, topics, frames, args.rate, args.warmup_s,
                                args.seconds, label, not args.no_progress)
                finally:
                    r_exit = [proc.stop() for proc in procs]
                r['exit_status'] = r_exit
                rounds[mode].append(r)
                print(f'{label}: {r["fps_per_camera_mean"]:.2f} fps/camera, total '
                      f'{r["fps_total"]:.2f} fps, latency p50 {r["latency_p50_ms"]:.0f} ms '
                      f'p99 {r["latency_p99_ms"]:.0f} ms, RSS {r["rss_total_mib_mean"]:.0f} '
                      'MiB', flush=True)
        for mode in rounds:
            run[mode] = median_run(rounds[mode])
            run[mode + '_rounds'] = rounds[mode]
        run['round_throughput_ratios'] = [
            b['fps_total'] / s['fps_total'] if s['fps_total'] else None
            for b, s in zip(rounds['batched'], rounds['singles'])]
        b, s = run['batched'], run['singles']
        run['ratios'] = {
            'rss_batched_over_singles': b['rss_total_mib_mean'] / s['rss_total_mib_mean'],
            'throughput_batched_over_singles': (b['fps_total'] / s['fps_total']
                                                if s['fps_total'] else None)}
        result['runs'][str(n)] = run
    if '4' in result['runs']:
        r4 = result['runs']['4']['ratios']
        result['targets_n4'] = {
            'rss_ratio': r4['rss_batched_over_singles'], 'rss_target': 0.4,
            'rss_met': r4['rss_batched_over_singles'] <= 0.4,
            'throughput_ratio': r4['throughput_batched_over_singles'],
            'throughput_target': 1.0,
            'throughput_met': (r4['throughput_batched_over_singles'] or 0.0) >= 1.0,
            'latency_p99_batched_ms': result['runs']['4']['batched']['latency_p99_ms']}
    (args.out / 'bench_multicam.json').write_text(json.dumps(result, indent=1))
    plot(result, args.out / 'bench_multicam.png')
    print(json.dumps({n: r['ratios'] for n, r in result['runs'].items()}, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
