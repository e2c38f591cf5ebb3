"""`seg-ros models`, `seg-ros fov`, `seg-ros convert-official` through the real CLI entry point."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seg_ros.cli import main, parse_size
from seg_ros.models.checkpoint import model_from_checkpoint


def test_models_json_rows(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(['models', 'regseg48', '--json']) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r['name'] for r in rows] == ['regseg48']
    reg = rows[0]
    assert reg['params'] == 3_334_951 and abs(reg['gmacs'] - 38.353) < 1e-3
    assert reg['backbone_fov'] == 3807 and reg['params_ok'] and reg['gmacs_ok']
    assert {'name', 'params', 'gmacs', 'fov'} <= set(reg)


def test_models_table_at_other_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(['models', 'regseg48', '--size', '512x1024']) == 0
    out = capsys.readouterr().out
    assert 'regseg48' in out and '9.589' in out  # conv MACs at 512x1024 (official 9.5886 G)


def test_fov_command_table2(capsys: pytest.CaptureFixture[str]) -> None:
    rates = json.dumps([[1, 1], [1, 2], [1, 2], [1, 3], [2, 3], [2, 7], [2, 3], [2, 6],
                        [2, 5], [2, 9], [2, 11], [4, 7], [5, 14]])
    assert main(['fov', 'regseg48', '--dilations', rates, '--json']) == 0
    assert json.loads(capsys.readouterr().out)['backbone_fov'] == 2399
    assert main(['fov', 'regseg48', '--dilations', json.dumps([[1, 30]] * 13)]) == 0
    out = capsys.readouterr().out
    assert 'GAP' in out and 'dilated convs with gaps (r > k/s, Eq. 3): 1' in out


def test_bad_arguments_are_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(['fov', 'no_such_model']) == 1
    assert main(['models', '--size', '12by3']) == 1
    err = capsys.readouterr().err
    assert 'no_such_model' in err and '12by3' in err
    with pytest.raises(Exception, match='HxW'):
        parse_size('0x')


def test_convert_official_cli_roundtrip(tmp_path: Path) -> None:
    from seg_ros.models.regseg import regseg48

    torch.manual_seed(3)
    official = regseg48()
    for m in official.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    src = tmp_path / 'regseg_official.pth'
    torch.save({'model': official.state_dict(), 'epoch': 999, 'best_mIU': 0.78}, src)
    out = tmp_path / 'converted.pt'
    assert main(['convert-official', 'regseg', str(src), '--out', str(out)]) == 0
    model, meta = model_from_checkpoint(out)
    assert meta.model == 'regseg48' and meta.num_classes == 19 and len(meta.class_names) == 19
    x = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), official.eval()(x))
    assert main(['convert-official', 'sfnet-lite', str(src), '--out', str(out),
                 '--overwrite']) == 1


def test_meta_shows_and_restamps_the_serving_size(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from seg_ros.metadata import ModelMeta
    from seg_ros.models.checkpoint import load_checkpoint, save_checkpoint
    from seg_ros.models.regseg import regseg48

    torch.manual_seed(5)
    src = tmp_path / 'trained.pt'
    save_checkpoint(src, regseg48(num_classes=3),
                    ModelMeta('regseg48', num_classes=3, class_names=['a', 'b', 'c'],
                              palette=[[0, 0, 0], [1, 2, 3], [4, 5, 6]], input_size=[32, 64]),
                    extra={'step': 7})
    assert main(['meta', str(src)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown['input_size'] == [32, 64] and shown['class_names'] == ['a', 'b', 'c']

    out = tmp_path / 'served.pt'
    assert main(['meta', str(src), '--size', '40x80', '--out', str(out)]) == 0
    assert 'served at 40x80' in capsys.readouterr().out
    before, after = load_checkpoint(src), load_checkpoint(out)
    assert after['meta'].input_size == [40, 80] and before['meta'].input_size == [32, 64]
    assert after['meta'].class_names == ['a', 'b', 'c'] and after['extra'] == {'step': 7}
    assert before['state_dict'].keys() == after['state_dict'].keys()
    for k, v in before['state_dict'].items():
        assert torch.equal(v, after['state_dict'][k]), k

    # an existing --out, --size without --out, and an ONNX file: one line each, nothing written
    assert main(['meta', str(src), '--size', '48x96', '--out', str(out)]) == 1
    assert main(['meta', str(src), '--size', '48x96']) == 1
    (tmp_path / 'm.onnx').write_bytes(b'not a checkpoint')
    assert main(['meta', str(tmp_path / 'm.onnx')]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and '--overwrite' in err[0]
    assert '--size and --out go together' in err[1] and 'not a checkpoint' in err[2]
    assert load_checkpoint(out)['meta'].input_size == [40, 80]
