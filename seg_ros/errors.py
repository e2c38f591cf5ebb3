"""Exceptions with messages meant for the person at the terminal."""


class SegRosError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""
