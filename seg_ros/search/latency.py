"""Latency table and latency model for RTSeg's latency-aware search (rtseg.txt "Latency-Aware
Constraints", Eq. 9).

The paper measures "a sufficient amount of different candidate building blocks in the search
space" on the target device and trains "an MLP model with 5 fully connected layers and ReLU"
on (block characteristics -> latency); the search then sums the predicted latencies of the
subnet's blocks. Here:

* a *unit* is one latency-bearing block of the RTSeg search space: a conv-BN(-act) layer
  (``conv``: dense, ``dw``: depth-wise) or one MHSA path (``mhsa``). :func:`model_units` lists
  the units of a model (with input sizes from one forward), :func:`sample_units` draws random
  variants of them (random widths in the supernet's ranges), :func:`measure_unit` times one
  on a backend;
* :class:`LatencyMLP` (5 ``Linear`` layers, ReLU) maps the unit features (kind, widths, kernel,
  stride, feature size, MACs, activation volume; all differentiable in the widths) to
  log-latency, so that gradients of ``|sum latency - target|^2`` reach the width masks;
* the whole-model latency is ``scale * sum_units + overhead_ms``, both calibrated by least
  squares on whole random subnets measured by the profile: ``overhead_ms`` covers what is not
  a unit (stem pooling, BGA products, resizes), ``scale`` the gap between a block timed alone
  and inside a network (on this CPU a conv runs ~2-3x slower in a network than timed alone,
  cache and allocator effects), which a per-block table cannot see.

Backends: ``torch`` (eager, the calling process's threads) and ``onnxruntime`` (each unit
exported on the fly, CPU execution provider, the node's session options).
``seg-ros latency-profile --backend torch|onnxruntime`` writes the table (JSON) and, with
``--fit``, the trained model next to it.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
import json
import math
from pathlib import Path
import platform
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from seg_ros.errors import SegRosError

__all__ = ['Unit', 'clock_name', 'model_units', 'sample_units', 'build_unit', 'measure_unit',
           'measure_model', 'measure_checkpoint', 'unit_features', 'LatencyMLP',
           'fit_latency_model', 'LatencyModel', 'BACKENDS', 'FEATURES']

BACKENDS = ('torch', 'onnxruntime')
KINDS = ('conv', 'dw', 'mhsa')
FEATURES = ('is_conv', 'is_dw', 'is_mhsa', 'log_cin', 'log_cout', 'kernel', 'stride',
            'log_hw', 'log_macs', 'log_act', 'log_extra', 'log_cin8', 'log_cout8', 'log_macs8',
            'cin_aligned', 'cout_aligned')
VECTOR = 8   # channels per AVX2 fp32 register: kernels pad widths to it


@dataclass
class Unit:
    """One latency unit.

    Attributes:
        kind: ``conv`` (dense conv-BN-act), ``dw`` (depth-wise) or ``mhsa``.
        cin: input channels (``dw``: channels; ``mhsa``: feature channels C).
        cout: output channels (``dw``: = cin; ``mhsa``: MLP hidden width).
        k: kernel size (``mhsa``: patch size P).
        stride: stride (``mhsa``: 1).
        h: input height.
        w: input width.
        heads: MHSA heads (0 otherwise).
        head_dim: MHSA width per head (0 otherwise).
        path: module path in the model it came from ('' for sampled units).
    """

    kind: str
    cin: int
    cout: int
    k: int
    stride: int
    h: int
    w: int
    heads: int = 0
    head_dim: int = 0
    path: str = ''


def _conv_kind(conv: nn.Conv2d) -> str:
    return 'dw' if conv.groups == conv.in_channels and conv.groups > 1 else 'conv'


def model_units(model: nn.Module, size: tuple[int, int]) -> list[Unit]:
    """The units of ``model`` (an RTSeg, or anything built from ``ConvBnAct`` / ``MHSABlock``)
    with their input sizes, from one batch-1 forward at ``size`` (H, W).

    Convs outside ``ConvBnAct`` (plain 1x1 projections in BGA, the classifier) are units too.
    """
    from seg_ros.models.blocks import ConvBnAct
    from seg_ros.models.rtseg import MHSABlock

    units: list[Unit] = []
    handles = []
    inside: set[int] = set()
    for m in model.modules():
        if isinstance(m, ConvBnAct):
            inside.add(id(m.conv))
        if isinstance(m, MHSABlock):
            inside.update(id(x) for x in m.modules() if x is not m)

    def hook(name: str, m: nn.Module) -> Any:
        def fn(mod: nn.Module, inputs: tuple[torch.Tensor, ...], out: Any) -> None:
            x = inputs[0]
            h, w = int(x.shape[-2]), int(x.shape[-1])
            if isinstance(mod, MHSABlock):
                units.append(Unit('mhsa', int(x.shape[1]), mod.mlp[0].out_features, mod.patch,
                                  1, h, w, mod.attn.heads, mod.attn.head_dim, name))
                return
            conv = mod.conv if isinstance(mod, ConvBnAct) else mod
            assert isinstance(conv, nn.Conv2d)
            units.append(Unit(_conv_kind(conv), conv.in_channels, conv.out_channels,
                              conv.kernel_size[0], conv.stride[0], h, w, path=name))
        return fn

    for name, m in model.named_modules():
        if isinstance(m, (ConvBnAct, MHSABlock)) or (isinstance(m, nn.Conv2d)
                                                      and id(m) not in inside):
            handles.append(m.register_forward_hook(hook(name, m)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *size))
    finally:
        for hd in handles:
            hd.remove()
        model.train(was_training)
    return units


def _macs(kind: str, cin: Any, cout: Any, k: int, stride: int, h: int, w: int, heads: int,
          head_dim: int) -> Any:
    """Multiply-accumulates of a unit; ``cin`` / ``cout`` may be numbers or tensors."""
    ho, wo = math.ceil(h / stride), math.ceil(w / stride)
    if kind == 'conv':
        return cin * cout * (k * k * ho * wo)
    if kind == 'dw':
        return cin * (k * k * ho * wo)
    n = math.ceil(h / k) * math.ceil(w / k)   # MHSA: k is the patch size
    dim, inner = cin * (k * k), heads * head_dim
    return n * dim * 3 * inner + 2 * n * n * inner + n * inner * dim + 2 * n * dim * cout


def unit_macs(u: Unit) -> float:
    """Multiply-accumulates of a unit (the ``counting`` definition)."""
    return _macs(u.kind, u.cin, u.cout, u.k, u.stride, u.h, u.w, u.heads, u.head_dim)


def unit_features(kind: str, cin: torch.Tensor | float, cout: torch.Tensor | float, k: int,
                  stride: int, h: int, w: int, heads: int = 0,
                  head_dim: int = 0) -> torch.Tensor:
    """Feature vector (:data:`FEATURES`) of a unit; differentiable in ``cin`` / ``cout``
    (which the search passes as mask counts)."""
    cin_t = torch.as_tensor(cin, dtype=torch.float32)
    cout_t = torch.as_tensor(cout, dtype=torch.float32)
    cin8, cout8 = _padded(cin_t), _padded(cout_t)
    ho, wo = math.ceil(h / stride), math.ceil(w / stride)
    if kind == 'conv':
        act = cin_t * (h * w) + cout_t * (ho * wo)
        extra = torch.zeros(())
        hw = h * w
    elif kind == 'dw':
        act = cin_t * (h * w + ho * wo)
        extra = torch.zeros(())
        hw = h * w
    elif kind == 'mhsa':
        n = math.ceil(h / k) * math.ceil(w / k)
        act = n * (cin_t * (k * k) * 4 + cout_t)
        extra = torch.as_tensor(float(heads * n * n))  # attention matrix size
        hw = n
    else:
        raise ValueError(f'unknown unit kind {kind!r}')
    macs = _macs(kind, cin_t, cout_t, k, stride, h, w, heads, head_dim)
    macs8 = _macs(kind, cin8, cout8, k, stride, h, w, heads, head_dim)
    onehot = [float(kind == kd) for kd in KINDS]
    return torch.stack([
        *[torch.as_tensor(v) for v in onehot], torch.log1p(cin_t), torch.log1p(cout_t),
        torch.as_tensor(k / 3.0), torch.as_tensor(float(stride)),
        torch.as_tensor(math.log(hw)), torch.log1p(macs), torch.log1p(act), torch.log1p(extra),
        torch.log1p(cin8), torch.log1p(cout8), torch.log1p(macs8),
        _aligned(cin_t), _aligned(cout_t),
    ]).float()


def _aligned(c: torch.Tensor) -> torch.Tensor:
    """1.0 where ``c`` is a multiple of :data:`VECTOR`: ONNX Runtime then runs the conv in its
    blocked NCHWc layout, 3-10x faster for a depth-wise conv than the unblocked fallback (a
    step, no gradient)."""
    return (torch.remainder(torch.round(c.detach()), VECTOR) == 0).float()


def _padded(c: torch.Tensor) -> torch.Tensor:
    """``c`` rounded up to a multiple of :data:`VECTOR` (CPU kernels compute whole registers,
    so latency steps with it), with the gradient of ``c`` itself (straight through) so that
    width search still sees a slope."""
    return c + (torch.ceil(c / VECTOR) * VECTOR - c).detach()


def sample_units(base: list[Unit], n: int, seed: int = 0, min_frac: float = 0.05) -> list[Unit]:
    """``n`` random variants of the ``base`` units: widths uniform in ``[min_frac, 1]`` of the
    base width (what width search can produce), everything else as in the base unit."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        b = base[int(rng.integers(len(base)))]

        def rnd(c: int) -> int:
            return max(1, int(round(c * rng.uniform(min_frac, 1.0))))

        if b.kind == 'dw':
            c = rnd(b.cin)
            out.append(Unit('dw', c, c, b.k, b.stride, b.h, b.w))
        elif b.kind == 'conv':
            # the first conv of a branch reads the 3-channel image: keep its input width
            cin = b.cin if b.cin <= 3 else rnd(b.cin)
            out.append(Unit('conv', cin, rnd(b.cout), b.k, b.stride, b.h, b.w))
        else:
            out.append(Unit('mhsa', b.cin, rnd(b.cout), b.k, 1, b.h, b.w, b.heads, b.head_dim))
    return out


def build_unit(u: Unit) -> nn.Module:
    """An eval-mode module computing unit ``u`` (random weights)."""
    from seg_ros.models.blocks import ConvBnAct
    from seg_ros.models.rtseg import MHSABlock

    if u.kind == 'mhsa':
        return MHSABlock(u.cin, u.k, u.heads, u.head_dim, u.cout).eval()
    groups = u.cin if u.kind == 'dw' else 1
    return ConvBnAct(u.cin, u.cout, u.k, stride=u.stride, groups=groups).eval()


def clock_name() -> str:
    """The clock latencies are measured with: ``thread_cpu`` with one torch thread, else
    ``wall``.

    With one intra-op thread every op runs on the calling thread, so its CPU time is the
    block's cost without the time other processes of a shared machine take from it (on the
    loaded CI machine wall time of a whole model swung 2x between runs, thread CPU time by a
    few percent). With several threads only wall time sees the work of all of them.
    """
    return 'thread_cpu' if torch.get_num_threads() == 1 else 'wall'


def _time_callable(fn: Any, warmup: int, repeats: int) -> float:
    clock = time.thread_time if clock_name() == 'thread_cpu' else time.perf_counter
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        samples.append((clock() - t0) * 1000.0)
    # Minimum: the other jobs of a shared machine only ever add time, so the fastest run is
    # the most repeatable estimate of the block's own cost (test-retest on the loaded 2-core
    # CI machine: 26% mean difference with min, 40% with the median).
    return float(min(samples))


def _ort_runner(module: nn.Module, x: torch.Tensor) -> Any:
    """``module(x)`` as an ONNX Runtime CPU session with torch's thread count, sequential and
    without spinning like the node's :class:`~seg_ros.runtime.backends.OrtBackend` (one thread
    runs on the caller's thread, so the ``thread_cpu`` clock sees all of its work)."""
    import io
    import warnings

    import onnxruntime as ort

    from seg_ros.runtime.backends import ort_session_options

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')
        try:
            # A unit is one conv-BN-act or one MHSA path: the TorchScript exporter handles
            # those ~20x faster than the dynamo exporter (0.05-0.25 s vs seconds per unit,
            # thousands of units per table).
            torch.onnx.export(module, (x,), buf, dynamo=False, opset_version=18,
                              input_names=['x'])
        except Exception:  # noqa: BLE001 - a torch without it, or an op it cannot take
            buf = io.BytesIO()
            torch.onnx.export(module, (x,), buf, opset_version=18, input_names=['x'],
                              external_data=False)
    sess = ort.InferenceSession(buf.getvalue(),
                                sess_options=ort_session_options(torch.get_num_threads()),
                                providers=['CPUExecutionProvider'])
    feed = {sess.get_inputs()[0].name: x.numpy()}
    return lambda: sess.run(None, feed)


def _runner(module: nn.Module, x: torch.Tensor, backend: str) -> Any:
    """A no-argument callable running ``module(x)`` on ``backend``."""
    if backend not in BACKENDS:
        raise SegRosError(f'latency backend {backend!r} not supported; valid: {BACKENDS}')
    module = module.eval()
    if backend == 'onnxruntime':
        return _ort_runner(module, x)

    def run() -> Any:
        with torch.no_grad():
            return module(x)
    return run


def measure_unit(u: Unit, backend: str = 'torch', warmup: int = 3, repeats: int = 15) -> float:
    """Minimum latency (ms) of unit ``u``, batch 1, on ``backend``."""
    return _time_callable(_runner(build_unit(u), torch.randn(1, u.cin, u.h, u.w), backend),
                          warmup, repeats)


def measure_model(model: nn.Module, size: tuple[int, int], backend: str = 'torch',
                  warmup: int = 3, repeats: int = 15) -> float:
    """Minimum latency (ms) over ``repeats`` runs of a whole model's forward, batch 1, on
    ``backend``."""
    return _time_callable(_runner(model, torch.randn(1, 3, *size), backend), warmup, repeats)


_BENCH_SCRIPT = """
import sys, torch
torch.set_num_threads(int(sys.argv[4]))
from seg_ros.models.checkpoint import model_from_checkpoint
from seg_ros.search.latency import measure_model
model, _ = model_from_checkpoint(sys.argv[1])
print(measure_model(model, (int(sys.argv[2]), int(sys.argv[3])), sys.argv[6],
                    repeats=int(sys.argv[5])))
"""


def measure_checkpoint(path: str | Path, size: tuple[int, int], threads: int = 1,
                       repeats: int = 21, backend: str = 'torch') -> float:
    """Latency (ms, :func:`measure_model`) of a seg_ros checkpoint's model, measured in a
    fresh Python process: what a deployment sees. A process that has just trained runs the
    same forward measurably slower (allocator state; +30% seen on this CPU), so the search's
    own process is not where to benchmark its result."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, '-c', _BENCH_SCRIPT, str(path), str(size[0]),
                          str(size[1]), str(threads), str(repeats), backend],
                         capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SegRosError(f'benchmark of {path} failed: {res.stderr.strip()[-500:]}')
    return float(res.stdout.strip().splitlines()[-1])


class LatencyMLP(nn.Module):
    """The latency model of RTSeg Eq. 9: 5 fully connected layers with ReLU.

    Input: :data:`FEATURES` (standardised with the training table's mean / std, stored as
    buffers); output: log(ms). ``forward`` returns milliseconds.
    """

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        n = len(FEATURES)
        self.net = nn.Sequential(
            nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden // 2), nn.ReLU(),
            nn.Linear(hidden // 2, 1))
        self.register_buffer('mu', torch.zeros(n))
        self.register_buffer('sigma', torch.ones(n))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.net((feats - self.mu) / self.sigma).squeeze(-1))


def fit_latency_model(units: list[Unit], ms: list[float], steps: int = 3000, lr: float = 3e-3,
                      hidden: int = 64, seed: int = 0) -> LatencyMLP:
    """Train :class:`LatencyMLP` on measured units (full batch Adam, loss on log-latency, i.e.
    on relative error)."""
    if len(units) != len(ms) or len(units) < 4:
        raise SegRosError(f'need >= 4 measured units with one latency each, got {len(units)}')
    torch.manual_seed(seed)
    x = torch.stack([unit_features(u.kind, u.cin, u.cout, u.k, u.stride, u.h, u.w, u.heads,
                                   u.head_dim) for u in units])
    y = torch.log(torch.tensor(ms, dtype=torch.float32).clamp(min=1e-4))
    model = LatencyMLP(hidden)
    model.mu.copy_(x.mean(0))
    model.sigma.copy_(x.std(0).clamp(min=1e-3))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        pred = model.net((x - model.mu) / model.sigma).squeeze(-1)
        loss = torch.nn.functional.smooth_l1_loss(pred, y, beta=0.05)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def relative_errors(model: LatencyMLP, units: list[Unit], ms: list[float]) -> np.ndarray:
    """|predicted - measured| / measured per unit."""
    with torch.no_grad():
        x = torch.stack([unit_features(u.kind, u.cin, u.cout, u.k, u.stride, u.h, u.w,
                                       u.heads, u.head_dim) for u in units])
        pred = model(x).numpy()
    m = np.asarray(ms)
    return np.abs(pred - m) / m


class LatencyModel:
    """A trained :class:`LatencyMLP` plus the whole-model calibration
    ``ms = scale * sum(units) + overhead_ms``.

    Args:
        mlp: the trained MLP.
        overhead_ms: whole-model latency not explained by the units.
        meta: backend, device, threads, input size the table was measured with.
        scale: ratio of in-network to stand-alone block latency.
    """

    def __init__(self, mlp: LatencyMLP, overhead_ms: float = 0.0,
                 meta: dict[str, Any] | None = None, scale: float = 1.0) -> None:
        self.mlp = mlp.eval()
        for p in self.mlp.parameters():
            p.requires_grad_(False)
        self.overhead_ms = float(overhead_ms)
        self.scale = float(scale)
        self.meta = meta or {}

    def total(self, units_ms: torch.Tensor) -> torch.Tensor:
        """Whole-model ms from the sum of the unit predictions (differentiable)."""
        return units_ms * self.scale + self.overhead_ms

    def unit_ms(self, u: Unit, cin: torch.Tensor | float | None = None,
                cout: torch.Tensor | float | None = None) -> torch.Tensor:
        """Predicted ms of ``u`` (optionally with traced widths)."""
        f = unit_features(u.kind, u.cin if cin is None else cin, u.cout if cout is None
                          else cout, u.k, u.stride, u.h, u.w, u.heads, u.head_dim)
        return self.mlp(f[None])[0]

    def model_ms(self, model: nn.Module, size: tuple[int, int]) -> float:
        """Predicted ms of a whole (plain) model at ``size``."""
        with torch.no_grad():
            return float(self.total(sum((self.unit_ms(u) for u in model_units(model, size)),
                                        torch.zeros(()))))

    def save(self, path: str | Path) -> None:
        """Write the model (state_dict + overhead + meta) with ``torch.save``."""
        from seg_ros.models.checkpoint import atomic_torch_save

        atomic_torch_save({'format': 'seg_ros-latency-model-1', 'state_dict':
                           self.mlp.state_dict(), 'hidden': self.mlp.net[0].out_features,
                           'overhead_ms': self.overhead_ms, 'scale': self.scale,
                           'meta': self.meta}, path)

    @classmethod
    def load(cls, path: str | Path) -> LatencyModel:
        """Inverse of :meth:`save`."""
        data = torch.load(path, map_location='cpu', weights_only=True)
        if not isinstance(data, dict) or data.get('format') != 'seg_ros-latency-model-1':
            raise SegRosError(f'{path}: not a seg_ros latency model')
        mlp = LatencyMLP(int(data['hidden']))
        mlp.load_state_dict(data['state_dict'])
        return cls(mlp, float(data['overhead_ms']), dict(data['meta']),
                   float(data.get('scale', 1.0)))


# --------------------------------------------------------------------------------------------
# Table: profile, save, load, fit
# --------------------------------------------------------------------------------------------
def profile_table(supernet_cfg: Any, size: tuple[int, int], samples: int = 2000,
                  models: int = 12, backend: str = 'torch', threads: int = 1, seed: int = 0,
                  repeats: int = 7, progress: bool = True, rounds: int = 5) -> dict[str, Any]:
    """Measure ``samples`` random units of the supernet's search space and ``models`` random
    whole subnets (for the overhead), on ``backend``; each is timed ``repeats`` times in each of
    ``rounds`` passes and the minimum is kept.

    Returns:
        The table: ``{'meta': {...}, 'units': [unit dict + 'ms'], 'models': [{'config',
        'ms'}]}``.
    """
    from seg_ros.models.rtseg import RTSeg
    from seg_ros.progress import progress_bar

    if threads > 0:
        torch.set_num_threads(threads)
    from seg_ros.search.rtseg_search import random_subnet_config

    base = model_units(RTSeg(supernet_cfg), size)
    units = sample_units(base, samples, seed)
    rng = np.random.default_rng(seed + 1)
    cfgs = [random_subnet_config(supernet_cfg, rng) for _ in range(models)]
    best_u = [math.inf] * len(units)
    best_m = [math.inf] * len(cfgs)
    # Several rounds over all units, keeping each unit's minimum: a burst of load from other
    # processes then spoils one round of a unit, not its estimate.
    bar = progress_bar(total=rounds * (len(units) + len(cfgs)),
                       desc=f'latency-profile ({backend})', enabled=progress)
    for _ in range(rounds):
        for i, u in enumerate(units):
            best_u[i] = min(best_u[i], measure_unit(u, backend, repeats=repeats))
            bar.update()
        for i, c in enumerate(cfgs):
            best_m[i] = min(best_m[i], measure_model(RTSeg(c), size, backend, repeats=repeats))
            bar.update()
    bar.close()
    rows = [{**asdict(u), 'ms': ms} for u, ms in zip(units, best_u)]
    mrows = [{'config': c.to_dict(), 'ms': ms} for c, ms in zip(cfgs, best_m)]
    meta = {'backend': backend, 'threads': torch.get_num_threads(), 'input_size': list(size),
            'estimator': f'min of {repeats} runs x {rounds} rounds', 'clock': clock_name(),
            'machine': platform.machine(), 'processor': platform.processor(),
            'torch': str(torch.__version__), 'supernet': supernet_cfg.to_dict()}
    return {'meta': meta, 'units': rows, 'models': mrows}


def table_units(table: dict[str, Any]) -> tuple[list[Unit], list[float]]:
    """Units and latencies of a table."""
    units, ms = [], []
    for r in table['units']:
        units.append(Unit(**{k: v for k, v in r.items() if k != 'ms'}))
        ms.append(float(r['ms']))
    return units, ms


def fit_from_table(table: dict[str, Any], holdout: float = 0.2, seed: int = 0,
                   steps: int = 3000) -> tuple[LatencyModel, dict[str, float]]:
    """Fit the latency model on a table: train on ``1 - holdout`` of the units, report the
    error on the held-out units, then calibrate the overhead on the measured whole models.

    Returns:
        The model and a report: ``train_mre``, ``holdout_mre`` (mean relative errors),
        ``holdout_p90``, ``overhead_ms``, ``model_mre`` (whole models, after calibration).
    """
    from seg_ros.models.rtseg import RTSeg, RTSegConfig

    units, ms = table_units(table)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(units))
    n_hold = int(round(len(units) * holdout)) if holdout > 0 else 0
    hold, train = order[:n_hold], order[n_hold:]
    mlp = fit_latency_model([units[i] for i in train], [ms[i] for i in train], steps=steps,
                            seed=seed)
    report = {'train_mre': float(relative_errors(mlp, [units[i] for i in train],
                                                 [ms[i] for i in train]).mean())}
    if n_hold:
        err = relative_errors(mlp, [units[i] for i in hold], [ms[i] for i in hold])
        report['holdout_mre'] = float(err.mean())
        report['holdout_p90'] = float(np.percentile(err, 90))
        report['holdout_n'] = int(n_hold)
    size = tuple(table['meta']['input_size'])
    lat = LatencyModel(mlp, 0.0, table['meta'])
    preds, meas = [], []
    for r in table.get('models', []):
        preds.append(lat.model_ms(RTSeg(RTSegConfig.from_dict(r['config'])), size))
        meas.append(float(r['ms']))
    if preds:
        p, m = np.asarray(preds), np.asarray(meas)
        scale, overhead = float(np.median(m / p)), 0.0
        if len(p) >= 3 and np.ptp(p) > 0.05 * p.mean():
            a, b = np.polyfit(p, m, 1)
            if a > 0 and b >= 0:
                scale, overhead = float(a), float(b)
        lat.scale, lat.overhead_ms = scale, overhead
        fixed = p * scale + overhead
        report.update({'scale': scale, 'overhead_ms': overhead,
                       'model_mre': float(np.mean(np.abs(fixed - m) / m))})
    return lat, report


def run_profile_command(args: argparse.Namespace) -> int:
    """``seg-ros latency-profile``."""
    from seg_ros.arguments import check_output
    from seg_ros.search.rtseg_search import search_config

    check_output(args.out, args.overwrite)
    cfg = search_config(args.config)
    size = args.size or tuple(cfg['input_size'])
    table = profile_table(cfg['supernet_cfg'], size, args.samples, args.models, args.backend,
                          args.threads, args.seed, args.repeats, not args.no_progress,
                          args.rounds)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table))
    print(f'wrote {out}: {len(table["units"])} units, {len(table["models"])} whole subnets '
          f'({args.backend}, {table["meta"]["threads"]} threads, {size[0]}x{size[1]})')
    if args.fit:
        lat, rep = fit_from_table(table)
        pt = out.with_suffix('.pt')
        lat.save(pt)
        print(f'latency MLP: train MRE {rep["train_mre"]:.1%}, held-out MRE '
              f'{rep.get("holdout_mre", float("nan")):.1%} (n={rep.get("holdout_n", 0)}, '
              f'p90 {rep.get("holdout_p90", float("nan")):.1%}); whole model = '
              f'{rep.get("scale", 1):.2f} x sum + {rep.get("overhead_ms", 0):.2f} ms, MRE '
              f'{rep.get("model_mre", float("nan")):.1%}; wrote {pt}')
    return 0
