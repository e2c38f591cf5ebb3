"""Launch files and parameter files, checked statically (``test_launch_run.py`` runs them).

The launch files are parsed as Python (AST): every package file they reference exists, the
executables are console scripts of setup.py, the documented arguments are declared. When
``launch_ros`` is importable (a ROS install), the descriptions are also really built.
Every key of every ``config/*.yaml`` parameter file is a declared node parameter with a
valid value; the per-family files carry their paper's deployment settings.
"""
from __future__ import annotations

import ast
from pathlib import Path
import re
from typing import Any

import pytest
import yaml

from seg_ros.ros.node_params import PARAMS_BY_NAME, validate_value

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / 'launch').glob('*.launch.py'))
FAMILY_FILES = {'regseg.yaml': ('regseg', 1024, 2048), 'sfnet_lite.yaml': ('sfnet', 1024, 2048),
                'rtseg.yaml': ('rtseg', 512, 1024), 'eseg.yaml': ('eseg', 1024, 2048)}
PARAM_FILES = [ROOT / 'config' / f for f in ('segmentation.yaml', *FAMILY_FILES)]
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
        # package=PACKAGE, directly or through the shared keyword dict (**common)
        assert 'package' not in kw or isinstance(kw['package'], ast.Name)
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


def _params(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / 'config' / name).read_text())['/**']['ros__parameters']


def test_default_params_file_runs_any_model() -> None:
    params = _params('segmentation.yaml')
    assert (params['backend'], params['precision']) == ('auto', 'fp32')
    assert (params['input_width'], params['input_height']) == (0, 0)
    for path in LAUNCH_FILES:
        consts = _module_constants(ast.parse(path.read_text()))
        assert consts['DEFAULT_PARAMS'] == ('config', 'segmentation.yaml'), path.name


@pytest.mark.parametrize('name', sorted(FAMILY_FILES))
def test_family_params_carry_the_paper_settings(name: str) -> None:
    family, height, width = FAMILY_FILES[name]
    params = _params(name)
    # every family-specific value is a declared node parameter with a valid value
    for key in ('model', 'backend', 'precision', 'input_width', 'input_height', 'resize_mode'):
        assert key in params, f'{name} does not set {key}'
        assert key in PARAMS_BY_NAME and validate_value(key, params[key]) is None
    assert (params['input_height'], params['input_width']) == (height, width)
    assert params['resize_mode'] == 'stretch'  # the papers evaluate whole frames
    assert (params['backend'], params['precision']) == ('tensorrt', 'fp16')
    model = params['model']
    assert model.startswith('package://seg_ros/models/') and model.endswith('.pt')
    stem = Path(model).stem
    assert stem.startswith(family), (name, model)
    try:  # the registry imports without torch; listing the models needs it
        from seg_ros.models.registry import list_models

        names = list_models()
    except ImportError:  # the robot-minimal venv has no torch
        return
    assert any(stem == m or stem.startswith(m + '_') for m in names), model


def test_family_params_differ() -> None:
    keys = ('model', 'input_width', 'input_height')
    settings = {tuple(_params(n)[k] for k in keys) for n in FAMILY_FILES}
    assert len(settings) == len(FAMILY_FILES)


def test_launch_descriptions_build_when_launch_ros_is_installed() -> None:
    pytest.importorskip('launch_ros', reason='launch_ros is not on PyPI; needs a ROS install')
    import importlib.util

    for path in LAUNCH_FILES:
        spec = importlib.util.spec_from_file_location(path.stem.replace('.', '_'), path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.generate_launch_description().entities
