"""One CLI vocabulary (issue 17): every subcommand's --help uses the same names for the same
things, old spellings still work and say what replaced them, long commands take
--no-progress, writers refuse existing outputs without --overwrite, --help stays torch-free."""
from __future__ import annotations

import argparse
import io
from pathlib import Path
import subprocess
import sys

import pytest

from seg_ros import arguments
from seg_ros.cli import COMMANDS, build_parser, main
from seg_ros.progress import ENV_OFF, progress_enabled

# commands that run long enough for a progress bar
LONG = {'models', 'bench', 'predict', 'quantize', 'synth', 'train', 'eval', 'make-bag',
        'eval-bag', 'search', 'latency-profile', 'demo', 'extract-frames'}
# commands that write files (and take --overwrite); build-engine has its cache + --rebuild,
# train its run folder + --resume
WRITERS = {'convert-official', 'meta', 'export', 'predict', 'quantize', 'synth', 'eval',
           'make-bag', 'eval-bag', 'search', 'latency-profile', 'demo', 'extract-frames'}
# spellings that name a thing the vocabulary names otherwise
FORBIDDEN = {'--input-size': '--size', '--network-size': '--size', '--force': '--overwrite',
             '--no-progress-bar': '--no-progress', '--quiet': '--no-progress',
             '--onnx': '--model', '--checkpoint': '--model', '--ckpt': '--model'}


def _actions(name: str) -> list[argparse.Action]:
    parser = build_parser(name)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [a for a in sub.choices[name]._actions if a.help != argparse.SUPPRESS]


@pytest.mark.parametrize('name', sorted(COMMANDS))
def test_help_uses_one_name_per_thing(name: str) -> None:
    actions = _actions(name)
    flags = {s for a in actions for s in a.option_strings}
    for bad, good in FORBIDDEN.items():
        assert bad not in flags, f'{name}: {bad} is spelled {good}'
    for a in actions:
        text = (a.help or '').lower()
        if 'network input hxw' in text:  # the network size is --size HxW everywhere
            assert a.option_strings == ['--size'] and a.metavar == 'HxW', (name, a)
        if a.option_strings == ['--size']:  # every size is typed and printed height first
            assert a.metavar == 'HxW' and 'hxw' in text, (name, a)
        if a.dest == 'weights':  # only the "checkpoint for a registered name" meaning
            assert 'registered model name' in text, (name, a.help)
        if a.dest in ('model', 'model_pos') and a.option_strings:
            assert a.option_strings == ['--model'], (name, a.option_strings)
    if any(a.dest == 'model_pos' for a in actions):  # positional MODEL also as --model
        assert '--model' in flags, name
    if name in LONG:
        assert '--no-progress' in flags, name
    if name in WRITERS:
        assert '--overwrite' in flags, name
    assert '--model' in flags or name in {
        'models', 'synth', 'train', 'make-bag', 'search', 'latency-profile', 'convert-official',
        'extract-frames'}, name


@pytest.mark.parametrize('argv,note', [
    (['eval', '--weights', 'm.onnx', '--data', 'synthetic:val'], '--weights is now --model'),
    (['eval', '--model', 'm.onnx', '--input-size', '32x64', '--data', 'synthetic'],
     '--input-size is now --size'),
    (['eval-bag', 'b', '--model', 'm.onnx', '--input-size', '32x64', '--image-topic', '/x',
      '--out', 'o'], '--input-size is now --size'),
    (['convert-official', 'regseg', 'c.pth', '--out', 'o.pt', '--input-size', '32x64'],
     '--input-size is now --size'),
])
def test_old_spellings_parse_and_name_their_replacement(argv: list[str], note: str,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    args = build_parser(argv[0]).parse_args(argv)
    err = capsys.readouterr().err
    assert err.strip() == f'seg-ros {argv[0]}: note: {note}'
    if '--weights' in argv:
        assert args.model == 'm.onnx'
    else:
        assert args.size == (32, 64)


def test_model_positional_or_option_and_required(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    ns = build_parser('predict').parse_args(['predict', '--model', 'm.onnx', 'a.png', 'b.png',
                                             '--out', 'o'])
    assert arguments.missing_required(ns) == [] and ns.model == 'm.onnx'
    assert ns.images == ['a.png', 'b.png']
    ns = build_parser('export').parse_args(['export', 'regseg48', '--out', 'x.onnx'])
    assert arguments.missing_required(ns) == [] and ns.model == 'regseg48'
    assert main(['eval', '--data', 'synthetic:val']) == 2
    assert 'the following arguments are required: --model' in capsys.readouterr().err
    assert main(['export', 'a.pt', '--model', 'b.pt', '--out', str(tmp_path / 'x.onnx')]) == 1
    assert 'two models given' in capsys.readouterr().err


def test_help_of_light_commands_imports_no_torch() -> None:
    code = ('import sys\nfrom seg_ros.cli import main\n'
            "for c in ('models', 'fov', 'convert-official', 'meta', 'latency-profile'):\n"
            '    try:\n        main([c, "--help"])\n    except SystemExit:\n        pass\n'
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == 'NO-TORCH'


def test_convert_families_listed_without_import_agree() -> None:
    from seg_ros.models import commands, convert

    assert commands.FAMILIES == convert.FAMILIES


def test_progress_bars_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv(ENV_OFF, raising=False)
    assert progress_enabled(True, Tty())
    assert not progress_enabled(True, io.StringIO())  # a pipe or a log file: no bar
    assert not progress_enabled(False, Tty())  # --no-progress
    monkeypatch.setenv(ENV_OFF, '1')
    assert not progress_enabled(True, Tty())


@pytest.mark.parametrize('argv', [
    ['synth', '--n', '1', '--size', '32x64'],
    ['make-bag', '--synthetic', '1', '--size', '32x64'],
    ['eval-bag', 'BAG', '--model', 'MODEL', '--image-topic', '/camera/image_raw'],
    ['predict', 'MODEL', 'IMAGE'],
    ['export', 'regseg48'],
    ['eval', '--model', 'MODEL', '--data', 'synthetic:val'],
    ['demo'],
])
def test_existing_output_needs_overwrite(argv: list[str], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / 'out.onnx' if argv[0] == 'export' else tmp_path / 'out'
    if argv[0] == 'export':
        out.write_bytes(b'mine')
    else:
        out.mkdir()
        (out / 'mine.txt').write_text('keep me')
    argv = [str(tmp_path / a) if a in ('BAG', 'MODEL', 'IMAGE') else a for a in argv]
    assert main([*argv, '--out', str(out)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err[-1].startswith(f'seg-ros {argv[0]}: error: ')
    assert 'already' in err[-1] and '--overwrite' in err[-1], err
    assert (out.read_bytes() == b'mine') if argv[0] == 'export' else (out / 'mine.txt').exists()


def test_make_bag_overwrite_replaces_a_bag_only(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / 'bag'
    argv = ['make-bag', '--synthetic', '1', '--size', '32x64', '--out', str(out),
            '--no-progress']
    assert main(argv) == 0
    assert main(argv) == 1
    assert main([*argv, '--overwrite']) == 0
    assert '1 frame on' in capsys.readouterr().out  # grammar: 1 frame, not 1 frames
    folder = tmp_path / 'photos'
    folder.mkdir()
    (folder / 'holiday.jpg').write_bytes(b'x')
    argv[argv.index(str(out))] = str(folder)
    assert main([*argv, '--overwrite']) == 1
    assert 'not a rosbag2 folder' in capsys.readouterr().err
    assert (folder / 'holiday.jpg').exists()


def test_plural() -> None:
    assert arguments.plural(1, 'image') == '1 image'
    assert arguments.plural(2, 'image') == '2 images'
    assert arguments.plural(0, 'result') == '0 results'
    assert arguments.format_size((256, 512)) == '256x512'


def test_no_progress_reaches_bars_without_a_progress_argument(monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    import os

    from seg_ros.train import commands

    seen = {}

    def fake_run(args: argparse.Namespace) -> int:
        seen['off'] = os.environ.get(ENV_OFF)
        return 0

    monkeypatch.delenv(ENV_OFF, raising=False)
    monkeypatch.setitem(commands.COMMANDS, 'train', (commands.COMMANDS['train'][0], fake_run))
    assert main(['train', 'x.yaml', '--no-progress']) == 0
    assert seen['off'] == '1' and ENV_OFF not in os.environ  # set for the run only
    assert main(['train', 'x.yaml']) == 0
    assert seen['off'] is None
