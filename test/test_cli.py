"""`seg-ros` CLI: help lists every subcommand, each subcommand has --help, errors are one line."""
from __future__ import annotations

import subprocess
import sys

import pytest

from seg_ros.cli import COMMANDS, main


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(['--help'])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize('name', sorted(COMMANDS))
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, '--help'])
    assert exc.value.code == 0
    assert 'usage: seg-ros ' + name in capsys.readouterr().out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert 'COMMAND' in capsys.readouterr().out


def test_user_error_is_one_line_nonzero():
    proc = subprocess.run([sys.executable, '-m', 'seg_ros.cli', 'fov', 'no_such_model'],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith('seg-ros fov: error:')
    assert 'no_such_model' in lines[0]
