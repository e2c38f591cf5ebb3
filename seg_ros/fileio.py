"""File helpers: atomic writes (a crash or kill mid-write leaves the previous file intact) and
YAML reads with one-line errors.

Every file seg_ros rewrites in place (checkpoints, engine caches, sidecars, centroid caches)
goes through :func:`atomic_write`: a temporary file in the same folder, fsync, ``os.replace``.
"""
from __future__ import annotations

from collections.abc import Callable
import os
from pathlib import Path
import tempfile
from typing import Any, BinaryIO

from seg_ros.errors import SegRosError


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


def read_yaml(path: str | os.PathLike[str], missing: str) -> Any:
    """Parse a YAML file (``None`` when it is empty).

    Args:
        path: the file.
        missing: the error message when it does not exist (say which file the user forgot).

    Raises:
        SegRosError: ``missing``, or ``PATH: not valid YAML (first line of the parser error)``.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SegRosError(missing)
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SegRosError(f'{path}: not valid YAML ({str(exc).splitlines()[0]})') from None
