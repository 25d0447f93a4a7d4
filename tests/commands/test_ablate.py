"""`bra ablate` from the command line: one tiny ablation (plain vs BRA after p3), its table, JSON, plot, re-run and
report; and every bad input refused before anything trains."""

from __future__ import annotations

import json

import pytest
from PIL import Image

# Each training step costs seconds on a small CPU: one epoch at 64 pixels on a few images.
TINY = ["--epochs", "1", "--imgsz", "64", "--batch", "4", "--device", "cpu", "--workers", "0", "plots=False"]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    from bracli.dataset.sample import write_sample

    return write_sample(tmp_path_factory.mktemp("ablate-data") / "data", seed=2, n_train=8, n_val=4, imgsz=64)


@pytest.fixture(scope="module")
def ablation(tmp_path_factory, small_data):
    """`bra ablate DATA --bra-after none --bra-after p3` at the tiny setting, run once for this module."""
    from bracli.cli import main

    root = tmp_path_factory.mktemp("ablate")
    argv = ["ablate", str(small_data), "--bra-after", "none", "--bra-after", "p3", *TINY, "--project", str(root),
            "--json", str(root / "first.json"), "--plot", str(root / "plot.png")]
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    return root, argv, code


@pytest.mark.slow
def test_table_json_and_plot(ablation, capsys):
    root, _, code = ablation
    assert code == 0
    result = json.loads((root / "first.json").read_text())
    rows = {row["slug"]: row for row in result["rows"]}
    assert list(rows) == ["yolov8n", "yolov8n-bra-p3"]
    for row in rows.values():
        assert row["status"] == "done" and row["action"] == "trained"
        assert set(row["metrics"]) >= {"mAP50", "mAP50-95"}
        assert row["params"] > 0 and row["gflops"] > 0 and row["latency_ms"] > 0 and row["train_seconds"] > 0
        assert row["latency"]["method"] == "interleaved with 1 other variant(s)"
    bra = rows["yolov8n-bra-p3"]
    assert bra["baseline"] == "yolov8n"
    assert bra["params"] > rows["yolov8n"]["params"] and bra["deltas"]["params"] > 0
    assert bra["deltas"]["gflops"] == pytest.approx(bra["gflops"] / rows["yolov8n"]["gflops"] - 1)
    assert bra["deltas"]["mAP50"] == pytest.approx(bra["metrics"]["mAP50"] - rows["yolov8n"]["metrics"]["mAP50"])
    assert result["settings"]["epochs"] == 1 and result["settings"]["imgsz"] == 64
    with Image.open(root / "plot.png") as plot:
        assert plot.format == "PNG"


@pytest.mark.slow
def test_each_variant_is_a_run_folder_with_its_record(ablation, small_data):
    root, _, _ = ablation
    folder = root / small_data.stem
    assert json.loads((folder / "ablation.json").read_text())["variants"] == ["yolov8n", "yolov8n-bra-p3"]
    for slug in ("yolov8n", "yolov8n-bra-p3"):
        assert (folder / slug / "weights" / "best.pt").is_file()
        assert (folder / slug / "results.csv").is_file()
        assert "Epoch" in (folder / slug / "train.log").read_text()  # ultralytics' output went to the log
        record = json.loads((folder / slug / "variant.json").read_text())
        assert record["status"] == "done" and record["settings"]["seed"] == 0


@pytest.mark.slow
def test_rerun_trains_nothing_and_report_rebuilds_the_table(ablation, bra, small_data):
    root, argv, _ = ablation
    folder = root / small_data.stem
    weights = {p: p.stat().st_mtime_ns for p in folder.glob("*/weights/*.pt")}
    first = json.loads((root / "first.json").read_text())
    again = bra(*argv[:-4], "--json", root / "again.json")
    assert again.code == 0, again.err
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*/weights/*.pt")} == weights
    rerun = json.loads((root / "again.json").read_text())
    assert [row["action"] for row in rerun["rows"]] == ["reused", "reused"]
    assert [row["latency_ms"] for row in rerun["rows"]] == [row["latency_ms"] for row in first["rows"]]

    report = bra("ablate", "--report", folder, "--json", "-")
    assert report.code == 0
    rebuilt = json.loads(report.out)
    for old, new in zip(first["rows"], rebuilt["rows"], strict=True):
        assert {**old, "action": None} == new
    assert "yolov8n-bra-p3" in report.err and "mAP50-95" in report.err  # the table, on stderr with --json -


@pytest.mark.slow
def test_rerun_with_other_settings_is_refused(ablation, bra):
    _, argv, _ = ablation
    changed = [arg if arg != "1" else "2" for arg in argv[:-4]]  # --epochs 2
    r = bra(*changed)
    assert r.code == 2
    assert "other settings" in r.err and "epochs 1 → 2" in r.err


@pytest.mark.parametrize(("args", "message"), [
    (["--bra-after", "p3", "--bra-after", "p3"], "given twice"),
    (["--bra-after", "none", "--bra-after", "p9"], "unknown placement 'p9'"),
    (["--topk", "2", "--topk", "2"], "--topk 2 is given twice"),
    (["exist_ok=True"], "exist_ok= is not an extra"),
    (["--report", "somewhere", "--bra-after", "p3"], "--report reads a finished folder"),
    (["--report", "nowhere"], "does not exist"),
    (["--report", "somewhere", "--epochs", "5", "--seed", "0"], "trains nothing; drop --epochs, --seed"),
    (["--bra-after", "none", "--topk", "8", "--region-size", "none"], "no variant has a BRA layer (--bra-after "
                                                                      "none); drop --topk, --region-size"),
    (["--n-win", "7", "--n-win", "100000"], "--n-win 100000 is too large: at most 64"),
    (["--side-dwconv", "33"], "--side-dwconv 33 is too large: at most 31"),
    (["--qk-dim", "100000"], "--qk-dim 100000 is too large"),
    (["--region-size", "5000"], "--region-size 5000 is too large: at most 1024"),
    (["--report", "somewhere", "--plot", "table.txt"], "--plot table.txt: the figure is a PNG"),
])
def test_bad_input_exits_2_before_anything_runs(bra, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)  # the default folder, ./runs/ablate, would be made here
    r = bra("ablate", *args)
    assert r.code == 2, r.err
    assert message in r.err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "table.txt").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--weights", "nope.pt"], "weights file not found"),
    (["nope.yaml"], "data file not found"),
])
def test_missing_files_fail_before_training(bra, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    r = bra("ablate", *args)
    assert r.code == 1
    assert message in r.err
    assert not (tmp_path / "runs").exists()
