"""ESeg / ESeg-Lite: paper counts, shapes for any input size, ONNX export + ORT agreement."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from seg_ros.models import eseg as E
from seg_ros.models.counting import count
from seg_ros.models.efficientnet import (
    EfficientNetEncoder,
    FusedMBConv,
    MBConv,
    SqueezeExcite,
    round_filters,
)

ALL = ['eseg_s', 'eseg_m', 'eseg_l', 'eseg_lite_s', 'eseg_lite_m', 'eseg_lite_l']
# Paper Tab. 4: params (M) and FLOPs (= MACs, B) at 1024x2048.
PAPER = {'eseg_s': (6.9, 34.5), 'eseg_m': (20.0, 112.0), 'eseg_l': (70.5, 343.0)}


def _meta(name: str, **overrides: object) -> nn.Module:
    with torch.device('meta'):
        return getattr(E, name)(**overrides).eval()


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics, so logits are O(1) and a 1e-3 tolerance means something."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return model


@pytest.mark.parametrize('name', sorted(PAPER))
def test_counts_match_paper(name: str) -> None:
    params_m, gmacs = PAPER[name]
    model = _meta(name)
    c = count(model, (1024, 2048))
    assert c['params'] == sum(p.numel() for p in model.parameters())  # nothing dead
    # Params reproduce the paper to its rounding (one decimal of millions), well inside +-10 %.
    assert round(c['params'] / 1e6, 1) == params_m
    assert abs(c['macs'] / 1e9 / gmacs - 1) < 0.03


def test_eseg_s_feature_levels_match_table1() -> None:
    # Tab. 1: P2-P5 6.4M, P2-P7 6.6M, P2-P9 6.9M (P6+ pooled from P5, one lateral per level).
    # Every parameter runs in the forward (asserted in test_counts_match_paper), so a plain sum.
    got = [round(sum(p.numel() for p in _meta('eseg_s', max_level=lv).parameters()) / 1e6, 1)
           for lv in (5, 7, 9)]
    assert got == [6.4, 6.6, 6.9]


@pytest.mark.parametrize('variant, width, depth, total', [
    ('b0', 1.0, 1.0, 5_288_548), ('b1', 1.0, 1.1, 7_794_184),
    ('b4', 1.4, 1.8, 19_341_616), ('b7', 2.0, 3.1, 66_347_960)])
def test_encoder_is_efficientnet(variant: str, width: float, depth: float, total: int) -> None:
    # Published EfficientNet totals (ImageNet models) = our encoder + the classification tail we
    # do not build: 1x1 conv to round_filters(1280) + BN + the 1000-way linear layer.
    with torch.device('meta'):
        enc = EfficientNetEncoder(width, depth)
    head = round_filters(1280, width)
    tail = enc.out_channels[-1] * head + 2 * head + head * 1000 + 1000
    assert sum(p.numel() for p in enc.parameters()) + tail == total


def test_lite_s_is_17b_class() -> None:
    c = count(_meta('eseg_lite_s'), (1024, 2048))
    assert abs(c['macs'] / 1e9 / 17.0 - 1) < 0.10  # Sec. 3.2: "ESeg-Lite-S has 17B FLOPs"


def test_lite_structure() -> None:
    lite, full = _meta('eseg_lite_m'), _meta('eseg_s')
    enc = list(lite.encoder.modules())
    assert not any(isinstance(m, (MBConv, SqueezeExcite, nn.SiLU)) for m in enc)
    assert any(isinstance(m, FusedMBConv) for m in enc)
    # No depth-wise conv in the Lite encoder (Sec. 3.3: TensorRT-unfriendly).
    assert all(m.groups == 1 for m in enc if isinstance(m, nn.Conv2d))
    assert len(lite.lateral) == 7 and len(full.lateral) == 8  # P3-P9 vs P2-P9
    assert any(isinstance(m, SqueezeExcite) for m in full.encoder.modules())
    assert any(isinstance(m, nn.SiLU) for m in full.modules())


def test_pyramid_strides_for_odd_size() -> None:
    model = E.eseg_lite_s().eval()
    h, w = 65, 129
    with torch.no_grad():
        feats = model.pyramid(torch.zeros(1, 3, h, w))
    sizes = [tuple(f.shape[-2:]) for f in feats]
    expected = []
    for lv in range(3, 10):  # P3..P9: ceil(n / 2**lv)
        expected.append((-(-h // 2 ** lv), -(-w // 2 ** lv)))
    assert sizes == expected


@pytest.mark.parametrize('name', ALL)
def test_forward_shape_any_size_and_batch(name: str) -> None:
    torch.manual_seed(0)
    model = getattr(E, name)(num_classes=7).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 3, 65, 129))  # 65x129: not divisible by 2**9 (nor by 2)
    assert y.shape == (2, 7, 65, 129)
    assert torch.isfinite(y).all()


def test_batch_samples_are_independent() -> None:
    torch.manual_seed(0)
    model = _randomize_bn(E.eseg_lite_s().eval())
    x = torch.randn(3, 3, 47, 61)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[1:2], model(x[1:2]), rtol=1e-4, atol=1e-5)


def test_training_step_reaches_every_weight() -> None:
    torch.manual_seed(0)
    model = E.eseg_lite_s(num_classes=5).train()
    x = torch.randn(2, 3, 40, 56)
    target = torch.randint(0, 5, (2, 40, 56))
    loss = nn.functional.cross_entropy(model(x), target)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert model.level_weight.grad.abs().sum() > 0
    assert model.bifpn[0].td[0].weight.grad.abs().sum() > 0


def test_overrides_and_errors() -> None:
    assert E.eseg_lite_s(num_classes=3, fpn_repeats=2).cfg.fpn_repeats == 2
    with pytest.raises(ValueError, match='unknown ESeg config fields'):
        E.eseg_s(not_a_field=1)
    with pytest.raises(ValueError, match='min_level'):
        E.eseg_s(min_level=6)
    with pytest.raises(ValueError, match='activation'):
        E.eseg_s(act='tanh')


def _export_and_compare(name: str, tmp_path: Path, dynamic: bool = False) -> None:
    import onnxruntime as ort

    torch.manual_seed(0)
    model = _randomize_bn(getattr(E, name)().eval())
    x = torch.randn(2, 3, 65, 129)  # batch 2: dynamic batch needs an example >= 2
    path = tmp_path / f'{name}.onnx'
    kwargs: dict[str, object] = {}
    if dynamic:
        from torch.export import Dim

        kwargs['dynamic_shapes'] = {'x': {0: Dim('batch', max=64), 2: Dim('h', min=16, max=4096),
                                          3: Dim('w', min=16, max=4096)}}
    torch.onnx.export(model, (x,), str(path), opset_version=18, external_data=False,
                      input_names=['x'], **kwargs)
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    inputs = [x] + ([torch.randn(1, 3, 97, 33), torch.randn(3, 3, 40, 72)] if dynamic else [])
    for xi in inputs:
        with torch.no_grad():
            ref = model(xi).numpy()
        out = sess.run(None, {'x': xi.numpy()})[0]
        assert out.shape == ref.shape
        # A meaningful comparison: non-constant logits, and the error small relative to them
        # too (default-initialised classifiers give logits of only ~0.1).
        scale = float(np.abs(ref).max())
        assert ref.std() > 1e-3 * scale > 0
        diff = float(np.abs(out - ref).max())
        assert diff < 1e-3 * min(1.0, scale)


def test_onnx_export_matches_torch_lite_s(tmp_path: Path) -> None:
    _export_and_compare('eseg_lite_s', tmp_path)


@pytest.mark.exhaustive  # eseg_lite_s runs in make test; the other five: ~140 s
@pytest.mark.parametrize('name', [n for n in ALL if n != 'eseg_lite_s'])
def test_onnx_export_matches_torch(name: str, tmp_path: Path) -> None:
    # ~10-60 s each on 2 cores: the dynamo exporter's time grows with the op count (B7 = 55
    # blocks + 6 BiFPN layers), not with the tiny input size.
    _export_and_compare(name, tmp_path)


@pytest.mark.slow
def test_onnx_dynamic_size_export(tmp_path: Path) -> None:
    # Dynamic batch, height and width: proves no data-dependent Python control flow and that the
    # ceil-chain resampling holds for any size (97x33 is not divisible by 2**9 either way).
    _export_and_compare('eseg_lite_s', tmp_path, dynamic=True)


def test_registered_in_zoo() -> None:
    from seg_ros.models import create_model, list_models

    assert set(ALL) <= set(list_models())
    model = create_model('eseg_lite_s', num_classes=11)
    assert not model.training and model.cfg.num_classes == 11
