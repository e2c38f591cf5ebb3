"""CLI of the architecture searches: ``seg-ros search dilation|rtseg`` and
``seg-ros latency-profile``."""
from __future__ import annotations

import argparse
from dataclasses import asdict
import json
from pathlib import Path
from typing import Any

from seg_ros.arguments import (
    add_overwrite_argument,
    add_progress_argument,
    check_output,
    size_type,
)
from seg_ros.errors import SegRosError

__all__ = ['COMMANDS', 'load_config', 'write_dilation_result']

#: backends latency-profile measures on (= seg_ros.search.latency.BACKENDS)
PROFILE_BACKENDS = ('torch', 'onnxruntime')


def load_config(path: str) -> dict[str, Any]:
    """Read a search config (YAML or JSON) into a dict."""
    from seg_ros.fileio import read_yaml

    p = Path(path)
    data = read_yaml(p, f'search config not found: {p}')
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SegRosError(f'{p}: a search config is a mapping, got {type(data).__name__}')
    return data


def _plot_rates(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    steps = [h['step'] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    nblocks = len(history[0]['rates'])
    for b in range(nblocks):
        for j in range(len(history[0]['rates'][b])):
            ax.plot(steps, [h['rates'][b][j] for h in history],
                    color=f'C{b % 10}', ls='-' if j == 0 else '--',
                    label=f'block {b}' if j == 0 else None)
    ax.set_xlabel('step')
    ax.set_ylabel('dilation rate')
    ax.set_title('RegSeg DNAS: dilation rates (solid / dashed: branch 1 / 2)')
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_dilation_result(result: Any, net: Any, out: Path) -> dict[str, Path]:
    """Write ``dilations.yaml`` (the integer config + FOV), ``searched.pt`` (a seg_ros
    checkpoint of the rounded model carrying the searched weights), ``history.json`` and
    ``rates.png``.

    Returns:
        The written paths by kind.
    """
    import yaml

    from seg_ros.metadata import ModelMeta
    from seg_ros.models.checkpoint import save_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    m = result.metrics
    summary = {
        'model': result.model,
        'arch': result.arch,
        'fov': result.fov,
        'fov_fractional': round(result.fov_fractional, 2),
        'fov_initial': result.fov_initial,
        'gaps': result.gaps,
        'fractional_rates': [[round(r, 4) for r in b] for b in result.fractional_rates],
        'initial_rates': result.initial_rates,
        'toy_accuracy_per_width': m.get('toy_accuracy_per_width', {}),
        'usage': f"create_model('{result.model}', num_classes={m.get('num_classes', 19)}, "
                 f"**arch)",
    }
    paths = {'config': out / 'dilations.yaml', 'checkpoint': out / 'searched.pt',
             'history': out / 'history.json', 'plot': out / 'rates.png'}
    paths['config'].write_text(yaml.safe_dump(summary, sort_keys=False))
    meta = ModelMeta(model=result.model, num_classes=int(m['num_classes']),
                     class_names=list(m['class_names']), palette=list(m['palette']),
                     input_size=list(m['input_size']), arch=result.arch)
    save_checkpoint(paths['checkpoint'], net.integer_state_dict(), meta,
                    extra={'search': 'dilation',
                           'fractional_rates': result.fractional_rates})
    paths['history'].write_text(json.dumps(asdict(result), indent=1))
    _plot_rates(result.history, paths['plot'])
    return paths


# --------------------------------------------------------------------------------------------
# seg-ros search
# --------------------------------------------------------------------------------------------
def add_search_arguments(parser: argparse.ArgumentParser) -> None:
    """``seg-ros search {dilation,rtseg} CONFIG``."""
    parser.add_argument('kind', choices=['dilation', 'rtseg'],
                        help='dilation: RegSeg DNAS on the toy task (regseg.txt Sec. 3.4); '
                             'rtseg: latency-aware width + block search (rtseg.txt Method)')
    parser.add_argument('config', help='search config YAML (see config/search/)')
    parser.add_argument('--out', default=None,
                        help="output folder (default: the config's `out`, else "
                             'runs/search/<kind>)')
    parser.add_argument('--steps', type=int, default=None, help='override train.steps')
    parser.add_argument('--target-ms', type=float, default=None,
                        help='rtseg: target latency in ms (overrides the config)')
    parser.add_argument('--latency-table', default=None,
                        help='rtseg: latency table JSON from `seg-ros latency-profile` '
                             '(overrides the config)')
    add_overwrite_argument(parser, '--out folder')
    add_progress_argument(parser)


def run_search(args: argparse.Namespace) -> int:
    """Run ``seg-ros search``."""
    cfg = load_config(args.config)
    declared = cfg.get('search')
    if declared is not None and declared != args.kind:
        raise SegRosError(f'{args.config} is a `{declared}` search config, not `{args.kind}`')
    if args.steps is not None:
        cfg.setdefault('train', {})['steps'] = int(args.steps)
    out = Path(args.out or cfg.get('out') or f'runs/search/{args.kind}')
    check_output(out, args.overwrite)
    if args.kind == 'dilation':
        from seg_ros.search.dnas import search_dilations

        result, net = search_dilations(cfg, progress=not args.no_progress)
        paths = write_dilation_result(result, net, out)
        print(f'dilation search: {len(result.fractional_rates)} blocks')
        for i, (fr, ir) in enumerate(zip(result.fractional_rates, result.arch['dilations'])):
            print(f'  block {i:2d}: rates {fr[0]:6.3f} {fr[1]:6.3f} -> {ir}')
        print(f'field of view: {result.fov_initial:.0f} (start) -> '
              f'{result.fov_fractional:.1f} (fractional) -> {result.fov:.0f} (rounded'
              f'{", " + str(result.gaps) + " gaps" if result.gaps else ""})')
        acc = result.metrics.get('toy_accuracy_per_width', {}).get('rounded', {})
        if acc:
            print('toy accuracy per width (rounded model, before retraining): ' + ', '.join(
                f'{"bg" if w == 0 else w}: {a:.3f}' for w, a in acc.items()))
        print(f'wrote {paths["config"]} (dilations), {paths["checkpoint"]}, {paths["plot"]}')
        return 0
    from seg_ros.search.rtseg_search import run_rtseg_search_command

    return run_rtseg_search_command(cfg, args, out)


# --------------------------------------------------------------------------------------------
# seg-ros latency-profile
# --------------------------------------------------------------------------------------------
def add_profile_arguments(parser: argparse.ArgumentParser) -> None:
    """``seg-ros latency-profile`` (declared here: seg_ros.search.latency imports torch, and
    --help must not)."""
    parser.add_argument('--backend', default='torch', choices=PROFILE_BACKENDS,
                        help="where to measure (the target device's runtime)")
    parser.add_argument('--config', default=None,
                        help='rtseg search config YAML whose supernet / input size to profile '
                             '(default: config/search/rtseg_cpu.yaml values)')
    parser.add_argument('--size', type=size_type(), default=None, metavar='HxW',
                        help='network input HxW (overrides the config)')
    parser.add_argument('--samples', type=int, default=2000,
                        help='random units to measure (2000: held-out error ~3%% here, 300: ~5%%)')
    parser.add_argument('--models', type=int, default=12,
                        help='random whole subnets to measure (overhead calibration)')
    parser.add_argument('--threads', type=int, default=1, help='torch threads (0: default)')
    parser.add_argument('--repeats', type=int, default=7, help='timed runs per unit and round')
    parser.add_argument('--rounds', type=int, default=5,
                        help='passes over all units; the minimum over all runs is kept')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default='latency_table.json', help='table JSON to write')
    parser.add_argument('--fit', action='store_true',
                        help='also fit the latency MLP (OUT with .pt) and print its error on '
                             'held-out units')
    add_overwrite_argument(parser, '--out file')
    add_progress_argument(parser)


def run_profile(args: argparse.Namespace) -> int:
    """Run ``seg-ros latency-profile``."""
    from seg_ros.search.latency import run_profile_command

    return run_profile_command(args)


COMMANDS = {
    'search': (add_search_arguments, run_search),
    'latency-profile': (add_profile_arguments, run_profile),
}
