"""Progress bars of the long commands: tqdm on stderr, only where a person watches.

A bar redrawn into a log file or a pipe is a flood of carriage returns, so bars are off when
stderr is not a terminal, when the command got ``--no-progress``, or when
``SEG_ROS_NO_PROGRESS`` is set (``seg-ros --no-progress`` sets it for code that has no
``progress`` argument of its own).
"""
from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ['ENV_OFF', 'progress_bar', 'progress_enabled']

#: set (to anything but '' / '0') to turn every bar off
ENV_OFF = 'SEG_ROS_NO_PROGRESS'


def progress_enabled(wanted: bool = True, stream: Any = None) -> bool:
    """Whether a bar is drawn: ``wanted``, not switched off by :data:`ENV_OFF`, and ``stream``
    (default stderr) is a terminal."""
    if not wanted or os.environ.get(ENV_OFF, '') not in ('', '0'):
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def progress_bar(iterable: Any = None, *, enabled: bool = True, **kwargs: Any) -> Any:
    """``tqdm(iterable, **kwargs)`` on stderr, disabled unless :func:`progress_enabled`."""
    from tqdm import tqdm

    stream = kwargs.pop('file', None) or sys.stderr
    return tqdm(iterable, file=stream, disable=not progress_enabled(enabled, stream), **kwargs)
