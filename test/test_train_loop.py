"""The training loop on synthetic data: learning, bit-exact resume, DDP (gloo), atomic saves."""
from __future__ import annotations

import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

from seg_ros.eval.metrics import ConfusionMatrix, confusion_matrix, mean_iou
from seg_ros.models.checkpoint import load_checkpoint
from seg_ros.train.config import load_config
from seg_ros.train.loop import ResumableSampler, get_rng_state, set_rng_state, train, validate

REPO = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path, name: str, **over: object) -> Path:
    cfg = {
        'name': name, 'out': str(tmp_path / name), 'progress': False, 'log_every': 1,
        'tensorboard': False,
        'model': {'name': 'regseg48'},
        'data': {'kind': 'synthetic', 'options': {'size': [64, 128], 'length': 8, 'stride': 7},
                 'val_options': {'size': [64, 128], 'length': 2},
                 'augment': {'scale': {'factor': [0.75, 1.25]}, 'crop': [48, 96], 'hflip': 0.5},
                 'workers': 0},
        'optim': {'iterations': 6, 'batch_size': 2, 'lr': 0.02, 'warmup_iters': 2,
                  'threads': 1, 'ema': True, 'ema_every': 2, 'ema_alpha': 0.3},
        'loss': {'type': 'bootstrap'},
        'eval': {'every': 3},
        'checkpoint': {'every': 3},
    }
    for key, value in over.items():
        node = cfg
        *parents, leaf = key.split('.')
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path = tmp_path / f'{name}.yaml'
    path.write_text(yaml.safe_dump(cfg))
    return path


def _records(run: Path, kind: str) -> list[dict]:
    lines = (run / 'metrics.jsonl').read_text().splitlines()
    return [r for r in map(json.loads, lines) if r['kind'] == kind]


def test_a_few_iterations_reduce_the_loss(tmp_path):
    # 4 fixed frames, no augmentation: 12 steps must clearly lower the training loss
    path = _config(tmp_path, 'learn', **{
        'data.options': {'size': [48, 96], 'length': 4, 'stride': 9}, 'data.augment': None,
        'data.val_split': None, 'optim.iterations': 12, 'optim.batch_size': 4,
        'optim.lr': 0.05, 'optim.ema': False, 'loss': 'ce', 'checkpoint.every': 0})
    summary = train(load_config(path))
    losses = [r['loss'] for r in _records(tmp_path / 'learn', 'train')]
    assert summary['step'] == 12 and len(losses) == 12
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:2]), losses
    ckpt = load_checkpoint(tmp_path / 'learn' / 'final.pt')
    assert ckpt['meta'].model == 'regseg48' and ckpt['meta'].input_size == [48, 96]
    assert ckpt['extra'].get('train') is None  # deployable file: weights only


def test_resume_after_interruption_is_bit_exact(tmp_path):
    # 8 frames / batch 2 = 4 micro-batches per epoch; 6 steps cross an epoch boundary. The
    # run dies after step 4; its last checkpoint is step 3 (middle of epoch 0), so the resumed
    # run redoes step 4 and must skip the 3 batches of epoch 0 it already used. EMA,
    # augmentation, the bootstrapped loss and the warm-up/poly schedule all run.
    straight = _config(tmp_path, 'straight')
    train(load_config(straight))
    broken = _config(tmp_path, 'broken')
    s1 = train(load_config(broken), stop_after=4)
    assert s1['step'] == 4 and not (tmp_path / 'broken' / 'final.pt').exists()
    assert load_checkpoint(tmp_path / 'broken' / 'last.pt')['extra']['train']['step'] == 3
    train(load_config(broken), resume=True)

    a = load_checkpoint(tmp_path / 'straight' / 'last.pt')
    b = load_checkpoint(tmp_path / 'broken' / 'last.pt')
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for k in a['state_dict']:
        assert torch.equal(a['state_dict'][k], b['state_dict'][k]), k
    ta, tb = a['extra']['train'], b['extra']['train']
    for k in ta['ema']['state']:
        assert torch.equal(ta['ema']['state'][k], tb['ema']['state'][k]), k
    for (ia, sa), (ib, sb) in zip(sorted(ta['optimizer']['state'].items()),
                                  sorted(tb['optimizer']['state'].items())):
        assert ia == ib and torch.equal(sa['momentum_buffer'], sb['momentum_buffer'])
    assert ta['step'] == tb['step'] == 6 and ta['scheduler'] == tb['scheduler']
    fa = load_checkpoint(tmp_path / 'straight' / 'final.pt')['state_dict']
    fb = load_checkpoint(tmp_path / 'broken' / 'final.pt')['state_dict']
    assert all(torch.equal(fa[k], fb[k]) for k in fa)
    # same logged losses after the resume point as well
    la = [r['loss'] for r in _records(tmp_path / 'straight', 'train')]
    lb = [r['loss'] for r in _records(tmp_path / 'broken', 'train')]
    assert la == lb


def test_resume_needs_a_checkpoint(tmp_path):
    from seg_ros.errors import SegRosError
    with pytest.raises(SegRosError, match='no checkpoint'):
        train(load_config(_config(tmp_path, 'none')), resume=True)


def test_sampler_order_depends_on_epoch_only_and_skips():
    data = list(range(10))
    s = ResumableSampler(data, num_replicas=2, rank=1, seed=0)
    s.set_epoch(3)
    full = list(s)
    s.set_epoch(3, skip=2)
    assert list(s) == full[2:] and len(s) == len(full) - 2
    s.set_epoch(4)
    assert list(s) != full
    other = ResumableSampler(data, num_replicas=2, rank=0, seed=0)
    other.set_epoch(3)
    assert not set(other) & set(full)  # the ranks split the epoch


def test_rng_state_round_trip_through_weights_only_file(tmp_path):
    import random
    state = get_rng_state()
    torch.save(state, tmp_path / 'rng.pt')
    want = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(torch.load(tmp_path / 'rng.pt', weights_only=True))
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == want


def test_validate_equals_hand_computed_confusion_matrix():
    class Fixed(torch.nn.Module):
        """Predicts class 0 on the left half, 1 on the right half."""

        def forward(self, x):
            n, _, h, w = x.shape
            out = torch.zeros(n, 3, h, w)
            out[:, 0, :, : w // 2] = 1
            out[:, 1, :, w // 2:] = 1
            return out

    label = np.array([[0, 0, 1, 1], [0, 2, 2, 255]], np.uint8)
    ds = [(np.zeros((2, 4, 3), np.uint8), label)]
    from seg_ros.runtime.normalize import Normalize
    cm = validate(Fixed(), ds, Normalize([0.5] * 3, [0.5] * 3), 3, torch.device('cpu'))
    # rows = GT, cols = prediction. GT0: (0,0)->0,(0,1)->0,(1,0)->0; GT1: (0,2)->1,(0,3)->1;
    # GT2: (1,1)->0, (1,2)->1; the 255 pixel is ignored.
    hand = np.array([[3, 0, 0], [0, 2, 0], [1, 1, 0]])
    np.testing.assert_array_equal(cm.matrix, hand)
    # IoU0 = 3/(3+1) , IoU1 = 2/(2+1), IoU2 = 0/(0+2)
    assert cm.miou() == pytest.approx((0.75 + 2 / 3 + 0.0) / 3)
    assert cm.pixel_accuracy() == pytest.approx(5 / 7)
    # a class absent from both GT and prediction is left out of the mean (Cityscapes)
    big = np.zeros((4, 4), np.int64)
    big[:3, :3] = hand
    assert mean_iou(big) == pytest.approx(cm.miou())
    assert np.array_equal(confusion_matrix(np.array([1, 1]), np.array([1, 255]), 2),
                          [[0, 0], [0, 1]])
    merged = ConfusionMatrix(3)
    merged.merge(cm)
    merged.merge(cm.matrix)
    np.testing.assert_array_equal(merged.matrix, 2 * hand)


def _slow_saver_script(path: Path, flag: Path) -> str:
    return f'''
import time, torch
from pathlib import Path
from seg_ros.metadata import ModelMeta
from seg_ros.models.checkpoint import save_checkpoint

class Stall:
    """Pickling this blocks forever: the process is killed while the file is half written."""
    def __reduce__(self):
        Path({str(flag)!r}).write_text('writing')
        time.sleep(600)
        return (int, (0,))

state = {{'w': torch.full((256, 256), 2.0)}}
save_checkpoint({str(path)!r}, state, ModelMeta(model='regseg48'),
                extra={{'big': torch.zeros(1 << 20), 'stall': Stall()}})
'''


def test_checkpoint_write_killed_halfway_keeps_the_previous_one(tmp_path):
    from seg_ros.metadata import ModelMeta
    from seg_ros.models.checkpoint import save_checkpoint
    path = tmp_path / 'last.pt'
    save_checkpoint(path, {'w': torch.full((256, 256), 1.0)}, ModelMeta(model='regseg48'),
                    extra={'step': 1})
    before = path.read_bytes()
    flag = tmp_path / 'flag'
    proc = subprocess.Popen([sys.executable, '-c', _slow_saver_script(path, flag)],
                            cwd=REPO)
    try:
        deadline = time.time() + 120
        while not flag.exists():
            assert proc.poll() is None, 'saver exited early'
            assert time.time() < deadline, 'saver never started writing'
            time.sleep(0.2)
        tmp = [p for p in tmp_path.iterdir() if p.name.startswith('.last.pt.')]
        assert tmp  # the temporary file is being written
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert path.read_bytes() == before
    ckpt = load_checkpoint(path)
    assert ckpt['extra'] == {'step': 1} and float(ckpt['state_dict']['w'][0, 0]) == 1.0


def test_ddp_two_processes_gloo_trains_and_checkpoints(tmp_path):
    path = _config(tmp_path, 'ddp', **{'optim.iterations': 2, 'optim.ema': False,
                                       'eval.every': 2, 'checkpoint.every': 1,
                                       'model.sync_bn': True})
    torchrun = Path(sys.executable).parent / 'torchrun'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [str(torchrun), '--standalone', '--nproc_per_node=2', '-m', 'seg_ros.train',
         str(path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / 'ddp'
    ckpt = load_checkpoint(run / 'last.pt')
    assert ckpt['extra']['train']['step'] == 2
    # rank 0 logs alone: one record per step, and the validation covered both shards
    assert [r['step'] for r in _records(run, 'train')] == [1, 2]
    val = _records(run, 'val')
    from seg_ros.data.datasets import build_dataset
    labels = [lab for _, lab in build_dataset('synthetic', None, 'val', size=(64, 128),
                                                length=2)]
    assert len(val) == 1 and val[0]['pixels'] == sum(int((lab != 255).sum()) for lab in labels)
    assert (run / 'final.pt').is_file()


def test_multi_drive_synthetic_training_set():
    from seg_ros.data.datasets import build_dataset
    from seg_ros.data.drives import build_drives_dataset
    ds = build_drives_dataset('synthetic', None, 'val', size=(32, 64), drives=2, length=2,
                              stride=3)
    assert len(ds) == 4 and ds.num_classes == 19
    # sample 2 is frame 0 of the second drive (seed 1 + the val offset 1000)
    want = build_dataset('synthetic', None, 'val', size=(32, 64), drive_seed=1, length=2,
                         stride=3)
    np.testing.assert_array_equal(ds[2][0], want[0][0])
    assert not np.array_equal(ds[0][0], ds[2][0])
    ds.set_epoch(3)
    assert all(p is None or p.epoch == 3 for p in ds.parts)
    with pytest.raises(IndexError):
        ds[4]
    from seg_ros.errors import SegRosError
    with pytest.raises(SegRosError):
        build_drives_dataset('folder', '/nope', 'val', drives=2)
