"""Rewrites of an exported opset-18 graph into the forms the TensorRT 8.5 / 8.6 parsers read.

The exporter (torch dynamo) writes opset 18 only, and the opset-18 graph is what ONNX Runtime,
OpenVINO and TensorRT 10 run. For TensorRT 8.x :func:`rewrite_for_target` edits the graph itself,
keeping every weight and the arithmetic:

* opset 18 -> 17: Reduce ``axes`` inputs become attributes (the 8.x ReduceMax/ReduceMean
  importers ignore the input and reduce over every axis), the opset-18 Resize attributes go
  (their defaults are the opset-17 behaviour); anything else new in opset 18 is refused.
* ``Shape(start, end)``: the 8.x importer ignores start/end. A slice whose dims are static
  becomes a constant; otherwise ``Shape`` + ``Slice``.
* 8.5 only: ``LayerNormalization`` (absent in 8.5) becomes the ONNX function body of the
  operator (ReduceMean, Sub, Mul, Sqrt, Reciprocal ...), in float32 as ``stash_type=1`` says.

For every target, ``Shape`` of the uint8 input reads the input's Cast instead (same dims).

The rules these rewrites satisfy, with their sources, are in :mod:`seg_ros.runtime.trt_rules`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from seg_ros.errors import SegRosError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

_REDUCE_ATTR_AXES = ('ReduceMax', 'ReduceMean', 'ReduceMin', 'ReduceProd', 'ReduceL1',
                     'ReduceL2', 'ReduceLogSum', 'ReduceLogSumExp', 'ReduceSumSquare')


def _const_values(graph: Any, name: str) -> list[int] | None:
    import onnx
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == name:
            return [int(v) for v in numpy_helper.to_array(init).reshape(-1)]
    for node in graph.node:
        if node.op_type == 'Constant' and node.output[0] == name:
            for a in node.attribute:
                if a.name == 'value':
                    return [int(v) for v in numpy_helper.to_array(a.t).reshape(-1)]
                if a.name == 'value_ints':
                    return list(onnx.helper.get_attribute_value(a))
    return None


def _pop_attr(node: Any, name: str) -> Any:
    import onnx

    for i, a in enumerate(node.attribute):
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            del node.attribute[i]
            return value.decode() if isinstance(value, bytes) else value
    return None


def _unique(graph: Any, stem: str) -> str:
    taken = {o for n in graph.node for o in n.output} | {i.name for i in graph.initializer} | \
        {i.name for i in graph.input}
    k = 0
    while f'{stem}_{k}' in taken:
        k += 1
    return f'{stem}_{k}'


def _to_opset17(model: onnx.ModelProto) -> None:
    import onnx

    graph = model.graph
    for node in graph.node:
        where = f'node {node.name} ({node.op_type})'
        if node.domain not in ('', 'ai.onnx'):
            continue
        if node.op_type in _REDUCE_ATTR_AXES:
            noop = _pop_attr(node, 'noop_with_empty_axes')
            if len(node.input) > 1 and node.input[1]:
                axes = _const_values(graph, node.input[1])
                if axes is None:
                    raise SegRosError(f'{where}: axes is not a constant; no opset-17 form')
                del node.input[1:]
                if axes:
                    node.attribute.append(onnx.helper.make_attribute('axes', axes))
                elif noop:
                    raise SegRosError(f'{where}: empty axes with noop_with_empty_axes=1 has '
                                      'no opset-17 form')
            elif noop:
                raise SegRosError(f'{where}: noop_with_empty_axes=1 has no opset-17 form')
        elif node.op_type == 'Split':
            if _pop_attr(node, 'num_outputs') is not None and len(node.input) < 2:
                raise SegRosError(f'{where}: Split with num_outputs (opset 18) and no split '
                                  'sizes has no opset-17 form here')
        elif node.op_type == 'Resize':
            if _pop_attr(node, 'antialias') or \
                    (_pop_attr(node, 'keep_aspect_ratio_policy') or 'stretch') != 'stretch' or \
                    _pop_attr(node, 'axes') is not None:
                raise SegRosError(f'{where}: opset-18 Resize options (antialias, '
                                  'keep_aspect_ratio_policy, axes) have no opset-17 form')
        elif node.op_type == 'Pad':
            # Pad-18 only added the optional `axes` input (index 3); without it, Pad-13.
            if len(node.input) > 3 and node.input[3]:
                raise SegRosError(f'{where}: Pad with an axes input (opset 18) has no opset-17 '
                                  'form here')
        else:
            schema = onnx.defs.get_schema(node.op_type, 18, '')
            if schema.since_version == 18:
                raise SegRosError(f'{where}: {node.op_type} changed in opset 18 and has no '
                                  'opset-17 rewrite in seg_ros')
    for imp in model.opset_import:
        if imp.domain in ('', 'ai.onnx'):
            imp.version = 17


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    shapes: dict[str, list[int | None]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + \
            list(inferred.graph.output):
        t = vi.type.tensor_type
        if t.HasField('shape'):
            shapes[vi.name] = [d.dim_value if d.HasField('dim_value') else None
                               for d in t.shape.dim]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    out = {vi.name: vi.type.tensor_type.elem_type for vi in
           list(inferred.graph.value_info) + list(inferred.graph.input) +
           list(inferred.graph.output)}
    out.update({i.name: i.data_type for i in inferred.graph.initializer})
    return out


def _shape_without_start_end(model: onnx.ModelProto) -> None:
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    shapes = _static_shapes(model)
    new_nodes = []
    for node in graph.node:
        if node.op_type != 'Shape':
            new_nodes.append(node)
            continue
        start, end = _pop_attr(node, 'start'), _pop_attr(node, 'end')
        if start is None and end is None:
            new_nodes.append(node)
            continue
        dims = shapes.get(node.input[0])
        rank = len(dims) if dims is not None else None
        if rank is None:
            raise SegRosError(f'node {node.name} (Shape): input rank unknown; cannot drop '
                              'start/end')
        lo = 0 if start is None else int(start)
        hi = rank if end is None else int(end)
        lo, hi = (min(max(v + rank if v < 0 else v, 0), rank) for v in (lo, hi))
        part = dims[lo:hi] if dims is not None else []
        if all(d is not None for d in part):  # static: a constant, no Shape at all
            graph.initializer.append(numpy_helper.from_array(
                np.asarray(part, dtype=np.int64), node.output[0]))
            continue
        full = _unique(graph, f'{node.output[0]}_full')
        node.output[0], sliced = full, node.output[0]
        new_nodes.append(node)
        names = []
        for tag, value in (('starts', lo), ('ends', hi), ('axes', 0)):
            name = _unique(graph, f'{sliced}_{tag}')
            graph.initializer.append(numpy_helper.from_array(
                np.asarray([value], dtype=np.int64), name))
            names.append(name)
        new_nodes.append(helper.make_node('Slice', [full] + names, [sliced],
                                          name=f'{node.name}_slice'))
    del graph.node[:]
    graph.node.extend(new_nodes)


def _decompose_layernorm(model: onnx.ModelProto) -> None:
    """LayerNormalization -> the operator's ONNX function body (opset-17 definition)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    shapes = _static_shapes(model)
    types = _elem_types(model)
    new_nodes = []
    for node in graph.node:
        if node.op_type != 'LayerNormalization':
            new_nodes.append(node)
            continue
        if len(node.output) > 1 and any(node.output[1:]):
            raise SegRosError(f'node {node.name} (LayerNormalization): Mean/InvStdDev outputs '
                              'used; no decomposition here')
        x = node.input[0]
        dims = shapes.get(x)
        if dims is None:
            raise SegRosError(f'node {node.name} (LayerNormalization): input rank unknown')
        rank = len(dims)
        axis = int(_pop_attr(node, 'axis') if any(a.name == 'axis' for a in node.attribute)
                   else -1)
        axis = axis + rank if axis < 0 else axis
        eps = float(_pop_attr(node, 'epsilon') or 1e-5)
        stash = int(_pop_attr(node, 'stash_type') or 1)
        stash_type = TensorProto.FLOAT if stash == 1 else types.get(x, TensorProto.FLOAT)
        in_type = types.get(x, TensorProto.FLOAT)
        axes = list(range(axis, rank))
        p = f'{node.name}_ln'

        def name(tag: str, _p: str = p) -> str:
            return _unique(graph, f'{_p}_{tag}')

        nodes = []
        xu = x
        if in_type != stash_type:
            xu = name('x')
            nodes.append(helper.make_node('Cast', [x], [xu], to=stash_type,
                                          name=f'{p}_cast_in'))
        mean, d, dd, var = name('mean'), name('d'), name('dd'), name('var')
        var_eps, std, inv, norm = name('var_eps'), name('std'), name('inv'), name('norm')
        eps_name = name('eps')
        np_type = onnx.helper.tensor_dtype_to_np_dtype(stash_type)
        graph.initializer.append(numpy_helper.from_array(np.asarray(eps, dtype=np_type),
                                                         eps_name))
        nodes += [
            helper.make_node('ReduceMean', [xu], [mean], axes=axes, keepdims=1,
                             name=f'{p}_mean'),
            helper.make_node('Sub', [xu, mean], [d], name=f'{p}_sub'),
            helper.make_node('Mul', [d, d], [dd], name=f'{p}_sq'),
            helper.make_node('ReduceMean', [dd], [var], axes=axes, keepdims=1,
                             name=f'{p}_var'),
            helper.make_node('Add', [var, eps_name], [var_eps], name=f'{p}_add_eps'),
            helper.make_node('Sqrt', [var_eps], [std], name=f'{p}_sqrt'),
            helper.make_node('Reciprocal', [std], [inv], name=f'{p}_inv'),
            helper.make_node('Mul', [d, inv], [norm], name=f'{p}_norm'),
        ]
        if in_type != stash_type:
            norm_t = name('norm_t')
            nodes.append(helper.make_node('Cast', [norm], [norm_t], to=in_type,
                                          name=f'{p}_cast_out'))
            norm = norm_t
        y = node.output[0]
        if len(node.input) > 2 and node.input[2]:
            scaled = name('scaled')
            nodes.append(helper.make_node('Mul', [norm, node.input[1]], [scaled],
                                          name=f'{p}_scale'))
            nodes.append(helper.make_node('Add', [scaled, node.input[2]], [y],
                                          name=f'{p}_bias'))
        else:
            nodes.append(helper.make_node('Mul', [norm, node.input[1]], [y], name=f'{p}_scale'))
        new_nodes.extend(nodes)
    del graph.node[:]
    graph.node.extend(new_nodes)


def _shape_after_input_cast(model: onnx.ModelProto) -> None:
    """``Shape(uint8 input)`` -> ``Shape(Cast(input))``: the same dims, read from a float tensor.

    A network that reads its input's size (SFNet's flow warp) makes the exporter take the shape
    of the graph input itself, a second consumer of the UINT8 tensor; the Cast right after the
    input has the same shape and may be read instead.
    """
    graph = model.graph
    u8 = {i.name for i in graph.input if i.type.tensor_type.elem_type == 2}
    casts = {n.input[0]: n.output[0] for n in graph.node
             if n.op_type == 'Cast' and n.input and n.input[0] in u8}
    moved = [n for n in graph.node if n.op_type == 'Shape' and n.input[0] in casts]
    if not moved:
        return
    for node in moved:
        node.input[0] = casts[node.input[0]]
    _topological_sort(graph)


def _topological_sort(graph: Any) -> None:
    """Reorder nodes so each comes after its inputs' producers (stable otherwise)."""
    nodes = list(graph.node)
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {''}
    order: list[Any] = []
    pending = nodes
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                order.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise SegRosError(f'graph has a cycle or a missing input at node {rest[0].name}')
        pending = rest
    del graph.node[:]
    graph.node.extend(order)


def rewrite_for_target(model: onnx.ModelProto, target: str) -> onnx.ModelProto:
    """Return a copy of an exported opset-18 graph in the form the ``target`` parser reads.

    Args:
        model: the exporter's opset-18 graph.
        target: ``'10'`` (only ``Shape`` of the uint8 input moves after its Cast), ``'8.6'``
            or ``'8.5'``.

    Raises:
        SegRosError: a node has no rewrite (one line naming it).
    """
    import onnx

    if target not in ('8.5', '8.6', '10'):
        raise SegRosError(f'unknown TensorRT target {target!r}')
    out = onnx.ModelProto()
    out.CopyFrom(model)
    _shape_after_input_cast(out)
    if target == '10':
        return out
    if target == '8.5':
        _decompose_layernorm(out)
    _shape_without_start_end(out)
    _to_opset17(out)
    del out.graph.value_info[:]  # stale after the edits; checkers re-infer
    onnx.checker.check_model(out, full_check=True)
    return out
