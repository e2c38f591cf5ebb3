"""`seg-ros convert-official`: fake official checkpoints built from the reference key layouts.

Exactness is checked two ways: (1) every tensor of our converted model is *the* official
tensor of the corresponding official key (identity per mapped key), and (2) the converted
model's logits equal those of an independent functional re-implementation of the official
forward that reads the official key names directly (written from shared/reference/README.md,
not from our modules), so a wrong split order, concat order or SE placement fails.
"""
from __future__ import annotations

from pathlib import Path
import re

import pytest
import torch
import torch.nn.functional as F

from seg_ros.errors import SegRosError
from seg_ros.models import regseg, sfnet  # noqa: F401  (registers the variants)
from seg_ros.models.checkpoint import load_checkpoint
from seg_ros.models.convert import convert_official, convert_state_dict

REF = Path('/work/shared/reference')
KEYFILES = {
    'regseg48': 'regseg_exp48_decoder26_state_dict_keys.txt',
    'sfnet_lite_r18': 'sfnet_lite_r18_state_dict_keys.txt',
    'sfnet_lite_stdc1': 'sfnet_lite_stdc1_state_dict_keys.txt',
    'sfnet_lite_stdc2': 'sfnet_lite_stdc2_state_dict_keys.txt',
    'sfnet_r18': 'sfnet_r18_state_dict_keys.txt',
}


def fake_official(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in the official key/shape layout; BN stats valid, STDC aliases shared."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for line in (REF / KEYFILES[name]).read_text().splitlines():
        key, shape_txt = line.split('\t')
        shape = tuple(int(v) for v in shape_txt.strip('()').split(',') if v.strip())
        if key.endswith('num_batches_tracked'):
            sd[key] = torch.tensor(100)
        elif key.endswith('running_var'):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith('.weight') and len(shape) == 1:  # BN gamma
            sd[key] = torch.rand(shape, generator=g) + 0.5
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod().item())) if len(shape) > 1 else 1
            sd[key] = torch.randn(shape, generator=g) / fan_in ** 0.5
    # The official STDC x2..x32 Sequentials alias `features`: same tensors under two names.
    if 'stdc' in name:
        n1 = 2 + 2 if name.endswith('stdc1') else 2 + 4
        n2 = n1 + (2 if name.endswith('stdc1') else 5)
        starts = {'x2': 0, 'x4': 1, 'x8': 2, 'x16': n1, 'x32': n2}
        for key in list(sd):
            m = re.match(r'backbone\.(x\d+)\.0\.(\d+)\.(.*)', key)
            if m:
                assert int(m.group(2)) >= starts[m.group(1)]
                sd[key] = sd[f'backbone.features.{m.group(2)}.{m.group(3)}']
    return sd


# ---- independent functional re-implementations of the official forwards ---------------

def _bn(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str) -> torch.Tensor:
    return F.batch_norm(x, sd[p + '.running_mean'], sd[p + '.running_var'], sd[p + '.weight'],
                        sd[p + '.bias'], False, 0.0, 1e-5)


def _regseg_dblock(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str, dil: list[int],
                   stride: int) -> torch.Tensor:
    sc = x
    if p + '.shortcut.conv.weight' in sd:
        if stride == 2:
            sc = F.avg_pool2d(sc, 2, 2, ceil_mode=True)
        sc = _bn(F.conv2d(sc, sd[p + '.shortcut.conv.weight']), sd, p + '.shortcut.bn')
    y = F.relu(_bn(F.conv2d(x, sd[p + '.conv1.weight']), sd, p + '.bn1'))
    if len(dil) == 1:
        y = F.conv2d(y, sd[p + '.conv2.weight'], stride=stride, padding=dil[0],
                     dilation=dil[0], groups=y.shape[1] // 16)
    else:  # official DilatedConv: tensor_split in list order, concat
        parts = torch.tensor_split(y, len(dil), dim=1)
        y = torch.cat([F.conv2d(c, sd[f'{p}.conv2.convs.{i}.weight'], padding=d, dilation=d,
                                groups=c.shape[1] // 16)
                       for i, (c, d) in enumerate(zip(parts, dil))], dim=1)
    y = F.relu(_bn(y, sd, p + '.bn2'))
    s = F.adaptive_avg_pool2d(y, 1)
    s = torch.sigmoid(F.conv2d(F.relu(F.conv2d(s, sd[p + '.se.conv1.weight'],
                                               sd[p + '.se.conv1.bias'])),
                               sd[p + '.se.conv2.weight'], sd[p + '.se.conv2.bias']))
    y = _bn(F.conv2d(y * s, sd[p + '.conv3.weight']), sd, p + '.bn3')
    return F.relu(y + sc)


def _cba(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str, pad: int = 0,
         stride: int = 1) -> torch.Tensor:
    return F.relu(_bn(F.conv2d(x, sd[p + '.conv.weight'], stride=stride, padding=pad), sd,
                      p + '.bn'))


def official_regseg_exp48(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    size = x.shape[-2:]
    x = _cba(x, sd, 'stem', 1, 2)
    x4 = _regseg_dblock(x, sd, 'body.stage4', [1], 2)
    x8 = x4
    for i in range(3):
        x8 = _regseg_dblock(x8, sd, f'body.stage8.{i}', [1], 2 if i == 0 else 1)
    ds = [[1], [1, 2]] + 4 * [[1, 4]] + 7 * [[1, 14]]
    x16 = _regseg_dblock(x8, sd, 'body.stage16.0', [1], 2)
    for i, d in enumerate(ds):
        x16 = _regseg_dblock(x16, sd, f'body.stage16.{i + 1}', d, 1)
    h16 = _cba(x16, sd, 'decoder.head16')
    h8 = _cba(x8, sd, 'decoder.head8')
    h4 = _cba(x4, sd, 'decoder.head4')
    h16 = F.interpolate(h16, size=h8.shape[-2:], mode='bilinear', align_corners=False)
    h8 = _cba(h8 + h16, sd, 'decoder.conv8', 1)
    h8 = F.interpolate(h8, size=h4.shape[-2:], mode='bilinear', align_corners=False)
    h4 = _cba(torch.cat((h8, h4), 1), sd, 'decoder.conv4', 1)
    y = F.conv2d(h4, sd['decoder.classifier.weight'], sd['decoder.classifier.bias'])
    return F.interpolate(y, size=size, mode='bilinear', align_corners=False)


def _official_flow_warp(inp: torch.Tensor, flow: torch.Tensor, size: torch.Size) -> torch.Tensor:
    out_h, out_w = size
    n = inp.shape[0]
    norm = torch.tensor([[[[out_w, out_h]]]]).type_as(inp)
    h = torch.linspace(-1.0, 1.0, out_h).view(-1, 1).repeat(1, out_w)
    w = torch.linspace(-1.0, 1.0, out_w).repeat(out_h, 1)
    grid = torch.cat((w.unsqueeze(2), h.unsqueeze(2)), 2).repeat(n, 1, 1, 1).type_as(inp)
    grid = grid + flow.permute(0, 2, 3, 1) / norm
    return F.grid_sample(inp, grid, align_corners=True)


def _up(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode='bilinear', align_corners=True)


def _official_r18(sd: dict[str, torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    x = F.relu(_bn(F.conv2d(x, sd['layer0.0.0.weight'], stride=2, padding=1), sd, 'layer0.0.1'))
    x = F.relu(_bn(F.conv2d(x, sd['layer0.0.3.weight'], padding=1), sd, 'layer0.0.4'))
    x = F.conv2d(x, sd['layer0.0.6.weight'], padding=1)
    x = F.max_pool2d(F.relu(_bn(x, sd, 'layer0.1')), 3, 2, 1)
    feats = []
    for li, (stride, dil) in enumerate([(1, 1), (2, 1), (2, 2), (2, 4)], start=1):
        for b in range(2):
            p = f'layer{li}.{b}'
            s = stride if b == 0 else 1
            res = x
            if p + '.downsample.0.weight' in sd:
                res = _bn(F.conv2d(x, sd[p + '.downsample.0.weight'], stride=s), sd,
                          p + '.downsample.1')
            y = F.relu(_bn(F.conv2d(x, sd[p + '.conv1.weight'], stride=s, padding=1), sd,
                           p + '.bn1'))
            y = _bn(F.conv2d(y, sd[p + '.conv2.weight'], padding=dil, dilation=dil), sd,
                    p + '.bn2')
            x = F.relu(y + res)
        feats.append(x)
    return feats


def _official_stdc(sd: dict[str, torch.Tensor], x: torch.Tensor,
                   layers: list[int]) -> list[torch.Tensor]:
    def convx(t: torch.Tensor, p: str, stride: int = 1) -> torch.Tensor:
        k = sd[p + '.conv.weight'].shape[-1]
        return _cba(t, sd, p, k // 2, stride)

    x = convx(convx(x, 'backbone.features.0', 2), 'backbone.features.1', 2)
    feats = [x]
    idx = 2
    for n in layers:
        for j in range(n):
            p = f'backbone.features.{idx}'
            out1 = convx(x, p + '.conv_list.0')
            if j == 0:  # stride-2 CatBottleneck
                c = out1.shape[1]
                out = _bn(F.conv2d(out1, sd[p + '.avd_layer.0.weight'], stride=2, padding=1,
                                   groups=c), sd, p + '.avd_layer.1')
            else:
                out = out1
            outs = []
            for i in range(1, 4):
                out = convx(out, f'{p}.conv_list.{i}')
                outs.append(out)
            if j == 0:
                out1 = F.avg_pool2d(out1, 3, 2, 1)
            x = torch.cat([out1] + outs, 1)
            idx += 1
        feats.append(x)
    return feats


def official_sfnet_lite(sd: dict[str, torch.Tensor], x: torch.Tensor,
                        backbone: str) -> torch.Tensor:
    size = x.shape[-2:]
    if backbone == 'r18':
        c = _official_r18(sd, x)
    else:
        c = _official_stdc(sd, x, [2, 2, 2] if backbone == 'stdc1' else [4, 5, 3])
    f32 = c[-1]
    priors = []
    for i, b in enumerate((1, 2, 3, 6)):
        q = f'head.ppm.stages.{i}'
        t = _bn(F.conv2d(F.adaptive_avg_pool2d(f32, b), sd[q + '.1.weight']), sd, q + '.2')
        priors.append(_up(t, f32.shape[-2:]))
    psp = F.relu(_bn(F.conv2d(torch.cat(priors + [f32], 1), sd['head.ppm.bottleneck.0.weight']),
                     sd, 'head.ppm.bottleneck.1'))

    def fpn_in(t: torch.Tensor, i: int) -> torch.Tensor:
        q = f'head.fpn_in.{i}'
        return F.relu(_bn(F.conv2d(t, sd[q + '.0.weight'], sd[q + '.0.bias']), sd, q + '.1'))

    p2, p4 = fpn_in(c[0], 0), fpn_in(c[2], 1)
    fa = 'head.flow_align_module.'
    s2 = p2.shape[-2:]
    lf = F.conv2d(p2, sd[fa + 'down_l.weight'])
    hf = _up(F.conv2d(psp, sd[fa + 'down_h.weight']), s2)
    flow = F.conv2d(torch.cat([hf, lf], 1), sd[fa + 'flow_make.weight'], padding=1)
    hw = _official_flow_warp(psp, flow[:, :2], s2)
    lw = _official_flow_warp(p2, flow[:, 2:], s2)
    stats = torch.cat([hf.mean(1, keepdim=True), p2.mean(1, keepdim=True),
                       hf.max(1)[0].unsqueeze(1), p2.max(1)[0].unsqueeze(1)], 1)
    gate = torch.sigmoid(F.conv2d(stats, sd[fa + 'flow_gate.0.weight'], padding=1))
    fusion = hw * gate + lw * (1 - gate)
    y = torch.cat([fusion, _up(p4, s2)], 1)
    y = F.relu(_bn(F.conv2d(y, sd['head.conv_last.0.0.weight'], padding=1), sd,
                   'head.conv_last.0.1'))
    y = F.conv2d(y, sd['head.conv_last.1.weight'], sd['head.conv_last.1.bias'])
    return _up(y, size)


# ---- tests --------------------------------------------------------------------------------

def _official_name(name: str, our_key: str) -> str:
    return our_key[len('backbone.'):] if re.match(r'backbone\.layer\d', our_key) else our_key


@pytest.mark.parametrize('name,wrap,prefix', [
    ('regseg48', None, ''),
    ('regseg48', 'model', ''),
    ('sfnet_lite_r18', 'state_dict', 'module.'),
    ('sfnet_lite_stdc1', 'state_dict', 'module.'),
    ('sfnet_lite_stdc2', None, 'module.'),
    ('sfnet_r18', 'state_dict', ''),
])
def test_convert_maps_every_tensor_exactly(name: str, wrap: str | None, prefix: str,
                                           tmp_path: Path) -> None:
    official = fake_official(name)
    data: dict = {prefix + k: v for k, v in official.items()}
    if wrap:
        data = {wrap: data, 'epoch': 3, 'command': 'python train.py'}
    src = tmp_path / 'official.pth'
    torch.save(data, src)
    family = 'regseg' if name.startswith('regseg') else 'sfnet-lite'
    out = tmp_path / 'ours.pt'
    res = convert_official(family, src, out, model_name='sfnet_r18' if name == 'sfnet_r18'
                           else None)
    assert res['model'] == name
    ckpt = load_checkpoint(out)
    assert ckpt['meta'].model == name and ckpt['meta'].num_classes == 19
    state = ckpt['state_dict']
    for k, v in state.items():
        assert torch.equal(v, official[_official_name(name, k)]), k
    used = {_official_name(name, k) for k in state}
    assert set(res['dropped']) == set(official) - used


@pytest.mark.parametrize('name,backbone', [('regseg48', None), ('sfnet_lite_r18', 'r18'),
                                           ('sfnet_lite_stdc1', 'stdc1')])
def test_converted_logits_equal_official_forward(name: str, backbone: str | None) -> None:
    official = fake_official(name, seed=1)
    family = 'regseg' if backbone is None else 'sfnet-lite'
    model, _ = convert_state_dict(family, official)
    x = torch.randn(2, 3, 35, 67, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model(x)
        ref = (official_regseg_exp48(official, x) if backbone is None
               else official_sfnet_lite(official, x, backbone))
    assert ours.shape == ref.shape == (2, 19, 35, 67)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_convert_errors_are_clear(tmp_path: Path) -> None:
    official = fake_official('regseg48')
    broken = dict(official)
    del broken['body.stage16.5.conv2.convs.1.weight']
    with pytest.raises(SegRosError, match=r'missing.*stage16\.5\.conv2\.convs\.1'):
        convert_state_dict('regseg', broken)
    bad = dict(official)
    bad['decoder.conv4.conv.weight'] = torch.zeros(64, 70, 3, 3)
    with pytest.raises(SegRosError, match=r'mis-shaped.*decoder\.conv4\.conv\.weight'):
        convert_state_dict('regseg', bad)
    extra = dict(official)
    extra['head.something.weight'] = torch.zeros(3)
    with pytest.raises(SegRosError, match='unexpected.*head.something'):
        convert_state_dict('regseg', extra)
    with pytest.raises(SegRosError, match='not in family'):
        convert_state_dict('regseg', official, 'sfnet_lite_r18')
    with pytest.raises(SegRosError, match='not an SFNet checkpoint'):
        convert_state_dict('sfnet-lite', official)
    with pytest.raises(SegRosError, match='not found'):
        convert_official('regseg', tmp_path / 'nope.pth', tmp_path / 'o.pt')
    (tmp_path / 'junk.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(SegRosError, match='cannot be read'):
        convert_official('regseg', tmp_path / 'junk.pth', tmp_path / 'o.pt')
    assert not (tmp_path / 'o.pt').exists()
