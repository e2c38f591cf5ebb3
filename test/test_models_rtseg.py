"""RTSeg (rtseg.txt): paper numbers, shapes, block semantics, export, training heads."""
from __future__ import annotations

import copy
import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seg_ros.models import create_model, list_models
from seg_ros.models.counting import count
from seg_ros.models.rtseg import (
    SUPERNET,
    Attention,
    BlockSpec,
    MHSABlock,
    MixedBlock,
    RTSeg,
    RTSegConfig,
    StageSpec,
    derive_subnet,
)
from seg_ros.models.rtseg_train import RTSegTrain

RTSEG_MODELS = ['rtseg_s', 'rtseg_m', 'rtseg_l', 'rtseg_supernet']

# Tab. 1 of rtseg.txt at 512x1024: (params, GMACs); tolerance +-10% (issue 3).
PAPER = {
    'rtseg_s': (2.69e6, 5.7e9),
    'rtseg_m': (3.56e6, 9.2e9),
    'rtseg_l': (5.55e6, 20.8e9),
    'rtseg_supernet': (24.43e6, 136.0e9),
}


@pytest.fixture(scope='module')
def models() -> dict[str, RTSeg]:
    """Each registered variant built once (19 classes, eval mode); tests must not modify them."""
    torch.manual_seed(0)
    return {name: create_model(name) for name in RTSEG_MODELS}


def _tiny_config(op: str = 'lir+mhsa', patch: int = 2) -> RTSegConfig:
    block = BlockSpec(op, lir_mid=8, lir_expand=16, heads=2, head_dim=8, mlp_hidden=16)
    stages = (StageSpec(8, 8, 16, patch, (block,)), StageSpec(16, 8, 16, 1, (block,)),
              StageSpec(16, 16, 32, 1, (block, block)))
    return RTSegConfig(num_classes=5, detail=((8,), (8,), (16,)), stem=8, stem_mid=4,
                       stages=stages, bga=16, decoder=32)


def test_registered() -> None:
    assert set(RTSEG_MODELS) <= set(list_models())


@pytest.mark.parametrize('name', RTSEG_MODELS)
def test_paper_params_and_macs(models: dict[str, RTSeg], name: str) -> None:
    model = models[name]
    counted = count(model, (512, 1024))
    params, macs = PAPER[name]
    assert counted['params'] == pytest.approx(params, rel=0.10)
    assert counted['macs'] == pytest.approx(macs, rel=0.10)
    # No module is dead in the eval forward: runnable params == all params.
    assert counted['params'] == sum(p.numel() for p in model.parameters())


def test_subnets_are_plain(models: dict[str, RTSeg]) -> None:
    """Searched subnets keep one op per mixed block; only the supernet has both paths."""
    for name, model in models.items():
        blocks = [m for m in model.modules() if isinstance(m, MixedBlock)]
        ops = {b.op for b in blocks}
        if name == 'rtseg_supernet':
            assert ops == {'lir+mhsa'}
        else:
            assert 'lir+mhsa' not in ops and all(len(b.paths) <= 1 for b in blocks)
            assert ops & {'mhsa'}, 'every searched variant keeps some attention'


@pytest.mark.parametrize('name', RTSEG_MODELS)
def test_odd_size_batch2(models: dict[str, RTSeg], name: str) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        out = models[name](torch.randn(2, 3, 65, 129))
    assert out.shape == (2, 19, 65, 129)
    assert torch.isfinite(out).all()


def test_num_classes() -> None:
    model = create_model('rtseg_s', num_classes=7)
    assert model.cfg.num_classes == 7 and model.decoder.cls.out_channels == 7
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 33, 47)).shape == (1, 7, 33, 47)


def test_attention_matches_sdpa() -> None:
    torch.manual_seed(0)
    attn = Attention(dim=24, heads=3, head_dim=8)
    x = torch.randn(2, 10, 24)
    q, k, v = attn.qkv(x).reshape(2, 10, 3, 3, 8).permute(2, 0, 3, 1, 4)
    ref = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 10, 24)
    torch.testing.assert_close(attn(x), attn.proj(ref), rtol=1e-5, atol=1e-5)
    # Q K^T and attn V: 2 * heads * N^2 * head_dim per sample.
    assert attn.extra_macs((x[:1],), x[:1]) == 2 * 3 * 10 * 10 * 8


def test_attention_macs_counted() -> None:
    block = MHSABlock(channels=8, patch=2, heads=2, head_dim=8, mlp_hidden=16)

    class Wrap(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 8, 1, bias=False)
            self.block = block

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.block(self.stem(x))

    n, dim = (8 // 2) * (12 // 2), 8 * 4
    linear = n * (dim * 3 * 16 + 16 * dim + dim * 16 + 16 * dim)
    expected = 8 * 12 * 3 * 8 + linear + 2 * 2 * n * n * 8
    assert count(Wrap(), (8, 12))['macs'] == expected


def test_mhsa_patch_fold_roundtrip_and_locality() -> None:
    """Tokens are P x P patches: with attention off, the block acts within each patch only."""
    torch.manual_seed(0)
    block = MHSABlock(channels=4, patch=2, heads=1, head_dim=8, mlp_hidden=8).eval()
    x = torch.randn(1, 4, 7, 9)  # odd: padded to 8 x 10 and cropped back
    with torch.no_grad():
        torch.nn.init.zeros_(block.attn.proj.weight)
        torch.nn.init.zeros_(block.attn.proj.bias)
        torch.nn.init.zeros_(block.mlp[2].weight)
        torch.nn.init.zeros_(block.mlp[2].bias)
        torch.testing.assert_close(block(x), x)  # identity: fold(unfold(x)) == x
        torch.nn.init.normal_(block.mlp[2].weight)
        y0 = block(x)
        x1 = x.clone()
        x1[0, 1, 2, 5] += 1.0  # inside the patch rows 2-3, cols 4-5
        diff = (block(x1) - y0).abs().sum(dim=(0, 1))
    changed = (diff > 0).nonzero().tolist()
    assert changed and all(2 <= r <= 3 and 4 <= c <= 5 for r, c in changed)


def test_mixed_block_ops() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 8, 6, 6)
    spec = dict(lir_mid=8, lir_expand=16, heads=2, head_dim=4, mlp_hidden=16)
    both = MixedBlock(8, 1, BlockSpec('lir+mhsa', **spec)).eval()
    lir = MixedBlock(8, 1, BlockSpec('lir', lir_mid=8, lir_expand=16)).eval()
    mhsa = MixedBlock(8, 1, BlockSpec('mhsa', heads=2, head_dim=4, mlp_hidden=16)).eval()
    lir.paths.load_state_dict({k: v for k, v in both.paths.state_dict().items()
                               if k.startswith('lir.')})
    mhsa.paths.load_state_dict({k: v for k, v in both.paths.state_dict().items()
                                if k.startswith('mhsa.')})
    with torch.no_grad():
        torch.testing.assert_close(both(x), lir(x) + mhsa(x))  # supernet: paths added
        skip = MixedBlock(8, 1, BlockSpec('skip'))
        assert skip(x) is x and not list(skip.parameters())
    with pytest.raises(ValueError, match='not in'):
        BlockSpec('conv')
    with pytest.raises(ValueError, match='MHSA block needs'):
        BlockSpec('mhsa')


def test_config_roundtrip_and_overrides(models: dict[str, RTSeg]) -> None:
    model = models['rtseg_m']
    cfg = model.cfg
    assert RTSegConfig.from_dict(cfg.to_dict()) == cfg
    # A JSON round trip (as in checkpoint / ONNX metadata) builds the same network.
    d = json.loads(json.dumps(cfg.to_dict()))
    clone = create_model('rtseg_supernet', **d)
    assert clone.cfg == cfg
    clone.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x))
    with pytest.raises(ValueError, match='unknown RTSeg config fields'):
        create_model('rtseg_s', widht=3)


def test_training_module_aux_heads() -> None:
    torch.manual_seed(0)
    model = RTSeg(_tiny_config())
    n_eval = len(model.state_dict())
    train = RTSegTrain(model).train()
    x = torch.randn(2, 3, 40, 56)
    logits, aux = train(x)
    assert logits.shape == (2, 5, 40, 56) and len(aux) == 4
    assert all(a.shape == (2, 5, 40, 56) for a in aux)
    loss = logits.logsumexp(1).mean() + sum(a.logsumexp(1).mean() for a in aux)
    loss.backward()
    assert all(p.grad is not None for p in train.parameters())
    # The eval model and its state_dict never contain the heads.
    assert len(model.state_dict()) == n_eval == len(train.eval_state_dict())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), train.eval()(x)[0])


@pytest.mark.parametrize('name', RTSEG_MODELS)
def test_onnx_export_matches_torch(models: dict[str, RTSeg], name: str) -> None:
    ort = pytest.importorskip('onnxruntime')
    torch.manual_seed(0)
    model = copy.deepcopy(models[name])
    # Non-trivial BN statistics so the comparison is not dominated by zero-init branches.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.running_var.data.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 36, 68)  # H/8 = 5 x 9: odd, MHSA patch padding is exported
    buf = io.BytesIO()
    torch.onnx.export(model, (x,), buf, opset_version=18, external_data=False,
                      input_names=['image'], output_names=['logits'])
    sess = ort.InferenceSession(buf.getvalue(), providers=['CPUExecutionProvider'])
    (got,) = sess.run(None, {'image': x.numpy()})
    with torch.no_grad():
        ref = model(x).numpy()
    assert got.shape == ref.shape == (1, 19, 36, 68)
    assert np.abs(got - ref).max() < 1e-3


def test_derive_subnet() -> None:
    ops = (('lir',), ('mhsa',), ('skip', 'lir', 'mhsa'))
    full = derive_subnet(SUPERNET, 1.0, 1.0, ops)
    # Keeping everything keeps every supernet width; only the op per block changes.
    assert full.detail == SUPERNET.detail and full.decoder == SUPERNET.decoder
    for st, sup in zip(full.stages, SUPERNET.stages):
        assert (st.channels, st.down_mid, st.down_expand) == \
            (sup.channels, sup.down_mid, sup.down_expand)
    assert [b.op for b in full.stages[2].blocks] == ['skip', 'lir', 'mhsa']
    assert full.stages[2].blocks[1].lir_expand == SUPERNET.stages[2].blocks[1].lir_expand
    half = derive_subnet(SUPERNET, 0.5, 0.25, ops)
    assert half.detail[0][0] == 72 and half.stages[2].channels == 80
    assert all(c % 4 == 0 for s in half.detail for c in s)
    with pytest.raises(ValueError, match='skip, lir or mhsa'):
        derive_subnet(SUPERNET, 0.5, 0.5, (('lir',), ('mhsa',), ('lir+mhsa',) * 3))
    with pytest.raises(ValueError, match='blocks'):
        derive_subnet(SUPERNET, 0.5, 0.5, (('lir',), ('mhsa',), ('lir',)))


def test_tiny_rtseg_learns() -> None:
    """A few SGD steps on one batch lower the loss: gradients reach every path."""
    torch.manual_seed(0)
    model = RTSeg(_tiny_config()).train()
    x = torch.randn(2, 3, 32, 48)
    y = torch.randint(0, 5, (2, 32, 48))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
