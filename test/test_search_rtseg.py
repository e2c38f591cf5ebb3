"""RTSeg search (issue 8): DWBC + STE, Gumbel block selection, subnet extraction, latency
model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
import yaml

from seg_ros.search.latency import (
    LatencyMLP,
    LatencyModel,
    Unit,
    fit_from_table,
    fit_latency_model,
    measure_unit,
    model_units,
    relative_errors,
    sample_units,
    unit_macs,
)
from seg_ros.search.rtseg_search import (
    DWBC,
    SEARCH_OPS,
    GumbelMixedBlock,
    SearchSupernet,
    extract_subnet,
    mask_groups,
    search_config,
)

TINY = {'detail': [[8, 8], [8, 8, 8], [16, 16, 16]], 'stem': 8, 'channels': [8, 16, 32],
        'depths': [1, 1, 3], 'bga': 16, 'decoder': 32, 'patches': [2, 1, 1],
        'expand_ratio': 4, 'head_dim': 8, 'mlp_ratio': 2}


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _tiny_cfg(tmp_path: Path) -> object:
    p = tmp_path / 'tiny.yaml'
    p.write_text(yaml.safe_dump({'supernet': TINY}))
    return search_config(str(p))['supernet_cfg']


def test_dwbc_forward_is_binary_mask_and_ste_backward() -> None:
    d = DWBC(6, init=1.0)
    with torch.no_grad():
        d.weight.copy_(torch.tensor([0.9, 0.2, 0.51, 0.5, -1.0, 3.0]))
    x = torch.randn(2, 6, 4, 5, requires_grad=True)
    y = d(x)
    keep = torch.tensor([1.0, 0, 1, 0, 0, 1])  # threshold 0.5, strictly greater keeps
    assert torch.equal(y, x * keep.view(1, -1, 1, 1))
    assert d.kept().tolist() == [0, 2, 5]
    g = torch.randn_like(y)
    y.backward(g)
    # STE (Eq. 6): dL/dc = dL/db = sum over batch and pixels of g * x, also for pruned channels
    expected = (g * x.detach()).sum(dim=(0, 2, 3))
    assert d.weight.grad is not None
    torch.testing.assert_close(d.weight.grad, expected)
    assert x.grad is not None and torch.equal(x.grad, g * keep.view(1, -1, 1, 1))
    # token layout (N, T, C) for the MHSA MLP
    t = torch.randn(2, 7, 6)
    assert torch.equal(d(t), t * keep)
    # count is differentiable and a layer never vanishes
    d.weight.grad = None
    d.count().backward()
    assert torch.equal(d.weight.grad, torch.ones(6))
    with torch.no_grad():
        d.weight.fill_(0.1)
    assert d.hard().sum() == 1
    d.enabled = False
    assert torch.equal(d(x), x)


def _gumbel_block() -> GumbelMixedBlock:
    from seg_ros.models.rtseg import BlockSpec, MixedBlock

    blk = MixedBlock(8, 1, BlockSpec('lir+mhsa', lir_mid=8, lir_expand=16, heads=1,
                                     head_dim=8, mlp_hidden=16)).eval()
    return GumbelMixedBlock(blk)


def test_gumbel_selection_one_path_and_gradient() -> None:
    torch.manual_seed(0)
    g = _gumbel_block()
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        outs = {'skip': x, 'lir': g.paths['lir'](x), 'mhsa': g.paths['mhsa'](x)}
    seen = set()
    for _ in range(30):
        g.alpha.grad = None
        y = g(x)
        assert g.last_h is not None
        h = g.last_h.detach()
        assert float(h.sum()) == 1.0 and int((h == 1).sum()) == 1  # hard one-hot
        op = SEARCH_OPS[int(h.argmax())]
        seen.add(op)
        torch.testing.assert_close(y, outs[op])
        y.sum().backward()
        assert g.alpha.grad is not None and torch.isfinite(g.alpha.grad).all()
        assert float(g.alpha.grad.abs().sum()) > 0
    assert seen == set(SEARCH_OPS)  # uniform logits: every op gets sampled
    with torch.no_grad():
        g.alpha.copy_(torch.tensor([0.0, 6.0, 0.0]))
    picks = [SEARCH_OPS[int(g.weights().argmax())] for _ in range(300)]
    assert picks.count('lir') / len(picks) > 0.95  # sampling follows the logits
    g.mode = 'argmax'
    assert g.choice() == 'lir'
    torch.testing.assert_close(g(x), outs['lir'])
    g.mode = 'supernet'
    torch.testing.assert_close(g(x), outs['lir'] + outs['mhsa'])


def test_subnet_extraction_matches_masked_supernet(tmp_path: Path) -> None:
    from seg_ros.metadata import ModelMeta
    from seg_ros.models.checkpoint import model_from_checkpoint, save_checkpoint
    from seg_ros.models.rtseg import RTSeg

    torch.manual_seed(0)
    cfg = _tiny_cfg(tmp_path)
    s = SearchSupernet(cfg, num_classes=5, mask_init=1.0, aux_hidden=8)
    with torch.no_grad():
        for d in s.masks.values():
            d.weight.uniform_(0, 1)  # about half of every width pruned
        ops = iter(['lir', 'mhsa', 'skip', 'mhsa', 'lir'])
        for _, b in s.gumbel_blocks():
            b.alpha.zero_()
            b.alpha[SEARCH_OPS.index(next(ops))] = 1.0
    s.train()
    s.set_mode('sample', 1.0)
    for _ in range(2):  # non-trivial BN statistics
        s(torch.randn(2, 3, 64, 96))
    s.eval()
    s.set_mode('argmax')
    assert s.ops() == [['lir'], ['mhsa'], ['skip', 'mhsa', 'lir']]
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ref = s(x)
    sub = extract_subnet(s)
    assert isinstance(sub, RTSeg)
    assert not any(isinstance(m, (DWBC, GumbelMixedBlock)) for m in sub.modules())
    assert not any(h for m in sub.modules() for h in m._forward_hooks.values())
    counts = s.counts()
    assert sub.cfg.decoder == counts['decoder:hidden'] < 32
    assert sub.cfg.stages[2].blocks[1].op == 'mhsa'
    assert sub.decoder.conv.conv.weight.shape[0] == counts['decoder:hidden']
    with torch.no_grad():
        out = sub(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    n_sub = sum(p.numel() for p in sub.parameters())
    assert n_sub < sum(p.numel() for p in s.model.parameters() if p.dim() > 0) / 2
    # a seg_ros checkpoint of `rtseg_supernet` + the subnet config rebuilds the same model
    arch = {k: v for k, v in sub.cfg.to_dict().items() if k != 'num_classes'}
    meta = ModelMeta('rtseg_supernet', 5, class_names=list('abcde'), palette=[[0, 0, 0]] * 5,
                     arch=arch)
    save_checkpoint(tmp_path / 'sub.pt', sub, meta)
    loaded, _ = model_from_checkpoint(tmp_path / 'sub.pt')
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ref, rtol=1e-5, atol=1e-5)


def test_mask_groups_cover_supernet_widths(tmp_path: Path) -> None:
    cfg = _tiny_cfg(tmp_path)
    names = [g.name for g in mask_groups(cfg)]
    assert 'decoder:hidden' in names and 'segment.stages.2.3.paths.mhsa:mlp' in names
    assert 'detail.6:out' in names and 'detail.7:out' not in names  # last feeds BGA
    assert len(names) == len(set(names))


def test_latency_gradients_reach_masks_and_block_logits(tmp_path: Path) -> None:
    cfg = _tiny_cfg(tmp_path)
    s = SearchSupernet(cfg, num_classes=5, aux_hidden=0)
    torch.manual_seed(0)
    lat = LatencyModel(LatencyMLP(16), overhead_ms=1.0)
    s.train()
    s.set_mode('sample', 1.0)
    s(torch.randn(2, 3, 64, 96))
    ms = s.latency(lat, (64, 96))
    assert ms.dim() == 0 and float(ms) > 1.0
    ms.backward()
    grads = [float(d.weight.grad.abs().sum()) if d.weight.grad is not None else 0.0
             for d in s.masks.values()]
    assert sum(g > 0 for g in grads) >= len(grads) // 2  # gated-off paths get none
    alphas = [b.alpha.grad for _, b in s.gumbel_blocks()]
    assert any(a is not None and float(a.abs().sum()) > 0 for a in alphas)


def test_latency_mlp_has_five_fc_layers_and_fits_known_law() -> None:
    mlp = LatencyMLP()
    assert sum(isinstance(m, nn.Linear) for m in mlp.modules()) == 5
    # A table from a known cost law: the fit must reach a few percent on held-out units.
    base = [Unit('conv', 32, 64, 3, 1, 32, 64), Unit('conv', 64, 64, 1, 1, 16, 32),
            Unit('dw', 96, 96, 3, 2, 32, 64), Unit('mhsa', 32, 128, 1, 1, 8, 16, 2, 16),
            Unit('conv', 3, 32, 3, 2, 128, 256)]
    units = sample_units(base, 240, seed=1)
    ms = [0.05 + 2e-7 * unit_macs(u) + (0.2 if u.kind == 'mhsa' else 0.0) for u in units]
    table = {'meta': {'input_size': [128, 256]},
             'units': [{**u.__dict__, 'ms': m} for u, m in zip(units, ms)], 'models': []}
    lat, rep = fit_from_table(table, holdout=0.25, steps=1500)
    assert rep['holdout_mre'] < 0.05, rep
    # and a constant (mean) predictor is far worse: the test can fail
    m = np.asarray(ms)
    assert np.mean(np.abs(m.mean() - m) / m) > 4 * rep['holdout_mre']


def test_latency_model_on_small_measured_table(tmp_path: Path) -> None:
    from seg_ros.models.rtseg import RTSeg

    cfg = _tiny_cfg(tmp_path)
    base = model_units(RTSeg(cfg), (32, 64))
    units = sample_units(base, 48, seed=0)
    ms = [measure_unit(u, repeats=5, warmup=1) for u in units]
    assert all(m > 0 for m in ms)
    mlp = fit_latency_model(units[:36], ms[:36], steps=800)
    err = relative_errors(mlp, units[36:], ms[36:])
    # Timings of a shared CPU carry any amount of noise (an idle AVX2 EPYC gave a held-out
    # error of 0.75 where a loaded Xeon gave < 0.6), so the fit's accuracy is tested on the
    # known cost law above; here the measured path must give finite predictions.
    assert err.shape == (12,) and np.isfinite(err).all()
    lat = LatencyModel(mlp, 0.5, {'input_size': [32, 64]})
    lat.save(tmp_path / 'lat.pt')
    again = LatencyModel.load(tmp_path / 'lat.pt')
    assert again.overhead_ms == 0.5
    assert float(again.unit_ms(units[0])) == pytest.approx(float(lat.unit_ms(units[0])))


def test_padded_and_aligned_width_features() -> None:
    from seg_ros.search.latency import FEATURES, unit_features

    idx = {name: i for i, name in enumerate(FEATURES)}
    c = torch.tensor(13.0, requires_grad=True)
    f = unit_features('dw', c, c, 3, 1, 16, 32)
    # 13 channels compute like 16 (two AVX2 registers) and are not NCHWc-aligned
    assert float(f[idx['log_cin8']]) == pytest.approx(np.log1p(16.0))
    assert float(f[idx['cin_aligned']]) == 0.0
    assert float(unit_features('dw', 16.0, 16.0, 3, 1, 16, 32)[idx['cin_aligned']]) == 1.0
    # the padded width passes the gradient straight through: the search still sees a slope
    f[idx['log_cin8']].backward()
    assert float(c.grad) == pytest.approx(1.0 / 17.0)


@pytest.mark.parametrize('kind', ['conv', 'dw', 'mhsa'])
def test_measure_unit_on_onnxruntime(kind: str) -> None:
    u = {'conv': Unit('conv', 8, 12, 3, 2, 32, 64), 'dw': Unit('dw', 16, 16, 3, 1, 16, 32),
         'mhsa': Unit('mhsa', 16, 32, 1, 1, 8, 16, 2, 8)}[kind]
    ms = measure_unit(u, 'onnxruntime', warmup=1, repeats=3)
    assert 0 < ms < 1000
    with pytest.raises(Exception, match='not supported'):
        measure_unit(u, 'tensorrt')


def test_search_rtseg_cli_end_to_end(tmp_path: Path) -> None:
    from seg_ros.cli import main
    from seg_ros.models.checkpoint import model_from_checkpoint

    cfg = {'search': 'rtseg', 'supernet': TINY, 'input_size': [32, 64],
           'latency': {'samples': 16, 'models': 1, 'repeats': 2, 'rounds': 1, 'fit_steps': 200,
                       'bench_repeats': 2},
           'train': {'steps': 2, 'batch_size': 2, 'arch_warmup': 0, 'aux_hidden': 8,
                     'log_every': 1}}
    path = tmp_path / 'rt.yaml'
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / 'out'
    assert main(['search', 'rtseg', str(path), '--target-ms', '5', '--out', str(out),
                 '--no-progress']) == 0
    for f in ('subnet.pt', 'subnet.json', 'report.json', 'latency_table.json',
              'latency_model.pt'):
        assert (out / f).is_file(), f
    model, meta = model_from_checkpoint(out / 'subnet.pt')
    assert meta.model == 'rtseg_supernet' and meta.arch['stages']
    assert model(torch.randn(1, 3, 32, 64)).shape == (1, 19, 32, 64)
    # the subnet is a plain model: no search modules
    assert not any(isinstance(m, (DWBC, GumbelMixedBlock)) for m in model.modules())
    # no target: clear error
    assert main(['search', 'rtseg', str(path), '--out', str(out), '--no-progress',
                 '--overwrite']) == 1
