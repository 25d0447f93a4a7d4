"""`bra dataset check` / `bra dataset sample` through the real entry point: exit codes, JSON, plots, output."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from bracli.dataset.plots import PLOT_NAMES
from bracli.dataset.report import CHECKS


def test_clean_dataset_exits_0_with_summary(bra, tmp_path, make_clean):
    result = bra("dataset", "check", make_clean(tmp_path))
    assert result.code == 0
    assert "0 errors, 0 warnings, 0 info" in result.out
    assert "✔ every split has images" in result.out


def test_planted_dataset_exits_1_and_shows_worst_examples(bra, planted):
    result = bra("dataset", "check", planted[0], "--workers", "1")
    assert result.code == 1
    assert "✘ class ids are within names: 1" in result.out
    assert "labels/train/class_out_of_range.txt:2" in result.out
    assert "⚠ no download: script" in result.out
    counts = Counter(CHECKS[check_id].severity for check_id, _, _ in planted[1])
    assert f"{counts['error']} errors, {counts['warning']} warnings, {counts['info']} info" in result.out


def test_an_unreadable_data_yaml_shows_the_other_checks_as_not_run(bra, tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    result = bra("dataset", "check", tmp_path / "empty.yaml")
    assert result.code == 1 and "✘ data.yaml is readable YAML mapping: 1" in result.out
    assert "✔" not in result.out
    assert "– names and nc agree (not run: the data.yaml could not be read)" in result.out


def test_strict_turns_warnings_into_exit_1(bra, tmp_path, make_clean):
    data_yaml = make_clean(tmp_path)
    (tmp_path / "labels" / "train" / "000.txt").write_text("0 0.95 0.5 0.3 0.2\n1 0.3 0.3 0.2 0.2\n")
    assert bra("dataset", "check", data_yaml).code == 0
    assert bra("dataset", "check", data_yaml, "--strict").code == 1


@pytest.mark.parametrize("args", [
    ("/nonexistent/data.yaml",),
    ("DATA", "--imgsz", "0"),
    ("DATA", "--workers", "0"),
    ("DATA", "--near-dup-threshold", "129"),
    ("DATA", "--no-such-option"),
])
def test_usage_problems_exit_2(bra, tmp_path, make_clean, args):
    data_yaml = make_clean(tmp_path)
    result = bra("dataset", "check", *(data_yaml if a == "DATA" else a for a in args))
    assert result.code == 2
    assert "Traceback" not in result.err


def test_json_file_has_the_documented_shape(bra, tmp_path, planted):
    report_path = tmp_path / "report.json"
    assert bra("dataset", "check", planted[0], "--json", report_path, "--workers", "1").code == 1
    data = json.loads(report_path.read_text())
    assert set(data) == {"summary", "issues", "stats"}
    assert data["summary"]["errors"] == sum(i["severity"] == "error" for i in data["issues"])
    assert {(i["check"], i["file"], i["line"]) for i in data["issues"]} == planted[1]
    # the file exists now: refused without --force, written with it
    assert bra("dataset", "check", planted[0], "--json", report_path).code == 2
    assert bra("dataset", "check", planted[0], "--json", report_path, "--force").code == 1


def test_json_to_stdout_keeps_stdout_pure(bra, tmp_path, make_clean):
    result = bra("dataset", "check", make_clean(tmp_path), "--json", "-")
    assert result.code == 0
    assert json.loads(result.out)["summary"]["images"] == 9
    assert "0 errors" in result.err


def test_plots_are_written_and_never_overwritten_without_force(bra, tmp_path, make_clean):
    data_yaml = make_clean(tmp_path / "data")
    plots = tmp_path / "plots"
    assert bra("dataset", "check", data_yaml, "--plots", plots).code == 0
    for name in PLOT_NAMES:
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = {name: (plots / name).read_bytes() for name in PLOT_NAMES}
    result = bra("dataset", "check", data_yaml, "--plots", plots)
    assert result.code == 2 and "--force" in result.err
    assert {name: (plots / name).read_bytes() for name in PLOT_NAMES} == before
    assert bra("dataset", "check", data_yaml, "--plots", plots, "--force").code == 0


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_plots_folder_that_cannot_be_written_is_refused_before_the_check(bra, tmp_path, make_clean):
    result = bra("dataset", "check", make_clean(tmp_path / "data"), "--plots", "/proc/plots")
    assert result.code == 2
    assert "cannot write /proc/plots/" in result.err
    assert "label files" not in result.out + result.err  # the check never ran


def test_sample_command_writes_a_clean_dataset(bra, tmp_path):
    out_dir = tmp_path / "shapes"
    result = bra("dataset", "sample", out_dir, "--n-train", "4", "--n-val", "2", "--seed", "1")
    assert result.code == 0
    assert "4 train + 2 val" in result.out
    assert len(list((out_dir / "images" / "train").iterdir())) == 4
    assert bra("dataset", "check", out_dir / "data.yaml").code == 0


def test_sample_command_refuses_a_non_empty_folder(bra, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = bra("dataset", "sample", tmp_path, "--n-train", "2", "--n-val", "1")
    assert result.code == 2 and "--force" in result.err
    assert bra("dataset", "sample", tmp_path, "--n-train", "2", "--n-val", "1", "--force").code == 0
    assert (tmp_path / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("command", ["check", "sample"])
def test_help_has_an_example(bra, command):
    result = bra("dataset", command, "--help")
    assert result.code == 0 and "Example:" in result.out
