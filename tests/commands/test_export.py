"""`bra export` bad input."""

from __future__ import annotations


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
