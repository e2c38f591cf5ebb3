"""TensorRT parser rules (a static check, not TensorRT) and the per-TensorRT exports.

Every registered model is exported once per (batch mode, precision) in this session at 64x128
(conftest's ``exports``);
the 8.x graphs are the export's own rewrite of that graph (what ``export_onnx(trt_version=...)``
does), checked against the rules of each target and run on ONNX Runtime next to the default
graph.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seg_ros.errors import SegRosError
from seg_ros.models import list_models
from seg_ros.runtime.trt_rules import (
    TARGETS,
    check_onnx,
    require_compatible,
    target_for_version,
)
from seg_ros.testing.exports import FAMILIES

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from seg_ros.runtime.onnx_rewrite import rewrite_for_target  # noqa: E402

SIZE = (64, 128)
# rtseg_s runs the full batch x precision product: it has every construct the rules care
# about (LayerNormalization, SE-style ReduceMean, Resize sizes from Shape(start, end) when
# dynamic). One model per paper (FAMILIES, shared with the OpenVINO suite through conftest's
# `exports`) runs its static fp32 export in `make test`; every other registered model and
# every dynamic fp16 export run in `make test-exhaustive` (exports cost 20-120 s each on 2
# cores; all of them would double `make test`). The batch mode only changes the
# Shape/Resize-size nodes and the precision only the element types, so the pair reaches every
# rule the product does.
FULL = ('rtseg_s',)
PAIR = ((False, False), (True, True))
PRODUCT = ((False, False), (False, True), (True, False), (True, True))


def _run(model: onnx.ModelProto, images: np.ndarray) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=['CPUExecutionProvider'])
    return sess.run(None, {'images': images})


def _frames(batch: int) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (batch, *SIZE, 3), dtype=np.uint8)


def _check_model(exports, name: str, variants) -> None:
    for dynamic, fp16 in variants:
        default = onnx.load(str(exports(name, dynamic, fp16)))
        images = _frames(2 if dynamic else 1)
        ref = _run(default, images)
        assert [r.dtype for r in ref] == [np.uint8, np.uint8]
        for target in TARGETS:
            graph = rewrite_for_target(default, target)
            assert check_onnx(graph, target) == [], (name, dynamic, fp16, target)
            if target == '10':
                continue
            assert graph.opset_import[0].version == 17
            got = _run(graph, images)
            if not fp16:
                assert np.array_equal(got[0], ref[0]), (name, dynamic, fp16, target)
                assert np.array_equal(got[1], ref[1]), (name, dynamic, fp16, target)
            else:
                # float16 on ORT's CPU provider: the same arithmetic at opset 17 runs other
                # kernels than at opset 18 (a static 8.6 rewrite only moves Reduce axes into
                # attributes, yet 1-2 of 8192 near-tie pixels of rtseg_s flip), so fp16 graphs
                # are held to near-equality; every fp32 graph must be identical.
                assert float((got[0] == ref[0]).mean()) > 0.999, (name, dynamic, target)
                assert float((got[1] == ref[1]).mean()) > 0.999, (name, dynamic, target)


@pytest.mark.parametrize('name', [
    n if n in FAMILIES else pytest.param(n, marks=pytest.mark.exhaustive)
    for n in list_models()])
def test_every_model_passes_every_target(name: str, exports) -> None:
    _check_model(exports, name, PRODUCT if name in FULL else PAIR[:1])


@pytest.mark.exhaustive
@pytest.mark.parametrize('name', [n for n in list_models() if n not in FULL])
def test_every_model_dynamic_fp16_passes_every_target(name: str, exports) -> None:
    _check_model(exports, name, PAIR[1:])


def test_families_are_registered() -> None:
    assert set(FAMILIES) <= set(list_models()) and set(FULL) <= set(FAMILIES)


def test_default_export_is_cast_first_and_ids_through_float(exports) -> None:
    graph = onnx.load(str(exports('rtseg_s', False, False))).graph
    first = [n for n in graph.node if 'images' in n.input]
    assert [n.op_type for n in first] == ['Cast']
    ids_cast = next(n for n in graph.node if 'ids' in n.output)
    src = next(n for n in graph.node if ids_cast.input[0] in n.output)
    assert (ids_cast.op_type, src.op_type) == ('Cast', 'Cast')
    assert helper.get_attribute_value(src.attribute[0]) == TensorProto.FLOAT


def test_rewrites_remove_what_8x_ignores(exports) -> None:
    default = onnx.load(str(exports('rtseg_s', True, False)))
    ops = [n.op_type for n in default.graph.node]
    assert 'LayerNormalization' in ops
    assert any(n.op_type == 'Shape' and n.attribute for n in default.graph.node)
    assert check_onnx(default, '10') == []
    before = {t: len(check_onnx(default, t)) for t in ('8.5', '8.6')}
    assert before['8.5'] > before['8.6'] > 0  # 8.5 also lacks LayerNormalization
    g85 = rewrite_for_target(default, '8.5')
    assert 'LayerNormalization' not in [n.op_type for n in g85.graph.node]
    assert not any(n.op_type == 'Shape' and n.attribute for n in g85.graph.node)
    reduces = [n for n in g85.graph.node if n.op_type in ('ReduceMax', 'ReduceMean')]
    assert reduces and all(len(n.input) == 1 for n in reduces)
    assert 'LayerNormalization' in [n.op_type for n in rewrite_for_target(default, '8.6')
                                    .graph.node]


def test_shipped_onnx_passes_trt10_rules(repo_root: Path) -> None:
    path = repo_root / 'models' / 'regseg48_synthetic.onnx'
    assert check_onnx(path, '10') == []
    require_compatible(path, '10')
    with pytest.raises(SegRosError, match='--trt-version 8.5'):
        require_compatible(path, '8.5')  # opset 18: an 8.5 parser needs its own export


# ----------------------------------------------------------------------------- bad graphs
def _model(nodes, inputs, outputs, inits=(), opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, 'g', inputs, outputs, initializer=list(inits))
    # IR version 10: what the exporter writes and what this onnxruntime reads.
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', opset)],
                             ir_version=10)


def _vi(name: str, elem: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _axes(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


U8, F32, I64 = TensorProto.UINT8, TensorProto.FLOAT, TensorProto.INT64


def _ok_u8() -> onnx.ModelProto:
    nodes = [helper.make_node('Cast', ['x'], ['f'], to=F32, name='in_cast'),
             helper.make_node('Relu', ['f'], ['r'], name='relu'),
             helper.make_node('Cast', ['r'], ['y'], to=U8, name='out_cast')]
    return _model(nodes, [_vi('x', U8, [1, 4])], [_vi('y', U8, [1, 4])])


def test_good_small_graph_passes_all_targets() -> None:
    for target in TARGETS:
        assert check_onnx(_ok_u8(), target) == []


def test_uint8_transpose_before_cast_fires() -> None:
    nodes = [helper.make_node('Transpose', ['x'], ['t'], perm=[1, 0], name='perm'),
             helper.make_node('Cast', ['t'], ['y'], to=F32, name='cast')]
    m = _model(nodes, [_vi('x', U8, [2, 3])], [_vi('y', F32, [3, 2])])
    for target in TARGETS:
        v = check_onnx(m, target)
        assert any('node perm (Transpose)' in s and 'only a Cast' in s for s in v)
        assert any('UINT8 intermediate tensor t' in s for s in v)


def test_cast_int64_to_uint8_fires() -> None:
    nodes = [helper.make_node('ArgMax', ['x'], ['a'], axis=1, keepdims=0, name='argmax'),
             helper.make_node('Cast', ['a'], ['ids'], to=U8, name='ids_cast')]
    m = _model(nodes, [_vi('x', F32, [1, 3, 4])], [_vi('ids', U8, [1, 4])])
    for target in TARGETS:
        v = check_onnx(m, target)
        assert any('node ids_cast (Cast)' in s and 'only to/from FP32/FP16' in s for s in v), v


def test_uint8_output_not_from_cast_fires() -> None:
    nodes = [helper.make_node('Cast', ['x'], ['f'], to=F32, name='c'),
             helper.make_node('Identity', ['x'], ['y'], name='ident')]
    m = _model(nodes, [_vi('x', U8, [2])], [_vi('y', U8, [2]), _vi('f', F32, [2])])
    assert any('node ident (Identity)' in s for s in check_onnx(m, '10'))


def test_opset_range_fires() -> None:
    m = _ok_u8()
    m.opset_import[0].version = 18
    assert any('opset 18' in s for s in check_onnx(m, '8.6'))
    assert check_onnx(m, '10') == []
    m.opset_import[0].version = 21
    assert any('opset 21' in s for s in check_onnx(m, '10'))


def test_reduce_axes_input_fires_on_8x_and_needs_initializer_on_10() -> None:
    node = helper.make_node('ReduceMean', ['x', 'axes'], ['y'], keepdims=1, name='mean')
    m = _model([node], [_vi('x', F32, [1, 2, 3, 3])], [_vi('y', F32, [1, 2, 1, 1])],
               [_axes('axes', [2, 3])], opset=18)
    for target in ('8.5', '8.6'):
        assert any('node mean (ReduceMean): axes given as an input' in s
                   for s in check_onnx(m, target))
    assert check_onnx(m, '10') == []
    dyn = _model([node], [_vi('x', F32, [1, 2, 3, 3]), _vi('axes', I64, [2])],
                 [_vi('y', F32, [1, 2, 1, 1])], opset=18)
    assert any('axes input must be an initializer' in s for s in check_onnx(dyn, '10'))


def test_shape_start_end_fires_on_8x_only() -> None:
    node = helper.make_node('Shape', ['x'], ['s'], start=0, end=2, name='shape')
    m = _model([node], [_vi('x', F32, ['n', 3, 4, 4])], [_vi('s', I64, [2])])
    for target in ('8.5', '8.6'):
        assert any('node shape (Shape): start/end' in s for s in check_onnx(m, target))
    assert check_onnx(m, '10') == []


def test_layernorm_missing_in_85_only() -> None:
    node = helper.make_node('LayerNormalization', ['x', 'g', 'b'], ['y'], axis=-1, name='ln')
    inits = [numpy_helper.from_array(np.ones(4, np.float32), 'g'),
             numpy_helper.from_array(np.zeros(4, np.float32), 'b')]
    m = _model([node], [_vi('x', F32, [1, 3, 4])], [_vi('y', F32, [1, 3, 4])], inits)
    assert any('node ln (LayerNormalization): operator has no importer' in s
               for s in check_onnx(m, '8.5'))
    assert check_onnx(m, '8.6') == [] and check_onnx(m, '10') == []
    # ... and the 8.5 rewrite gives the same numbers on ONNX Runtime.
    x = np.random.default_rng(0).standard_normal((1, 3, 4)).astype(np.float32)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    ref = ort.InferenceSession(m.SerializeToString(), so,
                               providers=['CPUExecutionProvider']).run(None, {'x': x})[0]
    m85 = rewrite_for_target(m, '8.5')
    assert check_onnx(m85, '8.5') == []
    got = ort.InferenceSession(m85.SerializeToString(), so,
                               providers=['CPUExecutionProvider']).run(None, {'x': x})[0]
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_unsupported_types_ops_and_attributes_fire() -> None:
    # ArgMax on INT32: not in 8.5's matrix (FP32, FP16), in 8.6's and 10's.
    argmax = _model([helper.make_node('ArgMax', ['x'], ['y'], axis=0, name='am')],
                    [_vi('x', TensorProto.INT32, [3])], [_vi('y', I64, [1])])
    assert any('node am (ArgMax): input type INT32' in s for s in check_onnx(argmax, '8.5'))
    assert check_onnx(argmax, '8.6') == []
    # An operator no rule covers.
    det = _model([helper.make_node('Det', ['x'], ['y'], name='det')],
                 [_vi('x', F32, [2, 2])], [_vi('y', F32, [])])
    assert any('node det (Det): operator not in the rules table' in s
               for s in check_onnx(det, '10'))
    # Custom domain.
    custom = _model([helper.make_node('Foo', ['x'], ['y'], domain='com.example', name='foo')],
                    [_vi('x', F32, [2])], [_vi('y', F32, [2])])
    custom.opset_import.append(helper.make_opsetid('com.example', 1))
    assert any("node foo (Foo): custom domain 'com.example'" in s
               for s in check_onnx(custom, '10'))
    # Resize: cubic mode, antialias.
    resize = helper.make_node('Resize', ['x', '', 'scales'], ['y'], mode='cubic', antialias=1,
                              name='rs')
    m = _model([resize], [_vi('x', F32, [1, 1, 2, 2])], [_vi('y', F32, [1, 1, 4, 4])],
               [numpy_helper.from_array(np.asarray([1, 1, 2, 2], np.float32), 'scales')],
               opset=18)
    v = check_onnx(m, '10')
    assert any("resize mode 'cubic'" in s for s in v) and any('antialias' in s for s in v)
    # Slice axes computed at run time; 1-D pooling.
    sl = helper.make_node('Slice', ['x', 'st', 'en', 'ax'], ['y'], name='sl')
    m = _model([sl], [_vi('x', F32, [4]), _vi('ax', I64, [1])], [_vi('y', F32, [2])],
               [_axes('st', [0]), _axes('en', [2])])
    assert any('node sl (Slice): input 3 must be an initializer' in s
               for s in check_onnx(m, '10'))
    pool = helper.make_node('MaxPool', ['x'], ['y'], kernel_shape=[2], name='mp')
    m = _model([pool], [_vi('x', F32, [1, 1, 4])], [_vi('y', F32, [1, 1, 3])])
    assert any('node mp (MaxPool): only 2D or 3D pooling' in s for s in check_onnx(m, '8.6'))


def test_target_for_version() -> None:
    assert target_for_version('8.5.2.2') == '8.5'
    assert target_for_version((8, 6, 1)) == '8.6'
    assert target_for_version('10.3.0') == '10'
    assert target_for_version('10.13.3.9') == '10'
    assert target_for_version((11, 0)) == '10'
    assert target_for_version('10') == '10'
    for old in ('8.4.1', '7.1.3', (8, 2)):
        with pytest.raises(SegRosError, match='older than 8.5'):
            target_for_version(old)
    with pytest.raises(SegRosError):
        target_for_version('trt')


def test_require_compatible_is_one_line_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / 'bad.onnx'
    nodes = [helper.make_node('Transpose', ['x'], ['t'], perm=[1, 0], name='perm'),
             helper.make_node('Cast', ['t'], ['y'], to=F32, name='cast')]
    onnx.save(_model(nodes, [_vi('x', U8, [2, 3])], [_vi('y', F32, [3, 2])]), str(path))
    with pytest.raises(SegRosError) as err:
        require_compatible(path, '8.6')
    msg = str(err.value)
    assert '\n' not in msg and 'node perm (Transpose)' in msg and '--trt-version 8.6' in msg
    assert 'more)' in msg
    with pytest.raises(SegRosError, match='unknown TensorRT target'):
        check_onnx(path, '9')


# ----------------------------------------------------------------------------- CLI / export
def test_cli_export_for_85_records_target_and_passes(tmp_path: Path) -> None:
    from seg_ros.cli import main

    out = tmp_path / 'o' / 'rtseg_s_85.onnx'
    assert main(['export', 'rtseg_s', '--size', '64x128', '--dynamic-batch',
                 '--trt-version', '8.5', '--out', str(out)]) == 0
    model = onnx.load(str(out))
    props = {p.key: p.value for p in model.metadata_props}
    assert props['seg_ros.trt_target'] == '8.5'
    assert model.opset_import[0].version == 17
    assert check_onnx(model, '8.5') == []
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]


def test_refused_or_failed_export_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    import torch

    from seg_ros.runtime import export as export_mod
    from seg_ros.runtime import trt_rules

    net, meta = export_mod.load_model_and_meta('rtseg_s', num_classes=19)
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    monkeypatch.setattr(trt_rules, 'check_onnx',
                        lambda model, target: ['node n0 (Transpose): made-up violation'])
    with pytest.raises(SegRosError, match=r'rtseg_s export for TensorRT 8\.6 .*node n0'):
        export_mod.export_onnx(net, meta, out_dir / 'm.onnx', size=SIZE, trt_version='8.6')
    assert list(out_dir.iterdir()) == []
    monkeypatch.undo()

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError('exporter died')
    monkeypatch.setattr(torch.onnx, 'export', boom)
    with pytest.raises(SegRosError, match='exporter died'):
        export_mod.export_onnx(net, meta, out_dir / 'm.onnx', size=SIZE)
    assert list(out_dir.iterdir()) == []
    with pytest.raises(SegRosError, match='--trt-version'):
        export_mod.export_onnx(net, meta, out_dir / 'm.onnx', size=SIZE, trt_version='9')


def test_build_engine_checks_before_tensorrt(exports, tmp_path: Path) -> None:
    from seg_ros.runtime.trt_rules import check_for_installed_trt

    default = exports('rtseg_s', False, False)
    assert check_for_installed_trt(default, '10.3.0') == '10'
    with pytest.raises(SegRosError, match=r'TensorRT 8\.6 ONNX parser.*--trt-version 8\.6'):
        check_for_installed_trt(default, '8.6.2')
    g85 = tmp_path / 'g85.onnx'
    onnx.save(rewrite_for_target(onnx.load(str(default)), '8.5'), str(g85))
    assert check_for_installed_trt(g85, '8.5.2') == '8.5'
    with pytest.raises(SegRosError, match='not found'):
        check_for_installed_trt(tmp_path / 'missing.onnx', '10.3')
    from seg_ros.runtime import trt_backend

    if not trt_backend._TRT_OK:  # no TensorRT here: nothing to check against, no error
        assert check_for_installed_trt(default) is None


def test_shape_of_uint8_input_fires_and_the_export_rewrite_reads_the_cast() -> None:
    # SFNet reads its input size: the exporter takes Shape of the uint8 graph input itself.
    nodes = [helper.make_node('Shape', ['x'], ['s'], name='shape'),
             helper.make_node('Cast', ['x'], ['f'], to=F32, name='cast'),
             helper.make_node('Reshape', ['f', 's'], ['y'], name='reshape')]
    m = _model(nodes, [_vi('x', U8, [1, 2, 2, 3])], [_vi('y', F32, [1, 2, 2, 3])])
    assert any('node shape (Shape): reads UINT8 graph input' in s for s in check_onnx(m, '10'))
    x = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
    for target in TARGETS:
        fixed = rewrite_for_target(m, target)
        assert check_onnx(fixed, target) == []
        assert np.array_equal(_run_x(fixed, x), x.astype(np.float32))


def _run_x(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=['CPUExecutionProvider']).run(None, {'x': x})[0]
