"""Type-check the TensorRT module against ``tensorrt-stubs`` (``make typecheck``).

TensorRT cannot be installed on the CI machines, so its API use is checked statically: mypy
runs on :mod:`seg_ros.runtime.trt_backend` with the stubs of ``tensorrt-stubs==10.13.0.35.1``
(installed with ``--no-deps``: its dependency is the real TensorRT). The published stubs do
not parse as they are: seven parameters are named ``in`` (a keyword) and one non-default
parameter follows default ones. This script copies the stubs to ``.typings/``, repairs those
syntax errors (and only those), writes a mypy config that ignores errors *inside* the stubs,
and runs mypy. Exit status is mypy's: non-zero on any type error in the checked files.

Usage: ``python -m seg_ros.runtime.typecheck [FILE ...]`` (default: the TensorRT module).
"""
from __future__ import annotations

import argparse
import ast
from importlib import metadata
from pathlib import Path
import re
import subprocess
import sys

STUBS_DIST = 'tensorrt-stubs'
STUBS_VERSION = '10.13.0.35.1'
STUB_PACKAGES = ('tensorrt', 'tensorrt_bindings')
ROOT = Path(__file__).resolve().parents[2]
TYPINGS = ROOT / '.typings'
DEFAULT_FILES = (ROOT / 'seg_ros' / 'runtime' / 'trt_backend.py',)

MYPY_CONFIG = """\
# Written by `python -m seg_ros.runtime.typecheck`; do not edit.
[mypy]
mypy_path = {typings}
python_version = 3.10
follow_imports = silent
disallow_untyped_defs = True
check_untyped_defs = True
warn_unused_ignores = True
warn_redundant_casts = True
no_implicit_optional = True
cache_dir = {cache}

# Errors inside the (generated) stubs are theirs, not ours.
[mypy-tensorrt.*]
ignore_errors = True

[mypy-tensorrt_bindings.*]
ignore_errors = True
"""

_IN_PARAM = re.compile(r'(?<=[(,\s])in(?=\s*:)')


def fix_keyword_params(source: str) -> tuple[str, int]:
    """Rename parameters called ``in`` in ``def`` lines to ``in_``; returns (text, count)."""
    count = 0
    lines = source.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.lstrip().startswith('def '):
            new, n = _IN_PARAM.subn('in_', line)
            if n:
                lines[i] = new
                count += n
    return ''.join(lines), count


def fix_default_order(source: str, max_fixes: int = 50) -> tuple[str, int]:
    """Give ``= ...`` defaults to non-default parameters that follow default ones.

    Repeats parse -> fix the reported line until the file parses (at most ``max_fixes``).
    """
    count = 0
    for _ in range(max_fixes):
        try:
            ast.parse(source)
            return source, count
        except SyntaxError as exc:
            if 'non-default argument follows default argument' not in str(exc.msg) and \
                    'parameter without a default follows parameter with a default' \
                    not in str(exc.msg):
                raise
            lines = source.splitlines(keepends=True)
            idx = (exc.lineno or 1) - 1
            lines[idx] = _default_params(lines[idx])
            source = ''.join(lines)
            count += 1
    raise RuntimeError('stub repair did not converge')


def _default_params(line: str) -> str:
    head, sep, rest = line.partition('(')
    params, close, tail = rest.rpartition(')')
    out, seen_default, depth, start = [], False, 0, 0
    parts = []
    for j, ch in enumerate(params):  # split on top-level commas only
        if ch in '([{':
            depth += 1
        elif ch in ')]}':
            depth -= 1
        elif ch == ',' and depth == 0:
            parts.append(params[start:j])
            start = j + 1
    parts.append(params[start:])
    for p in parts:
        name = p.strip()
        if '=' in name:
            seen_default = True
        elif seen_default and name and not name.startswith('*') and name != '/':
            p = f'{p.rstrip()} = ...'
        out.append(p)
    return f'{head}{sep}{",".join(out)}{close}{tail}'


def prepare_typings(typings: Path = TYPINGS) -> int:
    """Copy and repair the installed stubs into ``typings``; returns the number of fixes."""
    try:
        dist = metadata.distribution(STUBS_DIST)
    except metadata.PackageNotFoundError:
        raise SystemExit(f'{STUBS_DIST} is not installed: pip install --no-deps '
                         f'{STUBS_DIST}=={STUBS_VERSION} (make setup does)') from None
    if dist.version != STUBS_VERSION:
        print(f'warning: {STUBS_DIST} {dist.version} installed, checked against '
              f'{STUBS_VERSION}', file=sys.stderr)
    fixes = 0
    for f in dist.files or []:
        if f.parts[0] not in STUB_PACKAGES or f.suffix != '.pyi':
            continue
        text = Path(str(dist.locate_file(f))).read_text()
        text, n_in = fix_keyword_params(text)
        text, n_def = fix_default_order(text)
        fixes += n_in + n_def
        dest = typings / Path(*f.parts)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.is_file() or dest.read_text() != text:
            dest.write_text(text)
    return fixes


def main(argv: list[str] | None = None) -> int:
    """Prepare the stubs and run mypy; returns mypy's exit status."""
    parser = argparse.ArgumentParser(prog='python -m seg_ros.runtime.typecheck',
                                     description=__doc__.splitlines()[0])
    parser.add_argument('files', nargs='*', help='files to check (default: trt_backend.py)')
    parser.add_argument('--typings', default=str(TYPINGS), help='where repaired stubs go')
    args = parser.parse_args(argv)
    typings = Path(args.typings)
    fixes = prepare_typings(typings)
    config = typings / 'mypy.ini'
    config.write_text(MYPY_CONFIG.format(typings=typings, cache=typings / '.mypy_cache'))
    files = [str(f) for f in (args.files or DEFAULT_FILES)]
    print(f'typecheck: {STUBS_DIST} stubs in {typings} ({fixes} syntax repairs); mypy on '
          f'{", ".join(Path(f).name for f in files)}', flush=True)
    return subprocess.call([sys.executable, '-m', 'mypy', '--config-file', str(config),
                            *files], cwd=ROOT)


if __name__ == '__main__':
    sys.exit(main())
