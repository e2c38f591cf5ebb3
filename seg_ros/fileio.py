"""File helpers: atomic writes (a crash or kill mid-write leaves the previous file intact) and
YAML reads with one-line errors.

Every file seg_ros rewrites in place (checkpoints, engine caches, sidecars, centroid caches)
goes through :func:`atomic_write`: a temporary file in the same folder, fsync, ``os.replace``.
"""
from __future__ import annotations

from collections.abc import Callable
import os
from pathlib import Path
import re
import tempfile
from typing import Any, BinaryIO

from seg_ros.errors import SegRosError, first_line

# What counts as an image file wherever seg_ros reads a folder of frames (training and eval
# folders, calibration frames, predict, make-bag): what OpenCV's imread decodes.
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.ppm', '.tif', '.tiff', '.webp')


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(f)`` on a temp file beside ``path``, fsync, then rename it over ``path``.

    Args:
        path: destination; its folder is created if needed.
        write: writes the whole content to the binary file object it is given.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 & ~umask).
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# The names atomic_write's mkstemp gives its temp files: '.<name>.' + 8 random characters of
# tempfile's alphabet + '.tmp'.
_TEMP_NAME = re.compile(r'^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$')


def stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Temp files :func:`atomic_write` left in ``folder`` (not below it) when its process was
    killed between creating and renaming them (SIGKILL, power loss: no ``except`` ran)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if _TEMP_NAME.match(p.name) and p.is_file() and not p.is_symlink())


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete :func:`stale_temp_files` of ``folder``; returns what was removed.

    Call it only where no other process is writing into ``folder`` at the same time (e.g. a
    training run at start-up, on its own output folder): a live writer's temp file matches
    the same pattern.
    """
    removed = []
    for path in stale_temp_files(folder):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it; restore at once
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode('utf-8'))


#: Deepest nesting of mappings / sequences :func:`read_yaml` accepts. seg_ros files nest a few
#: levels; the bound turns a hostile file into a clear error before the recursive constructor
#: (which would raise RecursionError, or exhaust a small thread stack) ever sees it.
MAX_YAML_DEPTH = 100
#: Largest YAML file :func:`read_yaml` reads (configs and palettes are a few KB).
MAX_YAML_BYTES = 16 * 2**20


def read_yaml(path: str | os.PathLike[str], missing: str,
              max_bytes: int = MAX_YAML_BYTES) -> Any:
    """Parse a UTF-8 YAML file (``None`` when it is empty).

    Only :class:`SegRosError` leaves this function, whatever the file holds (a binary model
    file, UTF-16 text, a nesting bomb, numbers out of range): the node reads palettes with it
    at run time and must turn every failure into a rejected parameter.

    Args:
        path: the file.
        missing: the error message when it does not exist (say which file the user forgot).
        max_bytes: refuse larger files.

    Raises:
        SegRosError: ``missing``, or ``PATH: <one-line reason>`` (unreadable, not UTF-8, not
            valid YAML, nested deeper than :data:`MAX_YAML_DEPTH`).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SegRosError(missing)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise SegRosError(f'{path}: {size} bytes is too large for a YAML file '
                              f'(limit {max_bytes})')
        data = path.read_bytes()
    except OSError as exc:
        raise SegRosError(f'{path}: cannot read ({exc.strerror or exc})') from None
    text = _decode_utf8(path, data)
    try:
        _check_depth(path, text)
        return yaml.safe_load(text)
    except SegRosError:
        raise
    except yaml.YAMLError as exc:
        reason = first_line(exc) or type(exc).__name__
        raise SegRosError(f'{path}: not valid YAML ({reason})') from None
    except RecursionError:
        raise SegRosError(f'{path}: YAML nested too deeply') from None
    except Exception as exc:  # the constructors raise ValueError/OverflowError on odd scalars
        raise SegRosError(f'{path}: not valid YAML ({type(exc).__name__}: '
                          f'{first_line(exc)})') from None


def _decode_utf8(path: Path, data: bytes) -> str:
    if data.startswith((b'\xff\xfe', b'\xfe\xff')):
        raise SegRosError(f'{path}: is UTF-16 text; save it as UTF-8')
    try:
        text = data.decode('utf-8-sig')
    except UnicodeDecodeError as exc:
        raise SegRosError(f'{path}: not a UTF-8 text file (undecodable byte 0x'
                          f'{data[exc.start]:02x} at offset {exc.start}); is it a binary file '
                          f'such as a model?') from None
    if '\x00' in text:
        raise SegRosError(f'{path}: contains NUL bytes; not a text file (UTF-16 or binary?)')
    return text


def _check_depth(path: Path, text: str) -> None:
    """Walk the parser's events (iterative, no recursion) and bound the nesting depth."""
    import yaml

    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise SegRosError(f'{path}: YAML nested deeper than {MAX_YAML_DEPTH} levels')
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
