"""The own-data loop: a folder of one's own frames through ``train --data`` (the shipped
``config/train/folder.yaml``), ``eval --data DIR``, ``predict`` on folders / globs, ``--resume``
(extend, run settings, refusals, config history), config typos and ``model.init`` adoption.

Everything runs on 32x64 frames and a slim RegSeg for a few iterations (seconds per test).
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from seg_ros.cli import main
from seg_ros.data.datasets import build_dataset, detect_kind, parse_data_spec
from seg_ros.errors import SegRosError
from seg_ros.metadata import ModelMeta
from seg_ros.models import create_model
from seg_ros.models.checkpoint import load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
FOLDER_YAML = str(REPO / 'config' / 'train' / 'folder.yaml')
SLIM = {'stem_channels': 16, 'widths': [16, 32, 64, 64], 'depth8': 1, 'group_width': 8,
        'decoder_channels': [32, 8, 32], 'dilations': [[1, 1], [1, 2], [1, 4], [1, 6]]}
# what a test run sets on top of folder.yaml: tiny, one thread, no side files
QUICK = ['--set', 'optim.iterations=2', '--set', 'optim.batch_size=2', '--set',
         'optim.threads=1', '--set', 'data.workers=0', '--set', 'progress=false',
         '--set', 'tensorboard=false', '--set', 'optim.amp=none', '--set', 'log_every=1',
         '--set', 'eval.every=0', '--set', 'checkpoint.every=1',
         '--set', f'model.arch={json.dumps(SLIM)}']


def _write_folder(root: Path, n: int = 10, size: tuple[int, int] = (32, 64)) -> Path:
    """A 3-class folder dataset named by stamps, as frames cut from a bag would be."""
    (root / 'images').mkdir(parents=True)
    (root / 'masks').mkdir()
    rng = np.random.default_rng(0)
    h, w = size
    colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]], np.uint8)
    for i in range(n):
        mask = np.zeros((h, w), np.uint8)
        cut = int(rng.integers(w // 4, 3 * w // 4))
        mask[:, cut:] = 1
        mask[h // 2:, : w // 3] = 2
        mask[0, :] = 255
        image = colours[np.minimum(mask, 2)] + rng.integers(0, 30, (h, w, 3), dtype=np.uint8)
        stem = f'{1_700_000_000_000_000_000 + i * 100_000_000}'
        cv2.imwrite(str(root / 'images' / f'{stem}.png'), image[..., ::-1])
        cv2.imwrite(str(root / 'masks' / f'{stem}.png'), mask)
    (root / 'classes.yaml').write_text(yaml.safe_dump({'classes': [
        {'name': 'ground', 'color': [200, 40, 40]}, {'name': 'obstacle', 'color': [40, 200, 40]},
        {'name': 'sky', 'color': [40, 40, 200]}]}))
    return root


@pytest.fixture
def mine(tmp_path):
    return _write_folder(tmp_path / 'MyData')


def _train(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(['train', *argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# ---------------------------------------------------------------------------- --data specs
def test_bare_paths_are_detected_and_user_text_is_kept(tmp_path, mine):
    assert detect_kind(mine) == 'folder'
    assert parse_data_spec(str(mine)) == ('folder', str(mine), 'val')
    assert parse_data_spec(f'{mine}:test') == ('folder', str(mine), 'test')
    assert parse_data_spec(f'folder:{mine}:train') == ('folder', str(mine), 'train')
    assert parse_data_spec(f'FOLDER:{mine}') == ('folder', str(mine), 'val')
    assert parse_data_spec('synthetic:test') == ('synthetic', None, 'test')
    cs = tmp_path / 'cs'
    (cs / 'leftImg8bit').mkdir(parents=True)
    (cs / 'gtFine').mkdir()
    assert parse_data_spec(str(cs)) == ('cityscapes', str(cs), 'val')
    cv = tmp_path / 'camvid'  # a folder called like a kind is still a folder
    (cv / 'test').mkdir(parents=True)
    (cv / 'testannot').mkdir()
    assert parse_data_spec(str(cv) + ':test') == ('camvid', str(cv), 'test')
    with pytest.raises(SegRosError) as e:
        parse_data_spec('data/MyData')
    assert 'data/MyData' in str(e.value) and 'not found' in str(e.value)
    (tmp_path / 'Empty').mkdir()
    with pytest.raises(SegRosError, match='not a dataset layout') as e:
        parse_data_spec(str(tmp_path / 'Empty'))
    assert str(tmp_path / 'Empty') in str(e.value)
    (mine / 'classes.yaml').rename(mine / 'classes.bak')
    with pytest.raises(SegRosError, match='has images/ but no classes.yaml'):
        parse_data_spec(str(mine))
    with pytest.raises(SegRosError, match=r'a Cityscapes dataset needs a root: Cityscapes:ROOT'):
        parse_data_spec('Cityscapes:')
    with pytest.raises(SegRosError, match='Foo is not a dataset kind'):
        parse_data_spec('Foo:/nowhere/x')


def test_flat_folder_val_fraction_holds_out_the_last_frames(mine):
    train = build_dataset('folder', mine, 'train', val_fraction=0.2)
    val = build_dataset('folder', mine, 'val', val_fraction=0.2)
    assert len(train) == 8 and len(val) == 2
    assert train.items[-1][0].name < val.items[0][0].name  # one block at the end
    assert len(build_dataset('folder', mine, 'train+val', val_fraction=0.2)) == 10
    assert len(build_dataset('folder', mine, 'train+val')) == 10  # flat: every frame once
    assert len(build_dataset('folder', mine, 'val')) == 10  # no fraction: the whole folder


# ---------------------------------------------------------------------------- train on a folder
def test_folder_template_trains_on_the_folder_and_eval_takes_the_bare_path(tmp_path, mine,
                                                                           capsys):
    out = tmp_path / 'run'
    rc, so, se = _train([FOLDER_YAML, '--data', str(mine), '--out', str(out), *QUICK], capsys)
    assert rc == 0, se
    ckpt = load_checkpoint(out / 'final.pt')
    meta = ckpt['meta']
    assert meta.class_names == ['ground', 'obstacle', 'sky'] and meta.input_size == [32, 64]
    assert meta.arch['widths'] == [16, 32, 64, 64]
    cfg = yaml.safe_load((out / 'config.yaml').read_text())
    assert cfg['data']['kind'] == 'folder' and cfg['data']['root'] == str(mine)
    val = [json.loads(x) for x in (out / 'metrics.jsonl').read_text().splitlines()]
    assert any(r['kind'] == 'val' for r in val)

    rc = main(['eval', '--weights', str(out / 'final.pt'), '--data', str(mine), '--json',
               '--no-progress', '--backend', 'torch', '--device', 'cpu', '--threads', '1'])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res['images'] == 10 and res['data']['kind'] == 'folder'
    assert set(res['per_class_iou']) == {'ground', 'obstacle', 'sky'}


def test_train_data_option_refuses_a_split_and_unknown_folders(tmp_path, mine, capsys):
    rc, _, err = _train([FOLDER_YAML, '--data', f'{mine}:val', *QUICK], capsys)
    assert rc == 1 and 'train takes no split' in err
    rc, _, err = _train([FOLDER_YAML, '--data', str(tmp_path / 'Nope'), *QUICK], capsys)
    assert rc == 1 and str(tmp_path / 'Nope') in err and 'not found' in err
    rc, _, err = _train([FOLDER_YAML, *QUICK], capsys)
    assert rc == 1 and 'data.root is not set' in err and '--data DIR' in err


@pytest.mark.parametrize('key,value,words', [
    ('model.name', 'regseg84', 'model.name'), ('optim.optimizer', 'adam', 'optim.optimizer'),
    ('loss.type', 'bootstrapp', 'unknown loss'), ('optim.policy', 'polly', 'optim.policy')])
def test_config_typos_are_refused_before_the_data_is_built(tmp_path, capsys, key, value,
                                                           words):
    # the root does not exist: had the data been built first, the error would be about it
    rc, _, err = _train([FOLDER_YAML, '--set', f'data.root={tmp_path / "absent"}', *QUICK,
                         '--set', f'{key}={value}', '--out', str(tmp_path / 'r')], capsys)
    assert rc == 1 and words in err and 'absent' not in err, err
    assert not (tmp_path / 'r' / 'metrics.jsonl').exists()


# ---------------------------------------------------------------------------- --resume
def _started_run(tmp_path: Path, mine: Path, capsys, extra: list[str] = ()) -> Path:
    out = tmp_path / 'run'
    rc, _, err = _train([FOLDER_YAML, '--data', str(mine), '--out', str(out), *QUICK, *extra],
                        capsys)
    assert rc == 0, err
    return out


def test_resume_extends_a_finished_run_with_the_schedule_recomputed(tmp_path, mine, capsys):
    out = _started_run(tmp_path, mine, capsys)
    original = (out / 'config.yaml').read_text()
    # the run folder stands for its settings: no --data, no --set retyped
    rc, so, err = _train([str(out), '--resume', '--set', 'optim.iterations=4'], capsys)
    assert rc == 0, err
    assert 'extending the run from 2 to 4 iterations' in so and 'recomputed for 4' in so
    tr = load_checkpoint(out / 'last.pt')['extra']['train']
    assert tr['step'] == 4 and tr['total'] == 4 and tr['scheduler']['last_iter'] == 4
    assert (out / 'config.yaml').read_text() == original  # never overwritten by a resume
    hist = yaml.safe_load((out / 'config.resume-1.yaml').read_text())
    assert hist['optim']['iterations'] == 4 and hist['data']['root'] == str(mine)
    steps = [json.loads(x)['step'] for x in (out / 'metrics.jsonl').read_text().splitlines()
             if json.loads(x)['kind'] == 'train']
    assert steps == [1, 2, 3, 4]
    # the next resume starts from the extended settings; through the config file as well
    rc, so, err = _train([FOLDER_YAML, '--out', str(out), '--resume', '--print-config'],
                         capsys)
    cfg = json.loads(so)
    assert rc == 0 and cfg['optim']['iterations'] == 4 and cfg['data']['root'] == str(mine)
    assert cfg['model']['arch']['widths'] == [16, 32, 64, 64]


def test_resume_refuses_changed_settings_unless_accepted(tmp_path, mine, capsys):
    out = _started_run(tmp_path, mine, capsys)
    rc, _, err = _train([FOLDER_YAML, '--out', str(out), '--resume', '--set', 'optim.lr=0.01',
                         '--set', 'loss=ce'], capsys)
    assert rc == 1 and len(err.strip().splitlines()) == 1, err
    assert 'optim.lr 0.05 -> 0.01' in err and 'loss' in err and '--accept-changes' in err
    rc, _, err = _train([str(out), '--resume', '--set', 'model.arch.depth8=2'], capsys)
    assert rc == 1 and 'model.arch' in err and 'start a new run' in err
    # an edited config file is a changed setting too (the run's --sets are on record)
    edited = tmp_path / 'edited.yaml'
    edited.write_text(Path(FOLDER_YAML).read_text().replace('momentum: 0.9', 'momentum: 0.8'))
    rc, _, err = _train([str(edited), '--out', str(out), '--resume'], capsys)
    assert rc == 1 and 'optim.momentum 0.9 -> 0.8' in err
    rc, so, err = _train([str(out), '--resume', '--set', 'optim.lr=0.01', '--set',
                          'optim.iterations=3', '--accept-changes'], capsys)
    assert rc == 0, err
    assert 'optim.lr 0.05 -> 0.01' in so and (out / 'config.resume-1.yaml').is_file()
    assert load_checkpoint(out / 'last.pt')['extra']['train']['config']['optim']['lr'] == 0.01
    rc, _, err = _train([str(out), '--resume', '--set', 'optim.iterations=2'], capsys)
    assert rc == 1 and 'at step 3 already' in err


def test_resume_of_an_interrupted_run_needs_no_sets_retyped(tmp_path, mine, capsys):
    from seg_ros.train.commands import resolve_config
    from seg_ros.train.loop import train

    out = tmp_path / 'run'
    overrides = [f'data.root={mine}', f'out={out}', *QUICK[1::2], 'optim.iterations=3']
    cfg, source = resolve_config(FOLDER_YAML, overrides, resume=False)
    train(cfg, stop_after=2, source=source)  # as if killed after step 2
    assert load_checkpoint(out / 'last.pt')['extra']['train']['step'] == 2
    rc, so, err = _train([FOLDER_YAML, '--out', str(out), '--resume'], capsys)
    assert rc == 0, err
    assert 'resumed from' in so and 'changed settings' not in so
    assert not list(out.glob('config.resume-*.yaml'))
    assert load_checkpoint(out / 'last.pt')['extra']['train']['step'] == 3


# ---------------------------------------------------------------------------- model.init
def _slim_checkpoint(path: Path, classes: int = 5) -> Path:
    torch.manual_seed(1)
    model = create_model('regseg48', num_classes=classes, **SLIM)
    meta = ModelMeta(model='regseg48', num_classes=classes,
                     class_names=[str(i) for i in range(classes)],
                     palette=[[i, i, i] for i in range(classes)], input_size=[32, 64],
                     arch=json.loads(json.dumps(SLIM)))
    save_checkpoint(path, model, meta)
    return path


def test_model_init_adopts_the_checkpoints_architecture(tmp_path, mine, capsys):
    init = _slim_checkpoint(tmp_path / 'searched.pt')
    quick = [x for pair in zip(QUICK[::2], QUICK[1::2])
             if not pair[1].startswith('model.arch') for x in pair]
    out = tmp_path / 'retrain'
    rc, so, err = _train([FOLDER_YAML, '--data', str(mine), '--out', str(out), *quick,
                          '--set', f'model.init={init}'], capsys)
    assert rc == 0, err
    assert 'training its architecture' in so
    # all tensors but the 5-class classifier fit
    assert 'loaded' in so and '(2 class-count tensors stay random)' in so
    assert 'warning' not in err
    meta = load_checkpoint(out / 'final.pt')['meta']
    assert meta.arch == json.loads(json.dumps(SLIM)) and meta.num_classes == 3
    # an explicit, different arch is kept as written, and the partial load is a warning
    other = dict(SLIM, decoder_channels=[16, 8, 16])
    rc, so, err = _train([FOLDER_YAML, '--data', str(mine), '--out', str(tmp_path / 'o'),
                          *quick, '--set', f'model.init={init}',
                          '--set', f'model.arch={json.dumps(other)}'], capsys)
    assert rc == 0, err
    assert err.startswith('warning: model.init') and 'have no match' in err
    loaded, total = map(int, err.split('loaded ')[1].split(' tensors')[0].split(' of '))
    assert 0 < loaded < total


# ---------------------------------------------------------------------------- predict inputs
@pytest.fixture
def tiny_ckpt(tmp_path):
    return _slim_checkpoint(tmp_path / 'tiny.pt', classes=3)


def _predict(args: list[str], capsys) -> tuple[int, str, str]:
    # the tests reuse their --out folders: the overwrite rule is tested in test_cli_vocabulary
    rc = main(['predict', *args, '--overwrite'])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_predict_takes_folders_and_globs(tmp_path, mine, tiny_ckpt, capsys):
    out = tmp_path / 'pred'
    rc, so, err = _predict([str(tiny_ckpt), str(mine / 'images'), '--out', str(out),
                            '--backend', 'torch', '--device', 'cpu', '--threads', '1'], capsys)
    assert rc == 0, err
    assert len(list((out / 'ids').glob('*.png'))) == 10
    out2 = tmp_path / 'pred2'
    rc, so, err = _predict([str(tiny_ckpt), str(mine / 'images' / '*00000000.png'),
                            str(tmp_path / '**' / 'masks' / '*.png'),
                            '--out', str(out2), '--backend', 'torch', '--device', 'cpu'],
                           capsys)
    assert rc == 0, err
    written = sorted(p.name for p in (out2 / 'ids').rglob('*.png'))
    assert len(written) == 20  # 10 images + 10 masks (read as images), distinct outputs
    rc, _, err = _predict([str(tiny_ckpt), str(mine / 'nothing*.png'), '--out', str(out2)],
                          capsys)
    assert rc == 1 and 'no file matches' in err


def test_predict_says_not_found_and_not_readable(tmp_path, mine, tiny_ckpt, capsys):
    out = tmp_path / 'pred'
    rc, _, err = _predict([str(tiny_ckpt), str(tmp_path / 'missing.png'), '--out', str(out)],
                          capsys)
    assert rc == 1 and err.strip().endswith(f'{tmp_path / "missing.png"} not found'), err
    broken = tmp_path / 'broken.png'
    broken.write_bytes(b'not a png')
    good = next((mine / 'images').iterdir())
    rc, so, err = _predict([str(tiny_ckpt), str(good), str(broken), str(tmp_path / 'gone.jpg'),
                            '--out', str(out), '--backend', 'torch', '--device', 'cpu'], capsys)
    assert rc == 1
    assert f'skipping {broken}: not a readable image' in err
    assert f'skipping {tmp_path / "gone.jpg"}: not found' in err
    assert 'wrote 1 result' in so
    (tmp_path / 'emptydir').mkdir()
    rc, _, err = _predict([str(tiny_ckpt), str(tmp_path / 'emptydir'), '--out', str(out)],
                          capsys)
    assert rc == 1 and 'no images in this folder' in err
