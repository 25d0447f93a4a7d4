"""`bra predict` bad input."""

from __future__ import annotations

import pytest


def test_missing_source(bra, tmp_path):
    r = bra("predict", tmp_path / "nope.jpg", "--model", tmp_path / "best.pt")
    assert r.code == 1
    assert "source not found" in r.err


def test_unsupported_source_type(bra, tmp_path):
    notes = tmp_path / "notes.docx"
    notes.write_text("x")
    r = bra("predict", notes)
    assert r.code == 2
    assert "unsupported file type" in r.err


def test_url_is_refused(bra):
    r = bra("predict", "https://example.invalid/bus.jpg")
    assert r.code == 2
    assert "does not download" in r.err


def test_no_weights_anywhere(bra, tmp_path):
    r = bra("predict", "--project", tmp_path)
    assert r.code == 2
    assert "no trained weights" in r.err


def test_imgsz_is_rounded_with_a_warning(bra, tmp_path):
    r = bra("predict", tmp_path / "nope.jpg", "--model", tmp_path / "best.pt", "--imgsz", "100")
    assert "--imgsz 100 is not a multiple of the stride 32; using 128" in r.err
    assert r.code == 1


@pytest.mark.parametrize("query", ["inf,3", "nan,3", "3,-inf", "1e999,0"])
def test_routing_query_takes_finite_coordinates(bra, tmp_path, query):
    r = bra("predict", tmp_path, "--routing-query", query)
    assert r.code == 2
    assert "--routing-query takes finite pixel coordinates X,Y" in r.err
    assert "left of or above" not in r.err
