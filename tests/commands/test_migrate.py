"""`bra migrate` on the command line: what it prints, what it refuses, and that the result works with bra."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.legacy_bra import legacy_detector, save_like_ultralytics


@pytest.fixture(scope="module")
def legacy_ckpt(tmp_path_factory) -> Path:
    return save_like_ultralytics(legacy_detector(), tmp_path_factory.mktemp("blog") / "best.pt")


def test_migrates_and_says_what(bra, legacy_ckpt, tmp_path):
    out = tmp_path / "best-bracli.pt"
    r = bra("migrate", legacy_ckpt, "--out", out)
    assert r.code == 0, r.err
    assert "migrated 1 BRA layer (index 16: dim 64, n_win 7, heads 8, topk 4)" in r.out
    assert f"wrote {out}" in r.out
    assert out.is_file()


def test_json_on_stdout(bra, legacy_ckpt, tmp_path):
    r = bra("migrate", legacy_ckpt, "--out", tmp_path / "out.pt", "--json", "-")
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert result["layers"][0]["index"] == "16" and result["layers"][0]["n_win"] == 7
    assert "migrated 1 BRA layer" in r.err  # the human lines move to stderr


def test_never_overwrites_without_force(bra, legacy_ckpt, tmp_path):
    out = tmp_path / "out.pt"
    out.write_bytes(b"mine")
    r = bra("migrate", legacy_ckpt, "--out", out)
    assert r.code == 2 and "already exists; pass --force" in r.err
    assert out.read_bytes() == b"mine"
    assert bra("migrate", legacy_ckpt, "--out", out, "--force").code == 0
    assert out.read_bytes() != b"mine"


def test_never_writes_over_its_source(bra, legacy_ckpt):
    before = legacy_ckpt.read_bytes()
    r = bra("migrate", legacy_ckpt, "--out", legacy_ckpt, "--force")
    assert r.code == 2 and "never writes over its source" in r.err
    assert legacy_ckpt.read_bytes() == before


def test_refuses_settings_bracli_does_not_implement(bra, tmp_path):
    source = save_like_ultralytics(legacy_detector(diff_routing=True), tmp_path / "odd.pt")
    r = bra("migrate", source, "--out", tmp_path / "out.pt")
    assert r.code == 2
    assert "diff_routing=True is not implemented" in r.err and len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "out.pt").exists()


def test_hostile_file_is_refused_and_runs_nothing(bra, tmp_path):
    import os

    import torch

    class Hostile:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'marker'}",)

    source = tmp_path / "hostile.pt"
    torch.save({"ema": Hostile()}, source)
    r = bra("migrate", source, "--out", tmp_path / "out.pt")
    assert r.code == 1 and "system" in r.err and "internal error" not in r.err
    assert not (tmp_path / "marker").exists()


def test_missing_source(bra, tmp_path):
    r = bra("migrate", tmp_path / "nope.pt", "--out", tmp_path / "out.pt")
    assert r.code == 1 and "checkpoint not found" in r.err


@pytest.mark.parametrize("name", ["x.onnx", "x.pth", "x"])
def test_out_must_be_a_pt_checkpoint(bra, legacy_ckpt, tmp_path, name):
    r = bra("migrate", legacy_ckpt, "--out", tmp_path / name)
    assert r.code == 2
    assert f"--out {name}: the migrated checkpoint must end in .pt" in r.err and len(r.err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_out_suffix_is_checked_by_the_library_too(legacy_ckpt, tmp_path):
    from bracli.engine.migrate import migrate
    from bracli.errors import UsageError

    with pytest.raises(UsageError, match=r"must end in \.pt"):
        migrate(legacy_ckpt, tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_as_source_is_named_a_folder(bra, tmp_path):
    r = bra("migrate", tmp_path, "--out", tmp_path / "out.pt")
    assert r.code == 1
    assert f"checkpoint is a folder, not a checkpoint file: {tmp_path}" in r.err
    assert "not found" not in r.err


def test_help_says_out_is_required_and_it_is(bra, legacy_ckpt):
    help_text = " ".join(bra("migrate", "--help").out.replace("│", " ").split())
    assert "Output path (required: this command has no default)" in help_text
    assert "named after the input" not in help_text
    r = bra("migrate", legacy_ckpt)
    assert r.code == 2 and "--out is required" in r.err


def test_result_works_with_bra_predict(bra, legacy_ckpt, tmp_path):
    from ultralytics.utils import ASSETS

    out = tmp_path / "best-bracli.pt"
    assert bra("migrate", legacy_ckpt, "--out", out).code == 0
    r = bra("predict", ASSETS / "bus.jpg", "--model", out, "--imgsz", "320", "--project", tmp_path / "runs")
    assert r.code == 0, r.err


def test_listed_with_help_and_example(bra):
    assert " migrate " in bra("--help").out
    r = bra("migrate", "--help")
    assert r.code == 0 and "Example: bra migrate" in r.out and "--out" in r.out
