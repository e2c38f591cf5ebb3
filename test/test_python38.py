"""The robot path runs on Python 3.8 (JetPack 5.x / Isaac ROS 2.x images).

The robot path is what a node imports at start with an exported ONNX or a TensorRT engine:
the node modules, the runtime (TensorRT backend and int8 calibration included), encodings,
metadata and bag reading. Two checks, both static (no Python 3.8 needed here):

- ``vermin`` (PyPI) with target 3.8 on those modules: standard-library members, syntax and
  builtins that 3.8 lacks (``str.removeprefix``, ``dict | dict``, ``match`` ...);
- an AST check for what vermin leaves out without ``--eval-annotations``: builtin generics and
  ``X | Y`` unions *evaluated at run time* (type aliases, ``isinstance``, ``cast``), which
  raise ``TypeError`` at import on 3.8. Annotations are skipped: every module has
  ``from __future__ import annotations``, so they are never evaluated.

Exporting (``seg-ros export``: torch's dynamo exporter) needs a desktop and is not checked.
"""
from __future__ import annotations

import ast
from pathlib import Path
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / 'seg_ros'
# Imported by the node at start (module level), or lazily on the robot: TensorRT builds and
# int8 calibration from a bag happen there.
ENTRY = ('seg_ros.ros.node', 'seg_ros.ros.lifecycle_node', 'seg_ros.ros.diagnostics',
         'seg_ros.runtime.segmenter', 'seg_ros.runtime.trt_backend',
         'seg_ros.runtime.calibration', 'seg_ros.bag.io', 'seg_ros.encodings',
         'seg_ros.metadata')
DESKTOP_ONLY = ('seg_ros.runtime.export',)  # torch.onnx dynamo: Python >= 3.10, a desktop
BUILTIN_GENERICS = {'tuple', 'list', 'dict', 'set', 'frozenset', 'type'}
ABC_GENERICS = {'Callable', 'Iterable', 'Iterator', 'Generator', 'Sequence', 'Mapping',
                'MutableMapping', 'Collection', 'AsyncIterator', 'Awaitable', 'Coroutine'}


def _module_file(name: str) -> Path | None:
    rel = Path(*name.split('.'))
    for cand in (ROOT / rel.with_suffix('.py'), ROOT / rel / '__init__.py'):
        if cand.is_file():
            return cand
    return None


def _module_level_imports(path: Path) -> set[str]:
    """seg_ros modules imported at module level (also inside module-level try/if)."""
    out: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith('seg_ros')}
        elif isinstance(node, ast.ImportFrom) and node.module and \
                node.module.startswith('seg_ros') and node.level == 0:
            out.add(node.module)
            out |= {f'{node.module}.{a.name}' for a in node.names
                    if _module_file(f'{node.module}.{a.name}')}
        elif isinstance(node, (ast.Try, ast.If)):
            for block in (node.body, node.orelse, getattr(node, 'finalbody', []),
                          *[h.body for h in getattr(node, 'handlers', [])]):
                stack.extend(block)
    return out


def robot_path_modules() -> list[Path]:
    """The entry modules and every seg_ros module they import at module level."""
    seen: set[str] = set()
    todo = list(ENTRY)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split('.')
        todo += ['.'.join(parts[:i]) for i in range(1, len(parts))]  # parent packages
        path = _module_file(name)
        if path is not None:
            todo += sorted(_module_level_imports(path) - seen)
    assert not seen & set(DESKTOP_ONLY), 'the robot path imports the exporter at start'
    return sorted({p for p in map(_module_file, seen) if p is not None})


def _annotation_ids(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        anns: list[ast.AST | None] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            anns += [node.returns] + [a.annotation for a in
                                      (*args.posonlyargs, *args.args, *args.kwonlyargs,
                                       args.vararg, args.kwarg) if a is not None]
        elif isinstance(node, ast.AnnAssign):
            anns.append(node.annotation)
        for ann in anns:
            if ann is not None:
                ids |= {id(n) for n in ast.walk(ann)}
    return ids


def runtime_typing_problems(source: str, filename: str = '<src>') -> list[str]:
    """Builtin / collections.abc generics and ``X | None`` unions evaluated at run time."""
    tree = ast.parse(source, filename)
    skip = _annotation_ids(tree)
    problems = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Subscript):
            base = node.value
            name = base.id if isinstance(base, ast.Name) else \
                base.attr if isinstance(base, ast.Attribute) else ''
            if name in BUILTIN_GENERICS or name in ABC_GENERICS:
                problems.append(f'{filename}:{node.lineno}: {name}[...] evaluated at run time '
                                f'needs Python 3.9 (use typing.{name.capitalize()})')
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            sides = (node.left, node.right)
            if any(isinstance(s, ast.Constant) and s.value is None for s in sides) or all(
                    isinstance(s, ast.Name) and s.id in BUILTIN_GENERICS | {'int', 'str',
                                                                              'float', 'bytes'}
                    for s in sides):
                problems.append(f'{filename}:{node.lineno}: X | Y type union evaluated at run '
                                f'time needs Python 3.10 (use typing.Optional / Union)')
    return problems


def test_robot_path_covers_node_runtime_encodings_metadata_and_bags() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in robot_path_modules()}
    for must in ('seg_ros/ros/node.py', 'seg_ros/ros/node_params.py',
                 'seg_ros/ros/lifecycle_node.py',
                 'seg_ros/runtime/trt_backend.py', 'seg_ros/runtime/calibration.py',
                 'seg_ros/runtime/engine_cache.py', 'seg_ros/encodings.py',
                 'seg_ros/metadata.py', 'seg_ros/bag/io.py', 'seg_ros/bag/salvage.py'):
        assert must in names


def test_runtime_typing_check_catches_what_breaks_on_38() -> None:
    bad = ('from __future__ import annotations\n'
           'Message = tuple[str, int]\n'
           'Maybe = int | None\n'
           'def f(x: dict[str, int] | None) -> list[int]:\n'
           '    y: tuple[int, ...] = ()\n'
           '    return isinstance(x, (int, str)) and cast(list[int], x)\n')
    lines = sorted(int(p.split(':')[1]) for p in runtime_typing_problems(bad))
    assert lines == [2, 3, 6]  # the alias, the union, the cast; never the annotations


def test_robot_path_has_no_runtime_typing_of_39() -> None:
    problems = []
    for path in robot_path_modules():
        problems += runtime_typing_problems(path.read_text(), str(path.relative_to(ROOT)))
    assert not problems, '\n'.join(problems)


VERMIN = [sys.executable, '-c', 'import sys; from vermin import main; sys.exit(main())',
          '-t=3.8-', '--violations', '--no-tips', '--processes=1']


def test_robot_path_passes_vermin_for_38(tmp_path: Path) -> None:
    pytest.importorskip('vermin')
    files = [str(p) for p in robot_path_modules()]
    proc = subprocess.run([*VERMIN, *files], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # and vermin does see a 3.9 feature (the check is live)
    (tmp_path / 'probe.py').write_text("print('ab'.removeprefix('a'))\n")
    probe = subprocess.run([*VERMIN, str(tmp_path / 'probe.py')], capture_output=True,
                           text=True, timeout=60)
    assert probe.returncode != 0 and 'removeprefix' in probe.stdout
