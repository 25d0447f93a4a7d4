"""`bra export` bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.legacy_bra import legacy_detector, save_like_ultralytics


def test_unknown_format(bra, tmp_path):
    r = bra("export", tmp_path / "best.pt", "--format", "tflite")
    assert r.code == 2
    assert "unknown export format 'tflite'" in r.err


def test_missing_package_named(bra, tmp_path):
    r = bra("export", tmp_path / "best.pt", "--format", "openvino")
    assert r.code == 1
    assert "'openvino'" in r.err


def test_half_needs_gpu(bra, tmp_path):
    r = bra("export", tmp_path / "best.pt", "--half")
    assert r.code == 2
    assert "--half needs a GPU" in r.err


def test_opset_below_17_rejected(bra, tmp_path):
    r = bra("export", tmp_path / "best.pt", "--opset", "12")
    assert r.code == 2


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A bracli checkpoint without training: a blog-style checkpoint, migrated."""
    from bracli.engine.migrate import migrate

    folder = tmp_path_factory.mktemp("weights")
    return migrate(save_like_ultralytics(legacy_detector(), folder / "blog.pt"), folder / "best.pt").out


def test_a_folder_at_out_is_never_replaced_even_with_force(bra, weights, tmp_path):
    folder = tmp_path / "full.onnx"
    folder.mkdir()
    (folder / "keep.txt").write_text("precious")
    r = bra("export", weights, "--imgsz", "64", "--device", "cpu", "--out", folder, "--force")
    assert r.code == 2, r.err
    assert f"{folder} is a directory, expected a file path" in r.err
    assert [p.name for p in folder.iterdir()] == ["keep.txt"] and (folder / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.onnx"]  # no staging folder either


def test_an_opset_torch_cannot_write_is_refused_up_front(bra, weights, tmp_path):
    from bracli.engine.export import max_opset

    r = bra("export", weights, "--imgsz", "64", "--device", "cpu", "--opset", max_opset() + 1,
            "--out", tmp_path / "nd1" / "sub" / "m.onnx")
    assert r.code == 2
    assert r.err.strip().splitlines() == [f"✘ error: --opset {max_opset() + 1} is not supported: the installed "
                                          f"torch exports ONNX opsets 17–{max_opset()}"]
    assert r.out == ""  # no exporter output, no graph dump
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("argv", "says"), [
    (["--format", "torchscript", "--no-simplify"], "--simplify/--no-simplify applies to ONNX export only"),
    (["--format", "torchscript", "--simplify"], "--simplify/--no-simplify applies to ONNX export only"),
    (["--format", "torchscript", "--opset", "18"], "--opset applies to ONNX export only"),
])
def test_options_the_format_does_not_take_are_refused_up_front(bra, weights, tmp_path, argv, says):
    r = bra("export", weights, "--imgsz", "64", "--device", "cpu", *argv, "--out", tmp_path / "m.torchscript")
    assert r.code == 2
    assert says in r.err and len(r.err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_an_export_at_the_newest_opset_works_without_a_deprecation_warning(bra, weights, tmp_path, caplog):
    """The top of the advertised opset range really exports; and no 'half' warning when --half was not given."""
    from bracli.engine.export import max_opset

    target = tmp_path / "deep" / "m.onnx"
    library = logging.getLogger("ultralytics")  # it does not propagate to the root logger caplog listens on
    library.addHandler(caplog.handler)
    try:
        r = bra("export", weights, "--imgsz", "64", "--device", "cpu", "--opset", max_opset(), "--out", target)
    finally:
        library.removeHandler(caplog.handler)
    assert r.code == 0, r.err
    assert target.is_file() and f"opset {max_opset()}" in caplog.text  # ultralytics' log is heard
    assert "deprecated" not in caplog.text + r.out + r.err
