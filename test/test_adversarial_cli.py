"""Issue 15, CLI and files side: hostile or damaged inputs replayed against the real `seg-ros`.

Every case here once escaped as a traceback, lost data or reported a wrong count. Most run
``seg_ros.cli.main`` in-process (fast); a few run the installed ``seg-ros`` as a subprocess to
prove the exit code and the single stderr line end to end.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import sys

import bag_testutil
import cv2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import numpy as np
import pytest
import torch
import yaml

from seg_ros.cli import main
from seg_ros.errors import SegRosError
from seg_ros.fileio import read_yaml
from seg_ros.metadata import ModelMeta, load_palette
from seg_ros.models.checkpoint import FORMAT

SIZE = bag_testutil.MODEL_SIZE
HYPOTHESIS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture,
                                             HealthCheck.too_slow])


def one_error_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    """The single stderr line of a failed command (anything else fails the test)."""
    err = capsys.readouterr().err
    # the commands' own log lines and tqdm progress bars are not errors
    lines = [line for line in err.replace('\r', '\n').splitlines() if line.strip()
             and not line.startswith(('INFO ', 'WARNING ')) and '%|' not in line]
    assert len(lines) == 1, err
    assert lines[0].startswith(f'seg-ros {command}: error: '), err
    assert 'Traceback' not in err and '\x1b' not in err
    return lines[0]


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope='module')
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Damaged checkpoints and ONNX files, a test image and a small bag."""
    from seg_ros.bag.make_bag import SourceFrame, make_bag
    from seg_ros.data.synthetic import SyntheticDrive

    root = tmp_path_factory.mktemp('adversarial')
    meta = ModelMeta.for_dataset('regseg48', input_size=list(SIZE)).to_dict()
    tiny = {'w': torch.zeros(2)}  # every case below fails before the weights are used

    def ckpt(name: str, **fields: object) -> None:
        data: dict = {'format': FORMAT, 'meta': dict(meta), 'state_dict': tiny, 'extra': {}}
        for key, value in fields.items():
            if key in data:
                data[key] = value
            else:
                data['meta'][key] = value
        torch.save(data, root / f'{name}.pt')

    ckpt('arch_key', arch={'no_such_knob': 3})
    ckpt('meta_string', meta='regseg48')
    ckpt('num_classes_string', num_classes='19')
    ckpt('state_dict_none', state_dict=None)
    good = bag_testutil.onnx_model()
    data = good.read_bytes()
    (root / 'truncated.onnx').write_bytes(data[:len(data) // 2])
    import onnx

    from seg_ros.runtime.backends import META_KEY

    proto = onnx.load(str(good))
    for prop in proto.metadata_props:
        if prop.key == META_KEY:
            prop.value = json.dumps([1, 2, 3])
    onnx.save(proto, str(root / 'meta_list.onnx'))
    d = SyntheticDrive(size=SIZE, seed=5)
    rgb, _ = d.frame(0)
    cv2.imwrite(str(root / 'image.png'), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    make_bag(root / 'bag', [SourceFrame(*d.frame(i), name=str(i)) for i in range(2)],
             progress=False)
    return {'root': root, 'good_onnx': good, 'image': root / 'image.png', 'bag': root / 'bag',
            **{p.stem: p for p in root.glob('*.pt')},
            'truncated': root / 'truncated.onnx', 'meta_list': root / 'meta_list.onnx'}


def _argv(command: str, model: Path, files: dict[str, Path], out: Path) -> list[str]:
    if command == 'export':
        return ['export', str(model), '--out', str(out / 'x.onnx')]
    if command == 'bench':
        return ['bench', str(model), '--iters', '1', '--warmup', '0', '--device', 'cpu']
    if command == 'predict':
        return ['predict', str(model), str(files['image']), '--out', str(out), '--device', 'cpu']
    if command == 'eval':
        return ['eval', '--model', str(model), '--data', 'synthetic:val', '--option',
                'length=1', '--option', f'size=[{SIZE[0]},{SIZE[1]}]', '--no-progress']
    assert command == 'eval-bag'
    return ['eval-bag', str(files['bag']), '--model', str(model), '--image-topic',
            '/camera/image_raw', '--out', str(out / 'report'), '--no-plots']


# ---------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize('command', ['export', 'eval', 'bench', 'predict'])
@pytest.mark.parametrize('case,reason', [
    ('arch_key', r'"arch" \[\'no_such_knob\'\] does not fit regseg48'),
    ('meta_string', 'metadata must be a mapping of fields, got str'),
    ('num_classes_string', 'num_classes" must be an integer'),
    ('state_dict_none', '"state_dict" must be a non-empty mapping of tensors, got NoneType'),
])
def test_malformed_checkpoint_metadata_is_one_line(command: str, case: str, reason: str,
                                                   files: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import re

    assert main(_argv(command, files[case], files, tmp_path)) == 1
    line = one_error_line(capsys, command)
    assert str(files[case]) in line and re.search(reason, line), line


@pytest.mark.parametrize('command', ['bench', 'predict', 'eval', 'eval-bag'])
def test_truncated_onnx_is_one_line(command: str, files: dict[str, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_argv(command, files['truncated'], files, tmp_path)) == 1
    line = one_error_line(capsys, command)
    # the reader's own error type follows it: DecodeError / InvalidProtobuf (ONNX Runtime),
    # GeneralFailure (OpenVINO, which backend auto picks on a CPU where it is installed)
    assert 'cannot load model' in line and 'not a readable ONNX file (' in line
    assert 'export it again' in line


@pytest.mark.parametrize('command', ['bench', 'predict'])
def test_onnx_metadata_that_is_a_json_list_is_one_line(command: str, files: dict[str, Path],
                                                       tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_argv(command, files['meta_list'], files, tmp_path)) == 1
    assert 'metadata must be a mapping of fields, got list' in one_error_line(capsys, command)


@pytest.mark.parametrize('value', ['0', '-3'])
def test_bench_iters_below_one_is_refused_by_argparse(value: str, files: dict[str, Path],
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    with pytest.raises(SystemExit) as exc:
        main(['bench', str(files['good_onnx']), '--iters', value])
    assert exc.value.code == 2
    assert 'argument --iters' in capsys.readouterr().err


def test_subprocess_exit_code_one_line_and_debug_traceback(files: dict[str, Path],
                                                           tmp_path: Path) -> None:
    cmd = [str(Path(sys.executable).parent / 'seg-ros'), 'export', str(files['arch_key']),
           '--out', str(tmp_path / 'x.onnx')]
    env = {k: v for k, v in os.environ.items() if k != 'SEG_ROS_DEBUG'}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('seg-ros export: error: '), proc.stderr
    assert 'no_such_knob' in lines[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**env, 'SEG_ROS_DEBUG': '1'})
    assert proc.returncode != 0 and 'Traceback' in proc.stderr


def test_subprocess_nesting_bomb_config_is_one_line(tmp_path: Path) -> None:
    # a YAML nesting bomb as a training config was a RecursionError traceback
    cfg = tmp_path / 'bomb.yaml'
    cfg.write_text('a: ' + '[' * 5000 + ']' * 5000 + '\n')
    proc = subprocess.run([str(Path(sys.executable).parent / 'seg-ros'), 'train', str(cfg)],
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith('seg-ros train: error: ') and 'nested' in lines[0]


@pytest.mark.parametrize('exc', [AttributeError("'NoneType' object has no attribute 'shape'"),
                                 ZeroDivisionError('division by zero'),
                                 TypeError('bad\n  second line')])
def test_any_exception_of_any_subcommand_is_one_line(exc: Exception,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from seg_ros.models import commands

    def boom(args: object) -> int:
        raise exc

    monkeypatch.setitem(commands.COMMANDS, 'fov', (commands.COMMANDS['fov'][0], boom))
    assert main(['fov', 'regseg48']) == 1
    line = one_error_line(capsys, 'fov')
    assert type(exc).__name__ in line
    monkeypatch.setenv('SEG_ROS_DEBUG', '1')
    with pytest.raises(type(exc)):
        main(['fov', 'regseg48'])


# ---------------------------------------------------------------------------- palettes / YAML
def _colour_yaml(colour: str) -> str:
    return f'classes:\n  - {{name: road, color: {colour}}}\n'


HOSTILE_PALETTES: dict[str, bytes] = {
    'binary_model': b'PK\x03\x04' + bytes(range(256)) * 4,  # a .pt is a zip
    'onnx_protobuf': b'\x08\x07\x12\x07pytorch\x1a\x052.13\x80\xff\xfe',
    'utf16_bom': _colour_yaml('[1, 2, 3]').encode('utf-16'),
    'inf_colour': _colour_yaml('[.inf, 0, 0]').encode(),
    'flow_nesting_bomb': b'classes: ' + b'[' * 5000 + b']' * 5000,
    'block_nesting_bomb': ''.join(f'{"  " * i}k{i}:\n' for i in range(5000)).encode(),
    'huge_integer': _colour_yaml('[' + '9' * 5000 + ', 0, 0]').encode(),
    'fraction': _colour_yaml('[1.5, 0, 0]').encode(),  # was silently truncated to 1
    'bool_colour': _colour_yaml('[true, 0, 0]').encode(),  # was read as 1
    'bad_timestamp': b'classes: 2001-13-45\n',
    'huge_file': b'# ' + b'x' * (300 * 1024) + b'\nclasses: [{name: a, color: [1, 2, 3]}]\n',
    'too_many_classes': ('classes:\n' + ''.join(
        f'  - {{name: c{i}, color: [1, 2, 3]}}\n' for i in range(300))).encode(),
}
# Already SegRosError before issue 15; kept as guards of the one-error-type contract.
PALETTE_GUARDS: dict[str, bytes] = {
    'out_of_range_high': _colour_yaml('[256, 0, 0]').encode(),
    'beyond_float_range': _colour_yaml('[' + '9' * 400 + ', 0, 0]').encode(),
    'out_of_range_negative': _colour_yaml('[-1, 0, 0]').encode(),
    'nan_colour': _colour_yaml('[.nan, 0, 0]').encode(),
    'utf16_no_bom': _colour_yaml('[1, 2, 3]').encode('utf-16-le'),
    'two_values': _colour_yaml('[1, 2]').encode(),
    'four_values': _colour_yaml('[1, 2, 3, 4]').encode(),
    'nested_colour': _colour_yaml('[[1, 2, 3], 0, 0]').encode(),
    'string_colour': _colour_yaml('"#ff0000"').encode(),
    'classes_not_list': b'classes: {road: [1, 2, 3]}\n',
    'entry_not_mapping': b'classes: [[1, 2, 3]]\n',
    'top_level_list': b'- {name: road, color: [1, 2, 3]}\n',
}


@pytest.mark.parametrize('case', sorted(HOSTILE_PALETTES))
def test_hostile_palette_file_raises_one_line_segroserror(case: str, tmp_path: Path) -> None:
    _assert_palette_refused(HOSTILE_PALETTES[case], tmp_path / f'{case}.yaml')


@pytest.mark.parametrize('case', sorted(PALETTE_GUARDS))
def test_palette_shape_and_range_errors_stay_segroserror(case: str, tmp_path: Path) -> None:
    _assert_palette_refused(PALETTE_GUARDS[case], tmp_path / f'{case}.yaml')


def _assert_palette_refused(data: bytes, path: Path) -> None:
    path.write_bytes(data)
    with pytest.raises(SegRosError) as exc:
        load_palette(str(path))
    assert len(str(exc.value).splitlines()) == 1 and str(path) in str(exc.value)


@pytest.mark.parametrize('case', ['binary_model', 'utf16_bom', 'flow_nesting_bomb',
                                  'block_nesting_bomb', 'huge_integer', 'bad_timestamp'])
def test_read_yaml_raises_only_segroserror(case: str, tmp_path: Path) -> None:
    path = tmp_path / 'x.yaml'
    path.write_bytes(HOSTILE_PALETTES[case])
    with pytest.raises(SegRosError, match=str(path)):
        read_yaml(path, 'missing')


def test_predict_palette_with_inf_is_one_line(files: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    palette = tmp_path / 'inf.yaml'
    palette.write_bytes(HOSTILE_PALETTES['inf_colour'])
    argv = _argv('predict', files['good_onnx'], files, tmp_path / 'out') + ['--palette',
                                                                             str(palette)]
    assert main(argv) == 1
    assert 'colour values must be integers 0..255' in one_error_line(capsys, 'predict')
    assert not (tmp_path / 'out').exists()  # refused before the model was loaded


_scalar = st.one_of(st.none(), st.booleans(), st.integers(-300, 300),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
_yaml_value = st.recursive(_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(['name', 'color', 'x']),
                                                 inner, max_size=3)), max_leaves=12)
_number = st.one_of(st.integers(-5, 300), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([float('inf'), float('-inf'), float('nan'), 1e300, 255.0,
                                     0.5, True, 2**70]))
# mostly well-formed entries, so the colour checks are reached, with arbitrary ones mixed in
_entry = st.one_of(
    st.fixed_dictionaries({'name': st.text(max_size=6),
                           'color': st.lists(_number, min_size=3, max_size=3)}),
    st.fixed_dictionaries({'name': _scalar, 'color': st.one_of(
        st.lists(_scalar, min_size=0, max_size=5), _yaml_value)}),
    _yaml_value)


@HYPOTHESIS
@given(st.one_of(st.fixed_dictionaries({'classes': st.lists(_entry, min_size=1, max_size=5)}),
                 _yaml_value))
def test_palette_reader_property_valid_or_segroserror(tmp_path: Path, data: object) -> None:
    path = tmp_path / 'p.yaml'
    path.write_text(yaml.safe_dump(data))
    try:
        names, colours = load_palette(str(path))
    except SegRosError as exc:
        assert len(str(exc).splitlines()) == 1
        return
    assert len(names) == len(colours) >= 1 and all(isinstance(n, str) for n in names)
    assert all(len(c) == 3 and all(type(v) is int and 0 <= v <= 255 for v in c)
               for c in colours)


@HYPOTHESIS
@given(st.binary(max_size=300))
def test_palette_reader_property_arbitrary_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / 'p.yaml'
    path.write_bytes(data)
    try:
        load_palette(str(path))
    except SegRosError:
        pass


_json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10, 300), st.floats(), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=10)


@HYPOTHESIS
@given(st.dictionaries(st.sampled_from(['num_classes', 'class_names', 'palette', 'mean', 'std',
                                        'input_size', 'arch', 'model']), _json_value,
                       max_size=4))
def test_metadata_validation_property_valid_or_segroserror(fields: dict) -> None:
    data = {**ModelMeta(model='regseg48', num_classes=2, class_names=['a', 'b']).to_dict(),
            **fields}
    try:
        meta = ModelMeta.from_dict(data)
    except SegRosError:
        return
    # accepted metadata is usable: JSON round trip, sane types
    assert ModelMeta.from_json(meta.to_json()) == meta
    assert type(meta.num_classes) is int and len(meta.class_names) == meta.num_classes
    assert all(len(c) == 3 for c in meta.palette) and len(meta.input_size) == 2


@pytest.mark.parametrize('text', ['[1, 2]', '"regseg48"', '[' * 100000 + ']' * 100000,
                                  '{"model": "regseg48", "num_classes": ' + '9' * 5000 + '}'])
def test_metadata_json_raises_only_segroserror(text: str) -> None:
    with pytest.raises(SegRosError):
        ModelMeta.from_json(text)


# ---------------------------------------------------------------------------- predict outputs
def test_predict_keeps_every_result(files: dict[str, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from seg_ros.data.synthetic import SyntheticDrive

    d = SyntheticDrive(size=SIZE, seed=11)
    names = ['a/frame.png', 'b/frame.png', 'b/frame.jpg']
    frames = {}
    for i, name in enumerate(names):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        rgb = d.frame(i)[0]
        cv2.imwrite(str(tmp_path / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        frames[name] = cv2.imread(str(tmp_path / name))  # what predict reads (JPEG is lossy)
    out = tmp_path / 'out'
    assert main(['predict', str(files['good_onnx']), *(str(tmp_path / n) for n in names),
                 '--out', str(out), '--backend', bag_testutil.BACKEND, '--device', 'cpu']) == 0
    assert 'wrote 3 results' in capsys.readouterr().out
    written = sorted(p.relative_to(out / 'ids').as_posix() for p in (out / 'ids').rglob('*.png'))
    assert written == ['a/frame.png', 'b/frame.jpg.png', 'b/frame.png.png']
    seg = bag_testutil.segmenter()
    for name, ids_name in zip(names, ['a/frame.png', 'b/frame.png.png', 'b/frame.jpg.png']):
        ids = cv2.imread(str(out / 'ids' / ids_name), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(ids, seg(frames[name], color_order='bgr').ids)
    assert len(list((out / 'overlay').rglob('*.jpg'))) == 3
    assert len(list((out / 'color').rglob('*.png'))) == 3


def test_predict_refuses_names_that_would_still_collide(files: dict[str, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    for name in ('f.png', 'f.jpg', 'f.png.jpg'):
        (tmp_path / name).write_bytes(files['image'].read_bytes())
    out = tmp_path / 'out'
    assert main(['predict', str(files['good_onnx']), *(str(tmp_path / n) for n in
                                                       ('f.png', 'f.jpg', 'f.png.jpg')),
                 '--out', str(out)]) == 1
    assert 'would write the same output' in one_error_line(capsys, 'predict')
    assert not out.exists()


# ---------------------------------------------------------------------------- eval-bag
def _set_metadata_count(bag: Path, topic: str, count: int) -> None:
    meta = bag / 'metadata.yaml'
    data = yaml.safe_load(meta.read_text())
    for entry in data['rosbag2_bagfile_information']['topics_with_message_count']:
        if entry['topic_metadata']['name'] == topic:
            entry['message_count'] = count
    meta.write_text(yaml.safe_dump(data))


def _eval_bag_config(bag: Path, out: Path, **kw: object):  # -> EvalConfig
    from seg_ros.bag.eval_bag import EvalConfig

    return EvalConfig(bag=bag, model=str(bag_testutil.onnx_model()),
                      image_topic='/camera/image_raw', out_dir=out,
                      backend=bag_testutil.BACKEND, device='cpu', plots=False, **kw)


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_eval_bag_counts_frames_by_reading(storage: str, tmp_path: Path) -> None:
    from seg_ros.bag.eval_bag import run_eval
    from seg_ros.bag.make_bag import SourceFrame, make_bag
    from seg_ros.data.synthetic import SyntheticDrive

    d = SyntheticDrive(size=(32, 64), seed=2)
    make_bag(tmp_path / 'bag', [SourceFrame(*d.frame(i), name=str(i)) for i in range(3)],
             storage=storage, progress=False)
    _set_metadata_count(tmp_path / 'bag', '/camera/image_raw', 300)  # claims 300, holds 3
    out = tmp_path / 'out'
    with pytest.raises(SegRosError, match=r'partial report for 3 of 300 frames \(3 readable, '
                                          r'metadata.yaml lists 300\)'):
        run_eval(_eval_bag_config(tmp_path / 'bag', out, label_topic='/labels'),
                 progress=False)
    report = json.loads((out / 'report.json').read_text())
    assert report['complete'] is False
    assert report['frames']['in_topic'] == 3 and report['frames']['in_metadata'] == 300
    assert any('lists 300 messages' in w and '3' in w for w in report['warnings'])
    # a metadata.yaml that lists fewer messages than the storage holds: warned, complete
    _set_metadata_count(tmp_path / 'bag', '/camera/image_raw', 1)
    report = run_eval(_eval_bag_config(tmp_path / 'bag', tmp_path / 'out2'), progress=False)
    assert report['complete'] and report['frames']['in_topic'] == 3
    assert report['frames']['read'] == 3
    assert any('lists 1 messages' in w for w in report['warnings'])


def test_truncated_bag_partial_message_names_both_numbers(tmp_path: Path) -> None:
    from seg_ros.bag.eval_bag import run_eval
    from seg_ros.bag.make_bag import SourceFrame, make_bag
    from seg_ros.data.synthetic import SyntheticDrive

    d = SyntheticDrive(size=(32, 64), seed=1)
    make_bag(tmp_path / 'bag', [SourceFrame(*d.frame(i), name=str(i)) for i in range(40)],
             storage='mcap', progress=False)
    f = next((tmp_path / 'bag').glob('*.mcap'))
    f.write_bytes(f.read_bytes()[:f.stat().st_size // 2])
    with pytest.raises(SegRosError) as exc:
        run_eval(_eval_bag_config(tmp_path / 'bag', tmp_path / 'out'), progress=False)
    report = json.loads((tmp_path / 'out' / 'report.json').read_text())
    read = report['frames']['read']
    assert 0 < read < 40
    assert f'partial report for {read} of 40 frames' in str(exc.value)
    assert 'metadata.yaml lists 40' in str(exc.value)


def test_write_bag_output_headers_are_the_input_headers_byte_for_byte(tmp_path: Path) -> None:
    from seg_ros.bag.eval_bag import OUTPUT_BAG_NAME, OUTPUT_PREFIX, run_eval
    from seg_ros.bag.io import IMAGE_TYPE, BagReader, BagWriter, typestore
    from seg_ros.data.synthetic import SyntheticDrive

    ts = typestore()
    d = SyntheticDrive(size=(32, 64), seed=4)
    # (0 s, 1e9 ns) is out of range but legal on the wire; a stamp ns round trip makes it 1 s
    stamps = [(0, 1_000_000_000), (7, 1_999_999_999), (12, 5)]
    with BagWriter(tmp_path / 'bag', 'sqlite3') as w:
        for i, (sec, nsec) in enumerate(stamps):
            rgb = d.frame(i)[0]
            header = ts.types['std_msgs/msg/Header'](
                stamp=ts.types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nsec),
                frame_id='cam_front')
            msg = ts.types[IMAGE_TYPE](header=header, height=32, width=64, encoding='rgb8',
                                       is_bigendian=0, step=64 * 3,
                                       data=np.ascontiguousarray(rgb).reshape(-1))
            w.write_message('/camera/image_raw', IMAGE_TYPE, 1000 + i, msg)
    run_eval(_eval_bag_config(tmp_path / 'bag', tmp_path / 'out', write_bag=True),
             progress=False)
    with BagReader(tmp_path / 'bag') as r:
        inputs = [raw for _, _, raw, _ in r.raw_messages(['/camera/image_raw'])]
    n = 4 + 8 + 4 + len('cam_front') + 1  # encapsulation, stamp, frame_id length + text + NUL
    with BagReader(tmp_path / 'out' / OUTPUT_BAG_NAME) as r:
        for topic in (f'{OUTPUT_PREFIX}/mask', f'{OUTPUT_PREFIX}/color'):
            outputs = [raw for _, _, raw, _ in r.raw_messages([topic])]
            assert len(outputs) == len(inputs) == 3
            for a, b in zip(inputs, outputs):
                assert a[:n] == b[:n]
            got = [ts.deserialize_cdr(raw, IMAGE_TYPE).header.stamp for raw in outputs]
            assert [(s.sec, s.nanosec) for s in got] == stamps


def _bag_with_labels(tmp_path: Path, label_fn) -> Path:
    from seg_ros.bag.make_bag import SourceFrame, make_bag
    from seg_ros.data.synthetic import SyntheticDrive

    d = SyntheticDrive(size=SIZE, seed=6)
    frames = []
    for i in range(2):
        rgb, label = d.frame(i)
        frames.append(SourceFrame(rgb, label_fn(label.copy()), name=str(i)))
    make_bag(tmp_path / 'bag', frames, progress=False)
    return tmp_path / 'bag'


def test_eval_bag_refuses_label_ids_outside_the_model_classes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = []

    def foreign(label: np.ndarray) -> np.ndarray:
        label[:8] = 25  # 8 of 64 rows: an id a 19-class model cannot predict
        label[8:10] = 255  # ignore stays allowed
        labels.append(label)
        return label

    bag = _bag_with_labels(tmp_path, foreign)
    assert main(['eval-bag', str(bag), '--model', str(bag_testutil.onnx_model()),
                 '--backend', bag_testutil.BACKEND, '--image-topic', '/camera/image_raw',
                 '--label-topic', '/labels', '--out', str(tmp_path / 'out'),
                 '--no-plots']) == 1
    line = one_error_line(capsys, 'eval-bag')
    assert "label ids 25 are outside the model's 19 classes" in line
    first = labels[0]
    bad, labelled = int((first == 25).sum()), int((first != 255).sum())
    assert f'{bad} of {labelled} labelled pixels ({100 * bad / labelled:.1f}%)' in line, line


def test_demo_refuses_a_model_of_another_class_set(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # a 3-class model on the demo's 19-class synthetic labels scored mIoU 0.002, no warning
    from seg_ros.models.checkpoint import save_checkpoint
    from seg_ros.models.registry import create_model

    torch.manual_seed(0)
    ckpt = tmp_path / 'three.pt'
    save_checkpoint(ckpt, create_model('regseg48', num_classes=3), ModelMeta(
        model='regseg48', num_classes=3, class_names=['a', 'b', 'c'], input_size=list(SIZE)))
    assert main(['demo', '--model', str(ckpt), '--backend', 'torch', '--frames', '2',
                 '--size', f'{SIZE[0]}x{SIZE[1]}', '--out', str(tmp_path / 'demo')]) == 1
    line = one_error_line(capsys, 'demo')
    assert "outside the model's 3 classes (0..2; 255 = ignore)" in line and '%)' in line


def test_ignore_label_and_in_range_ids_still_score(tmp_path: Path) -> None:
    # guard (passed before too): the new refusal must not touch 255 or in-range ids
    from seg_ros.bag.eval_bag import run_eval

    def ignore_some(label: np.ndarray) -> np.ndarray:
        label[:8] = 255
        return label

    bag = _bag_with_labels(tmp_path, ignore_some)
    report = run_eval(_eval_bag_config(bag, tmp_path / 'out', label_topic='/labels'),
                      progress=False)
    assert report['complete'] and report['frames']['evaluated'] == 2


def test_accumulator_refuses_foreign_label_ids_like_the_live_and_demo_paths() -> None:
    from seg_ros.bag.report import Accumulator

    acc = Accumulator(3)
    pred = np.zeros((4, 4), np.uint8)
    label = np.full((4, 4), 2, np.uint8)
    acc.add(0, None, pred, label, 1.0)  # in range: counted
    label[0, 0] = 7
    with pytest.raises(SegRosError, match=r'frame 1: label ids 7 .* 1 of 16 labelled pixels'):
        acc.add(1, None, pred, label, 1.0)
    assert acc.frames_evaluated == 1


# ---------------------------------------------------------------------------- convert-official
def _sfsegnets_checkpoint(path: Path, **side: object) -> None:
    """Saved the way SFSegNets' utils/misc.py does: state_dict + optimizer + numpy mean_iu."""
    from test_models_convert import fake_official

    state = {f'module.{k}': v for k, v in fake_official('sfnet_lite_r18').items()}
    torch.save({'state_dict': state, 'optimizer': {'state': {}, 'param_groups': [
        {'lr': 0.01, 'momentum': 0.9, 'params': [0, 1]}]}, 'epoch': 7,
        'command': 'train.py --arch network.sfnet_resnet.DeepR18_SF_deeply', **side}, path)


def test_convert_official_accepts_numpy_side_data(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from seg_ros.models.checkpoint import load_checkpoint

    src = tmp_path / 'best_epoch_7_mean-iu_0.77.pth'
    iu = np.array([0.8, np.nan, 0.7])
    _sfsegnets_checkpoint(src, mean_iu=np.nanmean(iu), acc=np.float32(0.9),
                          count=np.int64(12))
    out = tmp_path / 'ours.pt'
    assert main(['convert-official', 'sfnet-lite', str(src), '--out', str(out)]) == 0
    assert 'sfnet_lite_r18' in capsys.readouterr().out
    assert load_checkpoint(out)['meta'].model == 'sfnet_lite_r18'


def test_convert_official_refusal_names_the_global(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / 'with_array.pth'
    _sfsegnets_checkpoint(src, iu=np.array([0.8, 0.7]))  # an ndarray is not allowed
    assert main(['convert-official', 'sfnet-lite', str(src), '--out',
                 str(tmp_path / 'o.pt')]) == 1
    line = one_error_line(capsys, 'convert-official')
    assert 'numpy._core.multiarray._reconstruct' in line and 'weights_only=True' in line
    assert not (tmp_path / 'o.pt').exists()


# ---------------------------------------------------------------------------- temp files
def test_training_start_removes_temp_files_of_a_killed_run(tmp_path: Path) -> None:
    from seg_ros.train.config import load_config
    from seg_ros.train.loop import train

    run = tmp_path / 'run'
    # a process dies inside atomic_write (no except clause runs, as with SIGKILL)
    script = ('import os, sys; from seg_ros.fileio import atomic_write; '
              'atomic_write(sys.argv[1], lambda f: (f.write(b"x" * 4096), f.flush(), '
              'os._exit(9)))')
    for name in ('last.pt', 'best.pt'):
        proc = subprocess.run([sys.executable, '-c', script, str(run / name)], timeout=120)
        assert proc.returncode == 9
    stale = sorted(p.name for p in run.iterdir())
    assert len(stale) == 2 and all(p.startswith(('.last.pt.', '.best.pt.')) and
                                   p.endswith('.tmp') for p in stale), stale
    keep = [run / 'notes.tmp', run / '.hidden', run / 'last.pt.tmp']
    for p in keep:
        p.write_text('mine')
    cfg = {'name': 'run', 'out': str(run), 'progress': False, 'tensorboard': False,
           'model': {'name': 'regseg48'},
           'data': {'kind': 'synthetic', 'options': {'size': [32, 64], 'length': 2},
                    'val_split': None, 'augment': None, 'workers': 0},
           'optim': {'iterations': 1, 'batch_size': 2, 'threads': 1, 'ema': False},
           'loss': 'ce', 'checkpoint': {'every': 0}}
    path = tmp_path / 'run.yaml'
    path.write_text(yaml.safe_dump(cfg))
    train(load_config(path))
    left = {p.name for p in run.iterdir()}
    assert not any(n.startswith(('.last.pt.', '.best.pt.')) for n in left), left
    assert {p.name for p in keep} <= left


# ---------------------------------------------------------------------------- issue 17
# Error texts in words: no numpy reprs, no exception class names, no torch advice.
INTERNALS = ('np.uint8', 'np.int64', 'ValueError', 'TypeError', 'KeyError', 'NotADirectoryError',
             'FileNotFoundError', 'weights_only', 'torch.load', 'Traceback')


def _no_internals(line: str) -> str:
    for word in INTERNALS:
        assert word not in line, line
    return line


def test_export_of_an_onnx_file_says_it_needs_the_checkpoint(files: dict[str, Path],
                                                             tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]
                                                             ) -> None:
    assert main(['export', str(files['good_onnx']), '--out', str(tmp_path / 'x.onnx')]) == 1
    line = _no_internals(one_error_line(capsys, 'export'))
    assert 'an exported model, not a checkpoint' in line


def test_foreign_pickle_checkpoint_has_no_torch_advice(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    bad = tmp_path / 'foreign.pt'
    torch.save({'x': Path('a')}, bad)  # a pickled object torch refuses to load safely
    assert main(['export', str(bad), '--out', str(tmp_path / 'x.onnx')]) == 1
    line = _no_internals(one_error_line(capsys, 'export'))
    assert 'not a readable checkpoint' in line


def test_folder_label_outside_the_classes_names_plain_ids(files: dict[str, Path],
                                                          tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    data = tmp_path / 'data'
    assert main(['synth', '--out', str(data), '--n', '2', '--size', f'{SIZE[0]}x{SIZE[1]}',
                 '--no-progress']) == 0
    cv2.imwrite(str(data / 'masks' / '000001.png'), np.full(SIZE, 105, np.uint8))
    capsys.readouterr()
    assert main(['eval', '--model', str(files['good_onnx']), '--data', f'folder:{data}:val',
                 '--no-progress']) == 1
    line = _no_internals(one_error_line(capsys, 'eval'))
    assert 'has values 105 outside' in line


@pytest.mark.parametrize('argv,reason', [
    (['make-bag', '{file}', '--out', '{tmp}/bag'], 'not a folder'),
    (['eval', '--model', '{onnx}', '--data', 'synthetic:val', '--option', 'size=7'],
     'expects HxW or [H, W]'),
    (['eval', '--data', 'synthetic:val'], None),  # argparse's own usage error, exit 2
])
def test_user_mistakes_are_worded(argv: list[str], reason: str | None, files: dict[str, Path],
                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.format(file=files['image'], tmp=tmp_path, onnx=files['good_onnx']) for a in argv]
    rc = main(argv)
    if reason is None:
        assert rc == 2
        assert 'the following arguments are required: --model' in capsys.readouterr().err
        return
    assert rc == 1
    assert reason in _no_internals(one_error_line(capsys, argv[0]))


def test_counts_in_messages_are_singular_for_one(files: dict[str, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(['predict', '--model', str(files['good_onnx']), str(files['image']), '--out',
                 str(tmp_path / 'p'), '--backend', bag_testutil.BACKEND, '--device', 'cpu',
                 '--no-progress']) == 0
    out = capsys.readouterr().out
    assert 'wrote 1 result to' in out
    assert f': {SIZE[0]}x{SIZE[1]}, inference' in out  # sizes print height first
