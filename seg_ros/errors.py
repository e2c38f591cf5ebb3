"""Exceptions with messages meant for the person at the terminal."""
from __future__ import annotations

import re

_ANSI = re.compile(r'\x1b\[[0-9;?]*[ -/]*[@-~]')


class SegRosError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour codes (torch colours parts of its messages)."""
    return _ANSI.sub('', text)


def first_line(text: object) -> str:
    """First non-empty line of ``str(text)`` (an exception or a message), stripped of colour
    codes and surrounding space; ``''`` when there is none. Other libraries' exceptions often
    span many lines; seg_ros quotes only this one in its one-line errors."""
    for line in strip_ansi(str(text)).splitlines():
        if line.strip():
            return line.strip()
    return ''
