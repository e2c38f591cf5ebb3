"""Launch files and parameter files, checked without launch_ros (not on PyPI).

The launch files are parsed as Python (AST): every package file they reference exists, the
executables are console scripts of setup.py, the documented arguments are declared. When
``launch_ros`` is importable (a ROS install), the descriptions are also really built.
Every key of every ``config/*.yaml`` parameter file is a declared node parameter with a
valid value.
"""
from __future__ import annotations

import ast
from pathlib import Path
import re
from typing import Any

import pytest
import yaml

from seg_ros.node_params import PARAMS_BY_NAME, validate_value

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / 'launch').glob('*.launch.py'))
PARAM_FILES = [ROOT / 'config' / f for f in ('regseg.yaml', 'sfnet_lite.yaml', 'rtseg.yaml',
                                             'eseg.yaml')]
PACKAGE_DIRS = ('config', 'launch', 'models')


def _strings(tree: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)]


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Call):
            f = n.func
            if (isinstance(f, ast.Name) and f.id == name) or (
                    isinstance(f, ast.Attribute) and f.attr == name):
                out.append(n)
    return out


def _module_constants(tree: ast.Module) -> dict[str, Any]:
    consts = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
                node.targets[0], ast.Name):
            try:
                consts[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return consts


def _console_scripts() -> set[str]:
    text = (ROOT / 'setup.py').read_text()
    return set(re.findall(r"'([\w-]+) = seg_ros[\w.]*:main'", text))


def test_launch_files_exist() -> None:
    names = {p.name for p in LAUNCH_FILES}
    assert {'segmentation.launch.py', 'multi_camera.launch.py'} <= names


@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_references_exist(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    assert any(isinstance(n, ast.FunctionDef) and n.name == 'generate_launch_description'
               for n in tree.body)
    consts = _module_constants(tree)
    # (folder, file) tuples such as DEFAULT_PARAMS = ('config', 'regseg.yaml')
    referenced = [Path(*v) for v in consts.values() if isinstance(v, tuple) and len(v) == 2
                  and all(isinstance(x, str) for x in v) and v[0] in PACKAGE_DIRS]
    # and any literal file name of a package file
    referenced += [Path(s) for s in _strings(tree)
                   if re.fullmatch(r'[\w/-]+(\.[\w-]+)*\.(yaml|xml|py|onnx|pt|engine)', s)]
    assert referenced, 'expected the launch file to reference package files'
    for rel in referenced:
        candidates = [ROOT / rel] + [ROOT / d / rel for d in PACKAGE_DIRS]
        assert any(c.is_file() for c in candidates), f'{path.name} references missing {rel}'
    for call in _calls(tree, 'Node') + _calls(tree, 'LifecycleNode'):
        kw = {k.arg: k.value for k in call.keywords}
        assert isinstance(kw.get('executable'), ast.Constant)
        assert kw['executable'].value in _console_scripts(), kw['executable'].value
        assert isinstance(kw.get('package'), ast.Name) or kw['package'].value == 'seg_ros'
    assert consts.get('PACKAGE') == 'seg_ros'


def _declared_arguments(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {c.args[0].value for c in _calls(tree, 'DeclareLaunchArgument')
            if c.args and isinstance(c.args[0], ast.Constant)}


def test_segmentation_launch_arguments() -> None:
    args = _declared_arguments(ROOT / 'launch' / 'segmentation.launch.py')
    assert {'model', 'params_file', 'backend', 'image', 'namespace', 'use_lifecycle'} <= args


def test_multi_camera_forwards_every_single_camera_argument() -> None:
    single = _declared_arguments(ROOT / 'launch' / 'segmentation.launch.py')
    multi_tree = ast.parse((ROOT / 'launch' / 'multi_camera.launch.py').read_text())
    forwarded = set(_module_constants(multi_tree)['FORWARDED'])
    assert forwarded <= single
    # the ones it sets per camera plus the forwarded ones cover every single-camera argument
    assert single == forwarded | {'namespace', 'image'}
    assert forwarded <= _declared_arguments(ROOT / 'launch' / 'multi_camera.launch.py')


def _parse_cameras() -> Any:
    """``parse_cameras`` from multi_camera.launch.py, without importing launch."""
    tree = ast.parse((ROOT / 'launch' / 'multi_camera.launch.py').read_text())
    keep = [n for n in tree.body if (isinstance(n, ast.FunctionDef)
                                     and n.name == 'parse_cameras') or
            (isinstance(n, ast.Assign) and any(getattr(t, 'id', '') == '_NAME'
                                               for t in n.targets))]
    namespace: dict[str, Any] = {'re': re}
    exec(compile(ast.Module(body=keep, type_ignores=[]), 'multi_camera', 'exec'), namespace)
    return namespace['parse_cameras']


def test_multi_camera_list_parsing() -> None:
    parse = _parse_cameras()
    assert parse('front, rear:/rear_cam/image_raw') == [
        ('front', '/front/image_raw'), ('rear', '/rear_cam/image_raw')]
    assert parse('left', 'image_rect') == [('left', '/left/image_rect')]
    for bad in ('', ' , ', 'front,front', '1cam', 'a-b'):
        with pytest.raises(ValueError):
            parse(bad)


@pytest.mark.parametrize('path', PARAM_FILES, ids=lambda p: p.name)
def test_param_files_declared_and_valid(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    assert list(data) == ['/**'] and list(data['/**']) == ['ros__parameters']
    params = data['/**']['ros__parameters']
    assert params, path
    for name, value in params.items():
        assert name in PARAMS_BY_NAME, f'{path.name}: {name} is not a node parameter'
        assert validate_value(name, value) is None, (path.name, validate_value(name, value))


def test_launch_descriptions_build_when_launch_ros_is_installed() -> None:
    pytest.importorskip('launch_ros', reason='launch_ros is not on PyPI; needs a ROS install')
    import importlib.util

    for path in LAUNCH_FILES:
        spec = importlib.util.spec_from_file_location(path.stem.replace('.', '_'), path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.generate_launch_description().entities
