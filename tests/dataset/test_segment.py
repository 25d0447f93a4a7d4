"""Segmentation labels: polygons checked as masks with --task segment, and the box/polygon mix in both modes."""

from __future__ import annotations

import pytest

from bracli.dataset.check import check
from bracli.dataset.labels import inspect_label
from bracli.dataset.report import CHECKS
from bracli.errors import UsageError

from .conftest import POLYGON


def _checks(facts) -> list[tuple[str, int | None]]:
    return [(check_id, line) for check_id, line, _, _ in facts.problems]


def _label(tmp_path, text: str, size: tuple[int, int] = (320, 320), task: str = "segment"):
    path = tmp_path / "x.txt"
    path.write_text(text)
    return inspect_label(str(path), 3, *size, task=task)


def test_segment_defects_are_reported_exactly(segment):
    report = check(segment[0], task="segment", workers=1)
    assert {(i.check, i.file, i.line) for i in report.issues} == segment[1]
    assert report.stats["task"] == "segment"
    assert "dataset.box_segment_mix" in report.skipped


def test_detect_mode_accepts_polygons_but_points_at_the_mix(segment):
    report = check(segment[0], workers=1)
    found = {(i.check, i.file, i.line) for i in report.issues}
    assert found == {("label.mixed_segments", "labels/train/mixed.txt", 2),
                     ("dataset.box_segment_mix", "data.yaml", None)}
    mix = next(i for i in report.issues if i.check == "dataset.box_segment_mix")
    assert mix.message.startswith("6 label files hold polygons and 1 hold boxes only")
    assert set(report.skipped) >= {"label.no_polygons", "label.polygon_degenerate"}


def test_box_only_files_are_errors_for_segment_training():
    # ultralytics' segment loader raises on a dataset where boxes and polygons do not pair up
    assert CHECKS["label.no_polygons"].severity == "error"
    assert CHECKS["dataset.box_segment_mix"].severity == "info"


def test_polygons_are_not_judged_as_masks_in_detect_mode(tmp_path):
    assert _label(tmp_path, "0 0.1 0.1 0.3 0.3 0.5 0.5\n", task="detect").problems == []
    assert _checks(_label(tmp_path, "0 0.1 0.1 0.3 0.3 0.5 0.5\n")) == [("label.polygon_degenerate", 1)]


def test_one_point_is_not_a_polygon_in_either_mode(tmp_path):
    for task in ("detect", "segment"):
        assert _checks(_label(tmp_path, POLYGON + "1 0.5 0.5\n", task=task)) == [("label.polygon_points", 2)]


def test_polygon_area_is_judged_in_pixels(tmp_path):
    sliver = "0 0.1 0.1 0.9 0.1 0.9 0.10005\n"  # 0.8 × 0.00005 / 2 = 0.00002 of the image
    assert _checks(_label(tmp_path, sliver, size=(100, 100))) == [("label.polygon_degenerate", 1)]  # 0.2 px²
    assert _label(tmp_path, sliver, size=(2000, 2000)).problems == []  # 80 px²
    assert _label(tmp_path, sliver, size=(0, 0)).problems == []  # size unknown: 2e-5 > 1e-6


def test_repeated_points_name_the_point(tmp_path):
    facts = _label(tmp_path, "0 0.2 0.2 0.5 0.2 0.5 0.2 0.5 0.5 0.2 0.5\n")
    assert facts.problems[0][2].startswith("point 3 repeats point 2")
    assert facts.problems[0][0] == "label.polygon_repeated_points"


def test_a_polygon_row_counts_as_a_polygon(tmp_path):
    facts = _label(tmp_path, POLYGON + "1 0.6 0.6 0.9 0.6 0.8 0.9\n")
    assert (facts.polygons, facts.plain_boxes) == (2, 0) and facts.problems == []


def test_task_option(bra, segment):
    assert bra("dataset", "check", segment[0], "--task", "segment").code == 1
    result = bra("dataset", "check", segment[0], "--task", "pose")
    assert result.code == 2 and "--task must be one of detect, segment" in result.err
    with pytest.raises(UsageError):
        check(segment[0], task="classify")
