"""CLI commands of the model zoo: ``models``, ``fov``, ``convert-official``, ``meta``."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
import json
from typing import Any

from seg_ros.arguments import (
    add_model_argument,
    add_overwrite_argument,
    add_progress_argument,
    add_size_argument,
    check_output,
    format_size,
)
from seg_ros.errors import SegRosError

__all__ = ['COMMANDS', 'TARGETS', 'Target', 'model_rows']


@dataclass(frozen=True)
class Target:
    """The issue-3 acceptance numbers of a model (``None`` = only reported).

    Attributes:
        params: runnable parameters.
        params_tol: relative tolerance of ``params``.
        gmacs: GMACs at ``size``.
        gmacs_tol: relative tolerance of ``gmacs``.
        size: (H, W) of the GMACs figure.
        paper: what the paper / official code says, for the table.
    """

    params: int | None
    params_tol: float
    gmacs: float | None
    gmacs_tol: float
    size: tuple[int, int]
    paper: str


_FULL, _HALF = (1024, 2048), (512, 1024)
#: the official repositories ``convert-official`` reads (= seg_ros.models.convert.FAMILIES)
FAMILIES = ('regseg', 'sfnet-lite')
TARGETS: dict[str, Target] = {
    'regseg48': Target(3_334_951, 0.0, 38.35, 0.005, _FULL,
                       '3.34M, 39.1 GFLOPs (fvcore; 38.35 conv MACs)'),
    'regseg_dnas': Target(None, 0.0, None, 0.0, _FULL, 'Tab. 2, FOV 2399, 78.50 mIoU'),
    'sfnet_lite_r18': Target(12_079_863, 0.005, 177.95, 0.01, _FULL,
                             '12.3M incl. dead (12.08M runnable)'),
    'sfnet_lite_stdc1': Target(6_433_623, 0.005, 74.15, 0.01, _FULL,
                               '9.7M incl. dead (6.43M runnable)'),
    'sfnet_lite_stdc2': Target(10_464_087, 0.005, 100.52, 0.01, _FULL,
                               '13.7M incl. dead (10.46M runnable)'),
    'sfnet_r18': Target(None, 0.0, 243.0, 0.01, _FULL, '12.87M (official code)'),
    'rtseg_s': Target(2_690_000, 0.10, 5.7, 0.10, _HALF, '2.69M, 5.7 GMACs @512x1024'),
    'rtseg_m': Target(3_560_000, 0.10, 9.2, 0.10, _HALF, '3.56M, 9.2 GMACs @512x1024'),
    'rtseg_l': Target(5_550_000, 0.10, 20.8, 0.10, _HALF, '5.55M, 20.8 GMACs @512x1024'),
    'rtseg_supernet': Target(24_400_000, 0.10, 136.0, 0.10, _HALF, '~24.4M, ~136 @512x1024'),
    'eseg_s': Target(6_900_000, 0.10, 34.5, 0.10, _FULL, '6.9M, 34.5B'),
    'eseg_m': Target(20_000_000, 0.10, 112.0, 0.10, _FULL, '20.0M, 112B'),
    'eseg_l': Target(70_500_000, 0.10, 343.0, 0.10, _FULL, '70.5M, 343B'),
}


def _within(value: float, target: float | None, tol: float) -> bool | None:
    if target is None:
        return None
    return abs(value - target) <= tol * target + 1e-9


def model_rows(names: list[str], size: tuple[int, int], progress: bool = True
               ) -> list[dict[str, Any]]:
    """Params, GMACs at ``size`` (and at the paper's size), FOV and target check per model."""
    from seg_ros.models import create_model
    from seg_ros.models.counting import count
    from seg_ros.models.fov import compute_fov
    from seg_ros.progress import progress_bar

    rows = []
    for name in progress_bar(names, desc='counting', enabled=progress):
        row: dict[str, Any] = {'name': name, 'size': list(size)}
        try:
            model = create_model(name)
            c = count(model, size)
            row.update(params=c['params'], gmacs=c['macs'] / 1e9)
            fov = compute_fov(model, size)
            row.update(fov=fov.fov, backbone_fov=fov.backbone_fov, fov_gaps=len(fov.gaps))
            t = TARGETS.get(name)
            if t is not None:
                g_at = (row['gmacs'] if tuple(size) == t.size
                        else count(model, t.size)['macs'] / 1e9)
                row.update(paper=t.paper, target_params=t.params, target_gmacs=t.gmacs,
                           target_size=list(t.size), gmacs_at_target_size=g_at,
                           params_ok=_within(c['params'], t.params, t.params_tol),
                           gmacs_ok=_within(g_at, t.gmacs, t.gmacs_tol))
        except Exception as exc:  # one broken model must not hide the others' numbers
            row['error'] = f'{type(exc).__name__}: {exc}'
        rows.append(row)
    return rows


def _add_models(p: argparse.ArgumentParser) -> None:
    add_size_argument(p, 'network input HxW for GMACs (default 1024x2048)', default=(1024, 2048))
    p.add_argument('--json', action='store_true', help='print a JSON list of objects')
    add_progress_argument(p)
    p.add_argument('names', nargs='*', help='models to show (default: all registered)')


def _ok(v: bool | None) -> str:
    return '' if v is None else ('ok' if v else 'OFF')


def _run_models(args: argparse.Namespace) -> int:
    from seg_ros.models import list_models

    size = args.size
    names = args.names or list_models()
    unknown = [n for n in names if n not in list_models()]
    if unknown:
        raise SegRosError(f'unknown model(s) {", ".join(unknown)}; valid: '
                          f'{", ".join(list_models())}')
    rows = model_rows(names, size, progress=not args.json and not args.no_progress)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f'{"name":18s} {"params":>12s} {"GMACs@" + format_size(size):>16s} {"FOV":>6s} '
              f'{"bb FOV":>6s}  {"target params / GMACs@size":32s} {"GMACs@tgt":>9s} check')
        for r in rows:
            if 'error' in r:
                print(f'{r["name"]:18s} ERROR {r["error"]}')
                continue
            tgt, g_at = '', ''
            if r.get('target_params') or r.get('target_gmacs'):
                tp = f'{r["target_params"]:,}' if r.get('target_params') else '-'
                tg = r.get('target_gmacs')
                tgt = f'{tp} / {tg if tg else "-"}G@{r["target_size"][0]}x{r["target_size"][1]}'
                g_at = f'{r["gmacs_at_target_size"]:.3f}'
            print(f'{r["name"]:18s} {r["params"]:>12,d} {r["gmacs"]:>16.3f} {r["fov"]:>6.0f} '
                  f'{r["backbone_fov"]:>6.0f}  {tgt:32s} {g_at:>9s} '
                  f'{_ok(r.get("params_ok"))} {_ok(r.get("gmacs_ok"))}')
    return 1 if any('error' in r for r in rows) else 0


def _add_fov(p: argparse.ArgumentParser) -> None:
    add_model_argument(p, 'registered model name', positional=True)
    add_size_argument(p, 'network input HxW (default 1024x2048)', default=(1024, 2048))
    p.add_argument('--dilations', default=None,
                   help='RegSeg only: JSON list of per-block rates, e.g. "[[1,2],[1,4],...]"')
    p.add_argument('--json', action='store_true', help='print JSON')


def _run_fov(args: argparse.Namespace) -> int:
    from seg_ros.models import create_model
    from seg_ros.models.fov import compute_fov

    overrides: dict[str, Any] = {}
    if args.dilations:
        try:
            overrides['dilations'] = json.loads(args.dilations)
        except json.JSONDecodeError as exc:
            raise SegRosError(f'--dilations is not valid JSON: {exc}') from exc
    rep = compute_fov(create_model(args.model, **overrides), args.size)
    if args.json:
        print(json.dumps(rep.to_dict(), indent=1))
        return 0
    print(f'{"layer":44s} {"op":4s} {"k":>2s} {"s":>2s} {"r":>3s} {"k_in":>6s} {"s_in":>5s} '
          f'{"k/s":>7s} {"FOV":>6s}')
    for layer in rep.layers:
        bound = layer.k_in / layer.s_in
        flag = '  GAP: r > k/s' if layer.gap else ''
        print(f'{layer.name[:44]:44s} {layer.op:4s} {layer.kernel:>2d} {layer.stride:>2d} '
              f'{layer.dilation:>3d} {layer.k_in:>6.0f} {layer.s_in:>5g} {bound:>7.2f} '
              f'{layer.k_out:>6.0f}{flag}')
    print(f'\nbackbone field of view: {rep.backbone_fov:.0f}   output field of view: '
          f'{rep.fov:.0f}   dilated convs with gaps (r > k/s, Eq. 3): {len(rep.gaps)}')
    return 0


def _add_convert(p: argparse.ArgumentParser) -> None:
    # the families are listed here, not imported from seg_ros.models.convert: --help must not
    # import torch (test_cli checks both lists agree)
    p.add_argument('family', choices=FAMILIES, help='which official repository')
    p.add_argument('ckpt', help='official checkpoint (.pth)')
    p.add_argument('--out', required=True, help='seg_ros checkpoint to write')
    p.add_argument('--model', default=None,
                   help='registered model name to convert into (default: detected from the '
                        'keys)')
    p.add_argument('--dataset', default='cityscapes', choices=('cityscapes', 'camvid'),
                   help='class set of the weights (default cityscapes)')
    add_size_argument(p, 'network input HxW stored in the checkpoint (default 1024x2048)',
                      default=(1024, 2048), old=('--input-size',))
    add_overwrite_argument(p, '--out file')


def _run_convert(args: argparse.Namespace) -> int:
    from seg_ros.models.convert import convert_official

    check_output(args.out, args.overwrite)
    res = convert_official(args.family, args.ckpt, args.out, args.model, args.dataset,
                           args.size)
    print(f'{res["model"]}: {res["tensors"]} tensors, {res["num_classes"]} classes, '
          f'{len(res["dropped"])} dead official tensors dropped -> {res["out"]}')
    return 0


def _add_meta(p: argparse.ArgumentParser) -> None:
    add_model_argument(p, 'seg_ros checkpoint (.pt)', positional=True, metavar='CHECKPOINT')
    add_size_argument(p, 'store this serving size (network input HxW) in a copy of the '
                         'checkpoint written to --out; the weights are unchanged')
    p.add_argument('--out', default=None, help='checkpoint to write (with --size)')
    add_overwrite_argument(p, '--out file')


def _run_meta(args: argparse.Namespace) -> int:
    from seg_ros.models.checkpoint import load_checkpoint, restamp_checkpoint

    if (args.size is None) != (args.out is None):
        raise SegRosError('--size and --out go together: --size HxW --out NEW.pt writes a copy '
                          'served at HxW')
    if args.size is None:
        meta = load_checkpoint(args.model)['meta']
        print(json.dumps(meta.to_dict(), indent=1))
        return 0
    check_output(args.out, args.overwrite)
    meta = restamp_checkpoint(args.model, args.out, args.size)
    print(f'wrote {args.out} ({meta.model}, served at {format_size(meta.input_size)})')
    return 0


COMMANDS = {
    'models': (_add_models, _run_models),
    'fov': (_add_fov, _run_fov),
    'convert-official': (_add_convert, _run_convert),
    'meta': (_add_meta, _run_meta),
}
