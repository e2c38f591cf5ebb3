"""``python -m seg_ros.train CONFIG [--set k=v ...] [--resume]`` (the ``torchrun`` entry)."""
from __future__ import annotations

import argparse
import sys

from seg_ros.errors import SegRosError
from seg_ros.train.commands import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and train; a user error is one line on stderr and exit status 1."""
    parser = argparse.ArgumentParser(prog='python -m seg_ros.train',
                                     description='Train a seg_ros model from a YAML config.')
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (SegRosError, ValueError, OSError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
