"""seg-ros demo: clear failure without the shipped model, ONNX reuse/re-export, a small run."""
from __future__ import annotations

import json
from pathlib import Path

import bag_testutil
import pytest

from seg_ros import demo
from seg_ros.cli import main


def _tiny_onnx(path: Path, source_sha: str | None) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node('Identity', ['x'], ['y'])], 'g',
                              [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1])])
    model = helper.make_model(graph)
    if source_sha is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = demo.SOURCE_SHA_KEY, source_sha
    onnx.save(model, str(path))


def test_missing_shipped_model_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, 'models_dir', lambda: tmp_path)
    assert main(['demo', '--out', str(tmp_path / 'out')]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1
    assert err[0].startswith('seg-ros demo: error: the shipped demo model')
    assert 'regseg48_synthetic.pt is missing' in err[0] and 'models/README.md' in err[0]


def test_shipped_onnx_is_used_only_when_it_matches_the_checkpoint(tmp_path):
    ckpt = tmp_path / 'm.pt'
    ckpt.write_bytes(b'weights v1')
    shipped = tmp_path / 'm.onnx'
    _tiny_onnx(shipped, demo.sha256_file(ckpt))
    assert demo.resolve_model(ckpt, shipped)[0] == shipped
    # retrained without re-exporting: the checkpoint runs (the runtime exports it, cached)
    ckpt.write_bytes(b'weights v2')
    assert demo.resolve_model(ckpt, shipped)[0] == ckpt
    _tiny_onnx(shipped, None)  # an ONNX that records no source
    assert demo.resolve_model(ckpt, shipped)[0] == ckpt
    shipped.unlink()
    assert demo.resolve_model(ckpt, shipped)[0] == ckpt


def test_demo_refuses_to_delete_a_foreign_folder(tmp_path, monkeypatch):
    out = tmp_path / 'mine'
    out.mkdir()
    (out / 'thesis.tex').write_text('precious')
    with pytest.raises(Exception, match='already exists; pass --overwrite'):
        demo._prepare_out(out)
    # --overwrite replaces only a folder an earlier demo wrote
    with pytest.raises(Exception, match='not written by seg-ros demo'):
        demo._prepare_out(out, overwrite=True)
    assert (out / 'thesis.tex').exists()


@pytest.mark.ros
def test_small_demo_run(tmp_path, capsys):
    ckpt = bag_testutil.onnx_model()
    out = tmp_path / 'demo_out'
    rc = main(['demo', '--model', str(ckpt), '--frames', '6', '--size',
               '64x128', '--out', str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert 'live: mIoU' in printed and 'latency p50' in printed
    summary = json.loads((out / 'demo_summary.json').read_text())
    assert summary['live']['frames']['published'] == 6
    assert summary['live']['miou'] is not None and summary['offline']['miou'] is not None
    assert 'model_scope' not in summary  # a user's model: the demo claims nothing about it
    for name in ('report.json', 'report.md', 'demo_overlay.png', 'latency_hist.png',
                 'offline/report.json', 'output_bag/metadata.yaml', 'drive_bag/metadata.yaml'):
        assert (out / name).is_file(), name
    # a second run refuses its output folder without --overwrite, replaces it with it
    with pytest.raises(Exception, match='already exists; pass --overwrite'):
        demo._prepare_out(out)
    demo._prepare_out(out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [demo.DEMO_MARKER]


def test_shipped_onnx_is_the_export_of_the_shipped_checkpoint():
    """Catches a retrained checkpoint committed without `seg-ros demo --export-onnx`."""
    ckpt = demo.models_dir() / demo.SHIPPED_CHECKPOINT
    onnx_file = demo.models_dir() / demo.SHIPPED_ONNX
    if not ckpt.is_file():
        pytest.skip('no shipped checkpoint in models/')
    assert onnx_file.is_file(), f'{onnx_file} missing: run `seg-ros demo --export-onnx`'
    assert demo.onnx_source_sha(onnx_file) == demo.sha256_file(ckpt), \
        f'{onnx_file.name} is stale: run `seg-ros demo --export-onnx`'
    from seg_ros.runtime.backends import read_onnx_meta

    assert read_onnx_meta(onnx_file).model == 'regseg48'


def test_the_shipped_models_report_says_what_it_has_seen(tmp_path):
    out = tmp_path / 'demo_out'
    assert main(['demo', '--frames', '2', '--size', '64x128', '--no-offline', '--out',
                 str(out), '--no-progress']) == 0
    summary = json.loads((out / 'demo_summary.json').read_text())
    assert 'synthetic streets' in summary['model_scope']
    assert 'never seen a real camera image' in summary['model_scope']
    assert '## What this model has seen' in (out / 'report.md').read_text()
