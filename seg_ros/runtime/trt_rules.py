"""What TensorRT's ONNX parser accepts, per TensorRT release: a static check of our graphs.

This is not TensorRT. It checks an exported ``.onnx`` against the rules that the graphs seg_ros
exports touch, each rule transcribed from the parser sources of that release (onnx/onnx-tensorrt,
branch + file named in a comment next to the rule) or from TensorRT's own headers
(NVIDIA/TensorRT ``include/``). A graph that passes can still fail in TensorRT for reasons a
static check cannot see (builder tactics, memory, plugin-less layers, numerical differences);
only a real TensorRT parse + build shows those.

Targets:

* ``'8.5'``  TensorRT 8.5 (JetPack 5.1): onnx-tensorrt branch ``8.5-GA``.
* ``'8.6'``  TensorRT 8.6 (JetPack 6.0): onnx-tensorrt branch ``8.6-GA``.
* ``'10'``   TensorRT 10.x and 11 (JetPack 6.1/6.2 = 10.3, desktop 10.x): onnx-tensorrt branches
  ``10.0-GA`` / ``10.1-GA``, the oldest 10.x parser (later 10.x releases only add support).

``onnx`` is imported lazily: a robot install may have only onnxruntime.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
import re
from typing import TYPE_CHECKING, Any

from seg_ros.errors import SegRosError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

TARGETS = ('8.5', '8.6', '10')

# Opset range of the default ONNX domain per target.
# 8.5: docs/operators.md @ 8.5-GA "TensorRT 8.5 supports operators up to Opset 17".
# 8.6: docs/operators.md @ 8.6-GA "TensorRT 8.6 supports operators up to Opset 17".
# 10:  docs/operators.md @ 10.0-GA/10.1-GA "supports operators in the inclusive range of opset 9
#      to opset 20". (ModelImporter.cpp does not refuse a newer opset: it imports each node with
#      that release's semantics, which is how opset-18 Reduce axes inputs get ignored in 8.x.)
OPSET_RANGE = {'8.5': (7, 17), '8.6': (7, 17), '10': (9, 20)}

# Supported Types column of the Operator Support Matrix, docs/operators.md @ 8.5-GA, 8.6-GA and
# 10.1-GA, for the operators our graphs (and their 8.x rewrites) use plus close relatives.
# Type of the op's data input is checked (input 0; Where: input 1; Constant: its value).
# 8.x: "TensorRT will attempt to cast down INT64 to INT32 and DOUBLE down to FLOAT" (same file),
# so INT64 is checked as INT32 and DOUBLE as FP32 there.
# 8.5 Cast: the matrix omits UINT8, but builtin_op_importers.cpp @ 8.5-GA importCast handles a
# UINT8 input/output (to/from FP32/FP16 only), so UINT8 is added below.
_T85 = {
    'Add': 'FP32 FP16 INT32', 'And': 'BOOL', 'ArgMax': 'FP32 FP16',
    'AveragePool': 'FP32 FP16 INT8 INT32', 'BatchNormalization': 'FP32 FP16',
    'Cast': 'FP32 FP16 INT32 INT8 UINT8 BOOL', 'Ceil': 'FP32 FP16', 'Clip': 'FP32 FP16 INT8',
    'Concat': 'FP32 FP16 INT32 INT8 BOOL', 'Constant': 'FP32 FP16 INT32 INT8 BOOL',
    'ConstantOfShape': 'FP32', 'Conv': 'FP32 FP16 INT8', 'ConvTranspose': 'FP32 FP16 INT8',
    'DepthToSpace': 'FP32 FP16 INT32', 'Div': 'FP32 FP16 INT32', 'Elu': 'FP32 FP16 INT8',
    'Equal': 'FP32 FP16 INT32', 'Erf': 'FP32 FP16', 'Exp': 'FP32 FP16',
    'Expand': 'FP32 FP16 INT32 BOOL', 'Flatten': 'FP32 FP16 INT32 BOOL',
    'Floor': 'FP32 FP16', 'Gather': 'FP32 FP16 INT8 INT32 BOOL', 'Gemm': 'FP32 FP16 INT8',
    'GatherElements': 'FP32 FP16 INT8 INT32 BOOL', 'GatherND': 'FP32 FP16 INT8 INT32 BOOL',
    'GlobalAveragePool': 'FP32 FP16 INT8', 'Greater': 'FP32 FP16 INT32',
    'GridSample': 'FP32 FP16', 'HardSigmoid': 'FP32 FP16 INT8', 'HardSwish': 'FP32 FP16 INT8',
    'Identity': 'FP32 FP16 INT32 INT8 BOOL', 'InstanceNormalization': 'FP32 FP16',
    'LeakyRelu': 'FP32 FP16 INT8', 'Less': 'FP32 FP16 INT32', 'MatMul': 'FP32 FP16',
    'Max': 'FP32 FP16 INT32', 'MaxPool': 'FP32 FP16 INT8', 'Min': 'FP32 FP16 INT32',
    'Mul': 'FP32 FP16 INT32', 'Neg': 'FP32 FP16 INT32', 'Not': 'BOOL',
    'PRelu': 'FP32 FP16 INT8', 'Pad': 'FP32 FP16 INT8 INT32', 'Pow': 'FP32 FP16',
    'Range': 'FP32 FP16 INT32', 'Reciprocal': 'FP32 FP16', 'ReduceMax': 'FP32 FP16',
    'ReduceMean': 'FP32 FP16', 'ReduceMin': 'FP32 FP16', 'ReduceSum': 'FP32 FP16',
    'Relu': 'FP32 FP16 INT8', 'Reshape': 'FP32 FP16 INT32 INT8 BOOL', 'Resize': 'FP32 FP16',
    'Round': 'FP32 FP16 INT8', 'Shape': 'FP32 FP16 INT32 INT8 BOOL',
    'Sigmoid': 'FP32 FP16 INT8', 'Slice': 'FP32 FP16 INT32 INT8 BOOL',
    'Softmax': 'FP32 FP16', 'SpaceToDepth': 'FP32 FP16 INT32',
    'Split': 'FP32 FP16 INT32 BOOL', 'Sqrt': 'FP32 FP16',
    'Squeeze': 'FP32 FP16 INT32 INT8 BOOL', 'Sub': 'FP32 FP16 INT32',
    'Tanh': 'FP32 FP16 INT8', 'Tile': 'FP32 FP16 INT32 BOOL',
    'Transpose': 'FP32 FP16 INT32 INT8 BOOL', 'Unsqueeze': 'FP32 FP16 INT32 INT8 BOOL',
    'Where': 'FP32 FP16 INT32 BOOL',
}
# 8.6-GA: as 8.5 plus ArgMax INT32, Cast UINT8 (documented), GroupNormalization and
# LayerNormalization (8.5-GA marks LayerNormalization "N" and has no importer for it).
_T86 = {**_T85, 'ArgMax': 'FP32 FP16 INT32', 'GroupNormalization': 'FP32 FP16',
        'LayerNormalization': 'FP32 FP16'}
# 10.1-GA (10.0-GA is the same for these operators).
_T10 = {
    'Add': 'FP32 FP16 BF16 INT32 INT64', 'And': 'BOOL',
    'ArgMax': 'FP32 FP16 BF16 INT32 INT64', 'AveragePool': 'FP32 FP16 BF16',
    'BatchNormalization': 'FP32 FP16 BF16', 'Cast': 'FP32 FP16 BF16 INT32 INT64 UINT8 BOOL',
    'Ceil': 'FP32 FP16 BF16', 'Clip': 'FP32 FP16 BF16',
    'Concat': 'FP32 FP16 BF16 INT32 INT64 BOOL',
    'Constant': 'FP32 FP16 BF16 INT32 INT64 BOOL',
    'ConstantOfShape': 'FP32 FP16 BF16 INT32 INT64 BOOL', 'Conv': 'FP32 FP16 BF16',
    'ConvTranspose': 'FP32 FP16 BF16', 'DepthToSpace': 'FP32 FP16 BF16 INT32 INT64',
    'Div': 'FP32 FP16 BF16 INT32 INT64', 'Elu': 'FP32 FP16 BF16',
    'Equal': 'FP32 FP16 BF16 INT32 INT64', 'Erf': 'FP32 FP16 BF16', 'Exp': 'FP32 FP16 BF16',
    'Expand': 'FP32 FP16 BF16 INT32 INT64 BOOL',
    'Flatten': 'FP32 FP16 BF16 INT32 INT64 BOOL', 'Floor': 'FP32 FP16 BF16',
    'Gather': 'FP32 FP16 BF16 INT32 INT64 BOOL', 'Gelu': 'FP32 FP16 BF16 INT8 INT32 INT64',
    'GatherElements': 'FP32 FP16 BF16 INT32 INT64 BOOL',
    'GatherND': 'FP32 FP16 BF16 INT32 INT64 BOOL', 'GridSample': 'FP32 FP16',
    'Gemm': 'FP32 FP16 BF16', 'GlobalAveragePool': 'FP32 FP16 BF16',
    'Greater': 'FP32 FP16 BF16 INT32 INT64', 'GroupNormalization': 'FP32 FP16 BF16',
    'HardSigmoid': 'FP32 FP16 BF16', 'HardSwish': 'FP32 FP16 BF16',
    'Identity': 'FP32 FP16 BF16 INT32 INT64 BOOL', 'InstanceNormalization': 'FP32 FP16 BF16',
    'LayerNormalization': 'FP32 FP16 BF16', 'LeakyRelu': 'FP32 FP16 BF16',
    'Less': 'FP32 FP16 BF16 INT32 INT64', 'MatMul': 'FP32 FP16 BF16',
    'Max': 'FP32 FP16 BF16 INT32 INT64', 'MaxPool': 'FP32 FP16 BF16',
    'Min': 'FP32 FP16 BF16 INT32 INT64', 'Mul': 'FP32 FP16 BF16 INT32 INT64',
    'Neg': 'FP32 FP16 BF16 INT32 INT64', 'Not': 'BOOL', 'PRelu': 'FP32 FP16 BF16',
    'Pad': 'FP32 FP16 BF16 INT32 INT64', 'Pow': 'FP32 FP16 BF16',
    'Range': 'FP32 FP16 BF16 INT32 INT64', 'Reciprocal': 'FP32 FP16 BF16',
    'ReduceMax': 'FP32 FP16 BF16 INT32 INT64', 'ReduceMean': 'FP32 FP16 BF16 INT32 INT64',
    'ReduceMin': 'FP32 FP16 BF16 INT32 INT64', 'ReduceSum': 'FP32 FP16 BF16 INT32 INT64',
    'Relu': 'FP32 FP16 BF16 INT32 INT64', 'Reshape': 'FP32 FP16 BF16 INT32 INT64 BOOL',
    'Resize': 'FP32 FP16 BF16', 'Round': 'FP32 FP16 BF16',
    'Shape': 'FP32 FP16 BF16 INT32 INT64 BOOL', 'Sigmoid': 'FP32 FP16 BF16',
    'Slice': 'FP32 FP16 BF16 INT32 INT64 BOOL', 'Softmax': 'FP32 FP16 BF16',
    'SpaceToDepth': 'FP32 FP16 BF16 INT32 INT64', 'Split': 'FP32 FP16 BF16 INT32 INT64 BOOL',
    'Sqrt': 'FP32 FP16 BF16', 'Squeeze': 'FP32 FP16 BF16 INT32 INT64 BOOL',
    'Sub': 'FP32 FP16 BF16 INT32 INT64', 'Tanh': 'FP32 FP16 BF16',
    'Tile': 'FP32 FP16 BF16 INT32 INT64 BOOL',
    'Transpose': 'FP32 FP16 BF16 INT32 INT64 BOOL',
    'Unsqueeze': 'FP32 FP16 BF16 INT32 INT64 BOOL',
    'Where': 'FP32 FP16 BF16 INT32 INT64 BOOL',
}
# Operators known to be missing (the matrix says "N" and the branch has no importer).
_MISSING = {'8.5': {'LayerNormalization': 'has no importer (docs/operators.md @ 8.5-GA: N)',
                    'GroupNormalization': 'has no importer (docs/operators.md @ 8.5-GA: N)',
                    'Gelu': 'does not exist before opset 20'},
            '8.6': {'Gelu': 'does not exist before opset 20'}}
OP_TYPES: dict[str, dict[str, frozenset[str]]] = {
    target: {op: frozenset(types.split()) for op, types in table.items()}
    for target, table in (('8.5', _T85), ('8.6', _T86), ('10', _T10))}

# Reduce importers. builtin_op_importers.cpp @ 8.5-GA / 8.6-GA: ReduceMax, ReduceMean, ReduceMin,
# ReduceProd (and the L1/L2/LogSum/LogSumExp/SumSquare built on them) call reduceTensor(ctx, node,
# input, op) without the second input: an opset-18 `axes` input is ignored and the reduction runs
# over every axis. Only ReduceSum passes inputs.at(1) (opset >= 13), which onnx2trt_utils.cpp
# reduceTensor requires to be an initializer. 10.1-GA onnxOpImporters.cpp passes the axes input
# for all of them; importerUtils.cpp reduceTensor asserts "Axis input must be an initializer!".
REDUCE_OPS = frozenset({'ReduceMax', 'ReduceMean', 'ReduceMin', 'ReduceProd', 'ReduceSum',
                        'ReduceL1', 'ReduceL2', 'ReduceLogSum', 'ReduceLogSumExp',
                        'ReduceSumSquare'})
_REDUCE_AXES_INPUT = {'8.5': frozenset({'ReduceSum'}), '8.6': frozenset({'ReduceSum'}),
                      '10': REDUCE_OPS}

# Inputs that must be an initializer (or a Constant node, which the importer turns into weights):
# docs/operators.md Restrictions column @ 8.5-GA, 8.6-GA, 10.1-GA ("`axes` must be an
# initializer" for Slice and Squeeze, "a constant tensor" for Unsqueeze, TopK `K`; 10.1-GA
# Pad: "`axes` must be an initializer").
_CONST_INPUTS = {'Slice': (3,), 'Squeeze': (1,), 'Unsqueeze': (1,), 'TopK': (1,), 'Pad': (3,)}

# Resize: docs/operators.md @ every branch above, Restrictions column; 10.x adds "Supported aspect
# ratio policy: `stretch`" and "Antialiasing is not supported" (the opset-18 attributes).
_RESIZE_MODES = frozenset({'nearest', 'linear'})
_RESIZE_COORDS = frozenset({'half_pixel', 'pytorch_half_pixel', 'tf_half_pixel_for_nn',
                            'asymmetric', 'align_corners'})
_RESIZE_NEAREST = frozenset({'floor', 'ceil', 'round_prefer_floor', 'round_prefer_ceil'})

# UINT8: include/NvInferRuntimeBase.h (8.5: NvInferRuntimeCommon.h) DataType::kUINT8, identical in
# NVIDIA/TensorRT release/8.5, 8.6, 10.3, 10.13 and 11.0: "Use ... to convert kUINT8
# network-level inputs to {kFLOAT, kHALF} prior to use with other TensorRT layers ...
# kUINT8 conversions are only supported for {kFLOAT, kHALF}". ModelImporter.cpp @ 8.6-GA and
# 10.1-GA parseNode: "TensorRT does not support UINT8 types for intermediate tensors!" for any
# UINT8 node output that is not a graph output; 8.5-GA rejects UINT8 inputs op by op
# (notInvalidType(..., {"UINT8"})) and asserts FP32/FP16 on the other side of a UINT8 Cast.
_UINT8_PARTNERS = frozenset({'FP32', 'FP16'})

_DTYPE_NAMES = {1: 'FP32', 2: 'UINT8', 3: 'INT8', 4: 'UINT16', 5: 'INT16', 6: 'INT32',
                7: 'INT64', 8: 'STRING', 9: 'BOOL', 10: 'FP16', 11: 'DOUBLE', 12: 'UINT32',
                13: 'UINT64', 16: 'BF16'}


def target_for_version(version: str | tuple[int, ...]) -> str:
    """The rules target for a TensorRT version.

    Args:
        version: ``'8.6.1'``, ``'10.3'``, ``(10, 3, 0)``, or a target name.

    Returns:
        ``'8.5'``, ``'8.6'`` or ``'10'`` (10.x and 11.x use the 10 rules).

    Raises:
        SegRosError: unparsable, or a TensorRT older than 8.5 (no rules for it).
    """
    if isinstance(version, str):
        parts = [int(p) for p in re.findall(r'\d+', version)[:2]]
    else:
        parts = [int(p) for p in tuple(version)[:2]]
    if not parts:
        raise SegRosError(f'not a TensorRT version: {version!r}')
    major, minor = parts[0], (parts[1] if len(parts) > 1 else 0)
    if major >= 10:
        return '10'
    if major == 8 and minor in (5, 6):
        return f'8.{minor}'
    if major == 9 or (major == 8 and minor > 6):
        return '8.6'  # 9.x (never on a Jetson) shares the 8.6 parser rules for our graphs
    raise SegRosError(f'TensorRT {".".join(map(str, parts))} is older than 8.5 (JetPack 5.1): '
                      'seg_ros has no export for it')


def _check_target(target: str) -> str:
    if target not in TARGETS:
        raise SegRosError(f'unknown TensorRT target {target!r}; one of {", ".join(TARGETS)}')
    return target


def _load(model: str | os.PathLike[str] | onnx.ModelProto) -> onnx.ModelProto:
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    try:
        return onnx.load(str(model), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - the message is what the user needs
        raise SegRosError(f'{model}: not a readable ONNX file ({exc})') from exc


def _types(model: onnx.ModelProto) -> dict[str, str]:
    """Element type name of every tensor name we can type (shape inference + declarations)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - fall back to what the file declares
        inferred = model
    graph = inferred.graph
    types: dict[str, str] = {}
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        elem = vi.type.tensor_type.elem_type
        if elem:
            types[vi.name] = _DTYPE_NAMES.get(elem, str(elem))
    for init in graph.initializer:
        types[init.name] = _DTYPE_NAMES.get(init.data_type, str(init.data_type))
    for node in graph.node:
        if node.op_type == 'Constant':
            for attr in node.attribute:
                if attr.name == 'value':
                    types[node.output[0]] = _DTYPE_NAMES.get(attr.t.data_type, '?')
    return types


def _ranks(model: onnx.ModelProto) -> dict[str, list[int]]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001
        inferred = model
    g = inferred.graph
    return {vi.name: list(vi.type.tensor_type.shape.dim)
            for vi in list(g.value_info) + list(g.input) + list(g.output)
            if vi.type.tensor_type.HasField('shape')}


def _attr(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def check_onnx(model: str | os.PathLike[str] | onnx.ModelProto, target: str) -> list[str]:
    """Violations of the ``target`` parser rules in an ONNX graph (empty list = passes).

    Args:
        model: ONNX path or loaded model.
        target: ``'8.5'``, ``'8.6'`` or ``'10'`` (see :func:`target_for_version`).

    Returns:
        One line per violation: ``node <name> (<op>): <rule>``.
    """
    _check_target(target)
    proto = _load(model)
    graph = proto.graph
    lo, hi = OPSET_RANGE[target]
    out: list[str] = []
    for imp in proto.opset_import:
        if imp.domain in ('', 'ai.onnx') and not lo <= imp.version <= hi:
            out.append(f'model: opset {imp.version}: TensorRT {target} parses opsets {lo}-{hi} '
                       '(docs/operators.md)')
    if len(proto.functions):
        out.append(f'model: {len(proto.functions)} ONNX local functions: the parser imports '
                   'default-domain nodes only')
    eight = target in ('8.5', '8.6')
    types = _types(proto)
    shapes = _ranks(proto)
    if eight:  # "cast down INT64 to INT32 and DOUBLE down to FLOAT" (8.x operators.md)
        types = {k: {'INT64': 'INT32', 'DOUBLE': 'FP32'}.get(v, v) for k, v in types.items()}
    graph_out = {o.name for o in graph.output}
    consts = {i.name for i in graph.initializer}
    consts |= {o for n in graph.node if n.op_type == 'Constant' for o in n.output}
    producers = {o: n for n in graph.node for o in n.output}
    table = OP_TYPES[target]
    for inp in graph.input:
        if types.get(inp.name) == 'UINT8':
            for node in graph.node:
                if inp.name in node.input and node.op_type != 'Cast':
                    out.append(f'node {node.name} ({node.op_type}): reads UINT8 graph input '
                               f'{inp.name}: only a Cast to FP32/FP16 may consume a UINT8 input')
    for out_vi in graph.output:
        if types.get(out_vi.name) == 'UINT8':
            src = producers.get(out_vi.name)
            if src is not None and src.op_type != 'Cast':
                out.append(f'node {src.name} ({src.op_type}): writes UINT8 graph output '
                           f'{out_vi.name}: only a Cast from FP32/FP16 may produce UINT8')
    for node in graph.node:
        where = f'node {node.name or "<unnamed>"} ({node.op_type})'
        if node.domain not in ('', 'ai.onnx'):
            out.append(f'{where}: custom domain {node.domain!r} has no parser importer')
            continue
        if node.op_type not in table:
            why = _MISSING.get(target, {}).get(node.op_type, 'not in the rules table (not '
                                                             'supported or not checked)')
            out.append(f'{where}: operator {why} for TensorRT {target}')
            continue
        for name in node.output:
            if name and types.get(name) == 'UINT8' and name not in graph_out:
                out.append(f'{where}: UINT8 intermediate tensor {name}: UINT8 only as graph '
                           'input/output')
        data_idx = 1 if node.op_type == 'Where' else 0
        if node.op_type == 'Constant':
            dtype = types.get(node.output[0])
        elif len(node.input) > data_idx and node.input[data_idx]:
            dtype = types.get(node.input[data_idx])
        else:
            dtype = None
        if dtype is not None and dtype not in table[node.op_type]:
            out.append(f'{where}: input type {dtype} not in the supported types '
                       f'({", ".join(sorted(table[node.op_type]))})')
        if node.op_type == 'Cast':
            to = _DTYPE_NAMES.get(int(_attr(node, 'to', 0)), '?')
            if eight:
                to = {'INT64': 'INT32', 'DOUBLE': 'FP32'}.get(to, to)
            if to not in table['Cast']:
                out.append(f'{where}: cast to {to} not supported')
            if (to == 'UINT8' and dtype is not None and dtype not in _UINT8_PARTNERS) or \
                    (dtype == 'UINT8' and to not in _UINT8_PARTNERS):
                out.append(f'{where}: Cast {dtype} -> {to}: UINT8 converts only to/from '
                           'FP32/FP16')
        if node.op_type in REDUCE_OPS and len(node.input) > 1 and node.input[1]:
            if node.op_type not in _REDUCE_AXES_INPUT[target]:
                out.append(f'{where}: axes given as an input: the TensorRT {target} importer '
                           'ignores it and reduces over every axis (needs the axes attribute, '
                           'opset <= 17)')
            elif node.input[1] not in consts:
                out.append(f'{where}: axes input must be an initializer')
        if node.op_type == 'Shape' and eight and (_attr(node, 'start') is not None
                                                  or _attr(node, 'end') is not None):
            out.append(f'{where}: start/end attributes are ignored by the TensorRT {target} '
                       'importer (whole shape returned)')
        for idx in _CONST_INPUTS.get(node.op_type, ()):
            if len(node.input) > idx and node.input[idx] and node.input[idx] not in consts:
                out.append(f'{where}: input {idx} must be an initializer')
        if node.op_type == 'Resize':
            mode = _attr(node, 'mode', 'nearest')
            coord = _attr(node, 'coordinate_transformation_mode', 'half_pixel')
            nearest = _attr(node, 'nearest_mode', 'round_prefer_floor')
            if mode not in _RESIZE_MODES:
                out.append(f'{where}: resize mode {mode!r} not supported')
            if coord not in _RESIZE_COORDS:
                out.append(f'{where}: coordinate_transformation_mode {coord!r} not supported')
            if mode == 'nearest' and nearest not in _RESIZE_NEAREST:
                out.append(f'{where}: nearest_mode {nearest!r} not supported')
            if _attr(node, 'antialias', 0):
                out.append(f'{where}: antialias not supported')
            if _attr(node, 'keep_aspect_ratio_policy', 'stretch') != 'stretch':
                out.append(f'{where}: keep_aspect_ratio_policy other than stretch')
        if node.op_type in ('MaxPool', 'AveragePool'):
            kernel = _attr(node, 'kernel_shape', [])
            if len(kernel) not in (2, 3):
                out.append(f'{where}: only 2D or 3D pooling')
            if target == '10' and any(d != 1 for d in _attr(node, 'dilations', [])):
                out.append(f'{where}: dilations must be all ones')
            if node.op_type == 'MaxPool' and len(node.output) > 1 and node.output[1]:
                out.append(f'{where}: the Indices output is unsupported')
        if node.op_type == 'GridSample' and target == '10':
            dims = shapes.get(node.input[0])
            if dims is not None and len(dims) != 4:  # 10.1-GA matrix: "Input must be 4D"
                out.append(f'{where}: input must be 4D')
        if node.op_type == 'LayerNormalization' and len(node.output) > 1 and \
                any(node.output[1:]):
            out.append(f'{where}: only the first output Y is supported')
    return out


def require_compatible(path: str | os.PathLike[str] | onnx.ModelProto, target: str) -> None:
    """Raise a one-line :class:`SegRosError` when ``path`` breaks the ``target`` rules.

    The message names the first violation, how many there are, and the export command that
    writes a graph for this target.
    """
    problems = check_onnx(path, target)
    if not problems:
        return
    name = Path(path).name if isinstance(path, (str, os.PathLike)) else 'the ONNX graph'
    more = f' (+{len(problems) - 1} more)' if len(problems) > 1 else ''
    raise SegRosError(
        f'{name} does not fit the TensorRT {target} ONNX parser: {problems[0]}{more}; '
        f're-export it with `seg-ros export <checkpoint> --trt-version {target} --out ...`')


def check_for_installed_trt(onnx_path: str | os.PathLike[str],
                            version: str | None = None) -> str | None:
    """Refuse (one line) an ONNX that breaks the installed TensorRT's parser rules.

    Args:
        onnx_path: the ONNX to build.
        version: TensorRT version to check for; default: the importable ``tensorrt``'s.

    Returns:
        The rules target checked, or None when no TensorRT is importable (nothing checked:
        the build then fails on its own with the missing-TensorRT message) or ``onnx`` is
        not installed (a robot may have TensorRT without it; ``seg-ros export`` checked the
        graph where it was made).
    """
    if importlib.util.find_spec('onnx') is None:
        return None
    if version is None:
        try:
            import tensorrt
        except ImportError:
            return None
        version = getattr(tensorrt, '__version__', None)
        if not version:  # an empty namespace package, not a real install
            return None
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise SegRosError(f'{onnx_path} not found')
    target = target_for_version(version)
    require_compatible(onnx_path, target)
    return target
