"""`bra val` bad input."""

from __future__ import annotations


def test_missing_weights(bra, tmp_path):
    r = bra("val", tmp_path / "best.pt")
    assert r.code == 1
    assert "weights file not found" in r.err


def test_not_a_pt(bra, tmp_path):
    r = bra("val", tmp_path / "best.onnx")
    assert r.code == 2
    assert "not a .pt checkpoint" in r.err


def test_bad_split(bra, tmp_path):
    r = bra("val", tmp_path / "best.pt", "--split", "train")
    assert r.code == 2
