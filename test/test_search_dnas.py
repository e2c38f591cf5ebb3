"""RegSeg DNAS (issue 8): fractional dilated conv, rounding rule, emitted configuration."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from seg_ros.search.dnas import (
    DnasRegSeg,
    FractionalDilatedConv2d,
    fractional_backbone_fov,
    round_block_rates,
    round_rates,
)

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _deformable_reference(x: torch.Tensor, w: torch.Tensor, r: float,
                          groups: int) -> torch.Tensor:
    """A deformable 3x3 conv whose taps sit at (i r, j r), sampled by grid_sample (bilinear,
    zero outside): an independent implementation of what the paper describes."""
    n, c, h, wd = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(wd, dtype=x.dtype),
                            indexing='ij')
    cols = []
    for i in (-1, 0, 1):
        for j in (-1, 0, 1):
            gy = (ys + i * r) / (h - 1) * 2 - 1
            gx = (xs + j * r) / (wd - 1) * 2 - 1
            grid = torch.stack([gx, gy], -1)[None].expand(n, -1, -1, -1)
            cols.append(F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros',
                                      align_corners=True))
    col = torch.stack(cols, 2)  # (n, c, 9, h, w)
    cg, og = c // groups, w.shape[0] // groups
    outs = [torch.einsum('nckhw,ock->nohw', col[:, g * cg:(g + 1) * cg],
                         w[g * og:(g + 1) * og].reshape(og, cg, 9)) for g in range(groups)]
    return torch.cat(outs, 1)


@pytest.mark.parametrize('rate', [1, 2, 3, 5])
def test_integer_rate_equals_dilated_conv_and_grad_reaches_rate(rate: int) -> None:
    torch.manual_seed(rate)
    x = torch.randn(2, 8, 13, 17, dtype=torch.float64)
    conv = FractionalDilatedConv2d(8, 8, groups=2, rate=float(rate)).double()
    y = conv(x)
    ref = F.conv2d(x, conv.weight, None, 1, rate, rate, 2)
    assert torch.equal(y, ref)  # exactly, not approximately
    y.square().sum().backward()
    g = conv.rate.grad
    assert g is not None and torch.isfinite(g) and float(g) != 0.0
    assert conv.weight.grad is not None


@pytest.mark.parametrize('rate', [1.5, 2.25, 3.8])
def test_fractional_rate_is_bilinear_deformable_conv(rate: float) -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 4, 11, 14, dtype=torch.float64)
    conv = FractionalDilatedConv2d(4, 6, groups=2, rate=rate).double()
    torch.testing.assert_close(conv(x), _deformable_reference(x, conv.weight, rate, 2))


def test_rate_gradient_matches_finite_difference() -> None:
    torch.manual_seed(1)
    x = torch.randn(1, 4, 12, 12, dtype=torch.float64)
    conv = FractionalDilatedConv2d(4, 4, rate=2.3).double()
    conv(x).sum().backward()
    eps = 1e-6
    with torch.no_grad():
        conv.rate.fill_(2.3 + eps)
        up = conv(x).sum()
        conv.rate.fill_(2.3 - eps)
        down = conv(x).sum()
    assert conv.rate.grad is not None
    assert float(conv.rate.grad) == pytest.approx(float(up - down) / (2 * eps), rel=1e-5)


def test_rate_is_clamped_to_bounds() -> None:
    conv = FractionalDilatedConv2d(4, 4, rate=2.0, max_rate=3.0)
    with torch.no_grad():
        conv.rate.fill_(7.0)
    conv.clamp_()
    assert conv.rate.item() == 3.0
    x = torch.randn(1, 4, 9, 9)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, None, 1, 3, 3))
    with torch.no_grad():
        conv.rate.fill_(0.2)
    conv.clamp_()
    assert conv.rate.item() == 1.0
    with pytest.raises(ValueError):
        FractionalDilatedConv2d(4, 4, rate=0.5)


def test_rounding_rule_floor_min_ceil_max() -> None:
    assert round_block_rates([1.3, 2.6]) == (1, 3)
    assert round_block_rates([3.7, 1.2]) == (1, 4)  # order of branches does not matter
    assert round_block_rates([2.0, 2.0]) == (2, 2)
    assert round_block_rates([4.5, 4.6]) == (4, 5)  # FOV kept, local detail kept
    assert round_block_rates([2.00001, 4.99999]) == (2, 5)  # float noise is not a step
    assert round_block_rates([1.0, 13.2]) == (1, 14)
    assert round_rates([[1.3, 2.6], [5.5, 5.5]]) == [[1, 3], [5, 6]]
    with pytest.raises(ValueError):
        round_block_rates([0.5, 2.0])
    with pytest.raises(ValueError):
        round_block_rates([])


def test_fractional_fov_formula() -> None:
    # RegSeg closed form: 63 + 32 max(r) per 1/16 block (fov.regseg_backbone_fov).
    from seg_ros.models.fov import regseg_backbone_fov
    from seg_ros.models.regseg import DNAS_DILATIONS

    assert fractional_backbone_fov(63 + 32 * 13, [[1, 1]] * 13) == 63 + 32 * 13
    assert fractional_backbone_fov(63 + 32 * 13, DNAS_DILATIONS) == \
        regseg_backbone_fov(DNAS_DILATIONS) == 2399


def test_dnas_regseg_wraps_model_and_all_rates_get_gradients() -> None:
    from seg_ros.models import create_model

    arch = {'stem_channels': 16, 'widths': [16, 32, 64, 64], 'depth8': 1, 'group_width': 8,
            'decoder_channels': [32, 8, 32]}
    model = create_model('regseg48', num_classes=3, dilations=[[1, 2], [2, 3], [1, 3]],
                         **arch).eval()
    # 128 px: the 1/16 map (8 x 8) is larger than every tap offset, so all taps see data
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        before = model(x)
    net = DnasRegSeg(model).eval()
    assert net.rates() == [[1.0, 2.0], [2.0, 3.0], [1.0, 3.0]]
    out = net(x)
    # integer rates: the search model computes what the integer model computed
    torch.testing.assert_close(out, before, rtol=1e-5, atol=1e-5)
    out.square().mean().backward()
    rates = list(net.rate_parameters())
    assert len(rates) == 6
    assert all(p.grad is not None and float(p.grad) != 0.0 for p in rates)
    assert not any(k.endswith('.rate') for k in net.integer_state_dict())
    with pytest.raises(Exception, match='two rates'):
        DnasRegSeg(create_model('regseg48', num_classes=3, dilations=[[1], [2]], **arch))


def test_search_cli_emits_config_that_builds(tmp_path: Path) -> None:
    from seg_ros.cli import main
    from seg_ros.models import create_model
    from seg_ros.models.checkpoint import model_from_checkpoint
    from seg_ros.models.fov import compute_fov

    cfg = {'search': 'dilation',
           'init_dilations': [[1, 1.5], [2, 2], [1, 3.4]],
           'toy': {'size': [64, 64], 'widths': [8, 16], 'rects_per_image': [1, 2]},
           'train': {'steps': 3, 'batch_size': 2, 'log_every': 1, 'eval_images': 1}}
    path = tmp_path / 'dil.yaml'
    path.write_text(yaml.safe_dump(cfg))
    assert main(['search', 'dilation', str(path), '--out', str(tmp_path / 'out'),
                 '--no-progress']) == 0
    res = yaml.safe_load((tmp_path / 'out' / 'dilations.yaml').read_text())
    dil = res['arch']['dilations']
    frac = res['fractional_rates']
    assert len(dil) == 3 and all(len(d) == 2 for d in dil)
    assert dil == round_rates(frac)
    assert frac != [[1, 1.5], [2, 2], [1, 3.4]]  # three steps moved the rates
    model = create_model(res['model'], num_classes=4, **res['arch'])
    assert compute_fov(model, (64, 64)).backbone_fov == res['fov']
    assert res['fov'] >= res['fov_fractional'] - 1e-6  # ceil(max) never loses FOV
    loaded, meta = model_from_checkpoint(tmp_path / 'out' / 'searched.pt')
    assert meta.arch['dilations'] == dil
    assert loaded(torch.randn(1, 3, 64, 64)).shape == (1, 4, 64, 64)
    assert (tmp_path / 'out' / 'rates.png').stat().st_size > 0


def test_search_cli_rejects_bad_config(tmp_path: Path) -> None:
    from seg_ros.cli import main

    path = tmp_path / 'bad.yaml'
    path.write_text(yaml.safe_dump({'search': 'dilation', 'init_dilations': [[1], [2]]}))
    assert main(['search', 'dilation', str(path), '--no-progress']) == 1
    path.write_text(yaml.safe_dump({'search': 'dilation', 'bogus': 1}))
    assert main(['search', 'dilation', str(path), '--no-progress']) == 1
    path.write_text(yaml.safe_dump({'search': 'rtseg'}))
    assert main(['search', 'dilation', str(path), '--no-progress']) == 1
