"""Argument helpers shared by every ``seg-ros`` subcommand: one vocabulary for one thing.

The command modules of the rooms import this module (it imports nothing of seg_ros but
:mod:`seg_ros.errors`), so ``seg_ros/cli.py`` stays on top of the code it dispatches to.

The vocabulary:

* ``--model``: the model file (.onnx / .engine / checkpoint .pt) or a registered model name;
  commands that took it as the first positional still do.
* ``--weights``: only where it means "a checkpoint for the registered name given as the model".
* ``--size HxW``: the network input size (height x width), printed as HxW everywhere.
* ``--no-progress``: no progress bar (bars are also off when stderr is not a terminal).
* ``--overwrite``: replace outputs that exist; without it an existing output is refused.

Old spellings (``--input-size``, ``eval --weights``) still parse and print a one-line note
naming their replacement.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
import sys
from typing import Any

from seg_ros.errors import SegRosError

__all__ = ['add_model_argument', 'add_overwrite_argument', 'add_progress_argument',
           'add_renamed', 'add_size_argument', 'check_output', 'format_size',
           'non_negative_int', 'parse_size', 'plural', 'positive_int', 'resolve_model',
           'size_type']


def parse_size(text: str, minimum: int = 1) -> tuple[int, int]:
    """``'512x1024'`` -> ``(512, 1024)`` as (height, width): the ``--size`` of every command.

    Raises:
        SegRosError: not ``HxW``, or a side below ``minimum``.
    """
    try:
        h, w = (int(v) for v in str(text).lower().replace('×', 'x').split('x'))
    except ValueError:
        raise SegRosError(f'size must be HxW (e.g. 256x512), got {text!r}') from None
    if h < minimum or w < minimum:
        raise SegRosError(f'size must be at least {minimum}x{minimum}, got {text!r}'
                          if minimum > 1 else f'size must be positive, got {text!r}')
    return h, w


def size_type(minimum: int = 1) -> Callable[[str], tuple[int, int]]:
    """An argparse ``type`` for ``HxW``: refused while parsing, before any model loads, with
    the CLI's one-line error (a :class:`SegRosError` passes through argparse)."""

    def parse(text: str) -> tuple[int, int]:
        return parse_size(text, minimum)

    parse.__name__ = 'HxW size'
    return parse


def format_size(size: Sequence[int]) -> str:
    """``(256, 512)`` -> ``'256x512'``: sizes are always printed height first, as typed."""
    return f'{int(size[0])}x{int(size[1])}'


def plural(n: int, word: str, words: str | None = None) -> str:
    """``plural(1, 'image')`` -> ``'1 image'``, ``plural(2, 'image')`` -> ``'2 images'``."""
    return f'{n} {word if n == 1 else (words or word + "s")}'


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` accepting integers >= ``minimum`` (refused at parse time, with
    argparse's one-line usage error, before any model is loaded)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected an integer, got {text!r}') from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f'must be >= {minimum}, got {value}')
        return value

    parse.__name__ = f'integer >= {minimum}'
    return parse


#: ``type=`` of options that must be >= 1 (``--iters``, ``--threads``, ...).
positive_int = _int_at_least(1)
#: ``type=`` of options that must be >= 0 (``--warmup``, ...).
non_negative_int = _int_at_least(0)


class _Renamed(argparse.Action):
    """An old spelling of an option: stores into the new option's ``dest`` and prints one
    note saying what replaced it (hidden from ``--help``, which lists only the new name)."""

    def __init__(self, option_strings: list[str], dest: str, replaced_by: str = '',
                 store: str = 'value', **kwargs: Any) -> None:
        self.replaced_by, self.store = replaced_by, store
        if store == 'true':
            kwargs['nargs'] = 0
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f'{parser.prog}: note: {option_string} is now {self.replaced_by}',
              file=sys.stderr)
        setattr(namespace, self.dest, True if self.store == 'true' else values)


def add_renamed(p: argparse.ArgumentParser, old: str, new: str, dest: str,
                type: Callable[[str], Any] | None = None, store: str = 'value') -> None:
    """Keep ``old`` working as an alias of ``new`` (same ``dest``), with a note when used."""
    p.add_argument(old, dest=dest, type=type, action=_Renamed, replaced_by=new, store=store,
                   default=argparse.SUPPRESS, help=argparse.SUPPRESS)


#: what the model argument accepts, for help texts
MODEL_FILE = '.onnx / .engine / checkpoint .pt, or a registered model name'


def add_model_argument(p: argparse.ArgumentParser, help: str = MODEL_FILE,
                       positional: bool = False, required: bool = True,
                       metavar: str = 'MODEL', inputs_after: str | None = None) -> None:
    """``--model FILE_OR_NAME`` (and, where it was positional, the first positional too).

    With ``positional`` the value may come either way; :func:`resolve_model` merges them
    after parsing. ``required`` is checked by ``seg-ros`` after parsing (an old spelling
    may have supplied it), with argparse's wording. ``inputs_after`` names a positional list
    that follows the model (``predict MODEL IMAGE...``): with ``--model`` every positional
    is an input.
    """
    if inputs_after:
        p.set_defaults(_inputs_after_model=inputs_after)
    if positional:
        p.add_argument('model_pos', nargs='?', metavar=metavar, default=None,
                       help=f'{help} (or --model)')
    p.add_argument('--model', dest='model', default=None, metavar=metavar,
                   help=f'the same as the positional {metavar}' if positional else help)
    if required:
        _require(p, 'model', '--model' if not positional else metavar)


def _require(p: argparse.ArgumentParser, dest: str, name: str) -> None:
    required = list(p.get_default('_required') or [])
    p.set_defaults(_required=required + [(dest, name)])


def resolve_model(args: argparse.Namespace) -> None:
    """Merge the positional model and ``--model`` into ``args.model`` (in place; ``seg-ros``
    calls it after parsing).

    Raises:
        SegRosError: both were given and differ.
    """
    pos = getattr(args, 'model_pos', None)
    if pos is None:
        return
    inputs = getattr(args, '_inputs_after_model', None)
    if inputs and getattr(args, 'model', None) is not None:
        # `predict --model M A B`: argparse gave A to the optional positional MODEL
        setattr(args, inputs, [pos, *getattr(args, inputs)])
        args.model_pos = None
        return
    if getattr(args, 'model', None) not in (None, pos):
        raise SegRosError(f'two models given: {pos} and --model {args.model}; give one')
    args.model = pos


def missing_required(args: argparse.Namespace) -> list[str]:
    """Names of required arguments still unset after parsing (see :func:`add_model_argument`)."""
    resolve_model(args)
    return [name for dest, name in getattr(args, '_required', None) or []
            if getattr(args, dest, None) is None]


def add_size_argument(p: argparse.ArgumentParser, help: str, default: Any = None,
                      minimum: int = 1, old: Sequence[str] = ()) -> None:
    """``--size HxW`` (parsed to ``(h, w)``), with ``old`` spellings kept as aliases."""
    p.add_argument('--size', type=size_type(minimum), default=default, metavar='HxW',
                   help=help)
    for name in old:
        add_renamed(p, name, '--size', 'size', type=size_type(minimum))


def add_progress_argument(p: argparse.ArgumentParser) -> None:
    """``--no-progress`` (bars are off anyway when stderr is not a terminal)."""
    p.add_argument('--no-progress', action='store_true',
                   help='no progress bar (also off when stderr is not a terminal)')


def add_overwrite_argument(p: argparse.ArgumentParser, what: str = '--out') -> None:
    """``--overwrite``: the one rule of every command that writes files."""
    p.add_argument('--overwrite', action='store_true',
                   help=f'write over an existing {what} (default: refuse it)')


def check_output(path: str | Path | None, overwrite: bool, option: str = '--out') -> None:
    """Refuse an existing output (a file, or a folder with anything in it) unless
    ``--overwrite``: one rule for every command that writes files.

    Raises:
        SegRosError: ``path`` exists and ``overwrite`` is False.
    """
    if path is None:
        return
    p = Path(path)
    exists = p.is_dir() and any(p.iterdir()) or p.exists() and not p.is_dir()
    if exists and not overwrite:
        raise SegRosError(f'{option} {p} already exists; pass --overwrite to replace it')
