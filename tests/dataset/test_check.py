"""`check()`: every planted defect is reported with the right id, severity, file and line; nothing else is."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from bracli.dataset import check as check_module
from bracli.dataset.check import check
from bracli.dataset.report import CHECKS
from bracli.errors import UsageError

YAML_ONLY_CHECKS = {"yaml.parse", "yaml.missing_key", "yaml.names", "yaml.split_not_found", "yaml.relative_path"}
NEEDS_PERMISSIONS = {"image.folder_unreadable"}  # a folder without read permission (tested where not root)
DETECT_ON_SEGMENT_DATA = {"dataset.box_segment_mix"}  # polygon files next to box files, checked for detect


@pytest.fixture(scope="module")
def planted_report(planted):
    return check(planted[0], workers=1, cache=False)  # module scope: before the per-test cache folder exists


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_planted_defect_is_reported_exactly(planted, planted_report):
    _, expected = planted
    found = {(issue.check, issue.file, issue.line) for issue in planted_report.issues}
    assert found == expected


def test_planted_datasets_cover_every_check_but_the_yaml_level_ones(planted, hostile, segment):
    """The planted dataset (data.yaml-valid detect defects), the hostile one and the segment one."""
    ids = [{check_id for check_id, _, _ in dataset[1]} for dataset in (planted, hostile, segment)]
    assert set.union(*ids) | NEEDS_PERMISSIONS | DETECT_ON_SEGMENT_DATA == set(CHECKS) - YAML_ONLY_CHECKS


def test_severities_follow_the_catalogue(planted, planted_report):
    for issue in planted_report.issues:
        assert issue.to_dict()["severity"] == CHECKS[issue.check].severity
    summary = planted_report.summary
    assert summary["errors"] == sum(CHECKS[c].severity == "error" for c in {c for c, _, _ in planted[1]})
    assert planted_report.exit_code == 1


def test_summary_counts_images_and_label_files(planted_report):
    summary = planted_report.summary
    train, val = planted_report.stats["splits"]["train"], planted_report.stats["splits"]["val"]
    assert summary["images"] == train["images"] + val["images"]  # no image is listed in two splits here
    assert summary["labels"] == train["labels"] + val["labels"]
    assert train["labels"] == train["images"] - 2  # background.jpg and the missing image have none


def test_class_statistics(planted_report):
    classes = {row["name"]: row["instances"] for row in planted_report.stats["classes"]}
    assert classes["beta"]["train"] == 1
    assert classes["gamma"] == {"train": 0, "val": 1, "test": 0}


def test_check_never_modifies_the_dataset_nor_runs_download(planted, tmp_path, monkeypatch):
    data_yaml, _ = planted
    root = data_yaml.parent
    before = _snapshot(root)
    monkeypatch.chdir(tmp_path)
    check(data_yaml, workers=1)
    assert _snapshot(root) == before
    assert not (tmp_path / "PWNED").exists() and not (root / "PWNED").exists()


@pytest.mark.parametrize("other_thread", [False, True])
def test_process_pool_gives_the_same_report(planted, planted_report, monkeypatch, other_thread):
    """Workers fork when this process is single-threaded, else start from a clean server process."""
    monkeypatch.setattr(check_module, "SERIAL_BELOW", 0)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    if other_thread:
        thread.start()
    try:
        assert check_module._pool_context().get_start_method() == ("forkserver" if other_thread else "fork")
        pooled = check(planted[0], workers=2)
    finally:
        stop.set()
        if other_thread:
            thread.join()
    assert [i.to_dict() for i in pooled.issues] == [i.to_dict() for i in planted_report.issues]
    assert pooled.stats["classes"] == planted_report.stats["classes"]


def test_clean_dataset_has_no_issue(tmp_path, make_clean):
    report = check(make_clean(tmp_path))
    assert report.issues == []
    assert report.exit_code == 0
    assert report.summary == {"errors": 0, "warnings": 0, "info": 0, "images": 9, "labels": 9}


def test_strict_fails_on_warnings_only(tmp_path, make_clean):
    data_yaml = make_clean(tmp_path)
    (tmp_path / "labels" / "train" / "000.txt").write_text("0 0.3 0.3 0.2 0.2\n0 0.3 0.3 0.2 0.2\n1 0.7 0.7 0.2 0.2\n")
    assert check(data_yaml).exit_code == 0
    strict = check(data_yaml, strict=True)
    assert [i.check for i in strict.issues] == ["label.duplicate"]
    assert strict.exit_code == 1


def test_near_duplicate_search_can_be_skipped(planted):
    report = check(planted[0], near_dup_threshold=None, workers=1)
    found = {issue.check for issue in report.issues}
    assert "dataset.near_duplicate_image" not in found and "split.near_leakage" not in found
    assert "split.leakage" in found  # exact duplicates need no pixels
    assert set(report.skipped) == {"dataset.near_duplicate_image", "split.near_leakage", *check_module.SEGMENT_ONLY}


def test_small_box_limit_follows_imgsz(tmp_path, make_clean):
    data_yaml = make_clean(tmp_path)
    (tmp_path / "labels" / "train" / "000.txt").write_text("0 0.5 0.5 0.03 0.03\n1 0.2 0.2 0.2 0.2\n")
    # 0.03 × 320 px = 9.6 px: above the 8 px stride at imgsz 320, below it at imgsz 160
    assert not [i for i in check(data_yaml, imgsz=320).issues if i.check == "dataset.small_boxes"]
    small = [i for i in check(data_yaml, imgsz=160).issues if i.check == "dataset.small_boxes"]
    assert [(i.file, i.line) for i in small] == [("labels/train/000.txt", 1)]


@pytest.mark.parametrize(("yaml_text", "check_id", "line"), [
    ("train: [images/train\nval: images/val\n", "yaml.parse", 2),
    ("- just\n- a list\n", "yaml.parse", None),
    ("train: images/train\nnames: [a, b, c]\n", "yaml.missing_key", None),
    ("train: images/train\nval: images/val\n", "yaml.missing_key", None),
    ("train: images/train\nval: images/val\nnc: 4\nnames: [a, b, c]\n", "yaml.names", 3),
    ("train: images/train\nval: images/val\nnames: {0: a, 2: c}\n", "yaml.names", 3),
    ("train: images/train\nval: images/nowhere\nnames: [a, b, c]\n", "yaml.split_not_found", 2),
    ("train: images/train\nval: images/train/000.jpg\nnames: [a, b, c]\n", "yaml.split_not_found", 2),
])
def test_yaml_problems(tmp_path, yaml_text, check_id, line, make_clean):
    make_clean(tmp_path)
    data_yaml = tmp_path / "bad.yaml"
    data_yaml.write_text(yaml_text)
    report = check(data_yaml)
    matching = [i for i in report.issues if i.check == check_id]
    assert [(i.file, i.line) for i in matching] == [("bad.yaml", line)]
    assert report.exit_code == 1


@pytest.mark.parametrize(("yaml_text", "ran", "reason"), [
    ("", {"yaml.parse"}, "the data.yaml could not be read"),
    ("- just\n- a list\n", {"yaml.parse"}, "the data.yaml could not be read"),
    ("train: nowhere\nval: nowhere\nnames: [a]\n", {c for c in CHECKS if c.startswith("yaml.")},
     "no images were found"),
])
def test_checks_with_nothing_to_look_at_are_shown_as_not_run(tmp_path, yaml_text, ran, reason):
    data_yaml = tmp_path / "bad.yaml"
    data_yaml.write_text(yaml_text)
    report = check(data_yaml, cache=False)
    found = {issue.check for issue in report.issues}
    assert report.not_run == {c: reason for c in CHECKS if c not in ran | found}
    assert report.to_dict()["not_run"] == report.not_run and report.exit_code == 1


def test_a_complete_check_reports_nothing_as_not_run(planted_report):
    assert planted_report.not_run == {} and "not_run" not in planted_report.to_dict()


def test_relative_path_key_is_resolved_next_to_the_yaml_and_reported(tmp_path, monkeypatch, make_clean):
    make_clean(tmp_path / "data")
    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text("path: data\ntrain: images/train\nval: images/val\nnames: [a, b, c]\n")
    monkeypatch.chdir(tmp_path / "data")  # from here ultralytics would look for ./data/data
    report = check(data_yaml)
    assert [(i.check, i.file, i.line) for i in report.issues] == [("yaml.relative_path", str(data_yaml), 1)]
    assert report.images == 9 and report.exit_code == 0


def test_list_files_and_split_lists_resolve_like_training(tmp_path, monkeypatch, make_clean):
    make_clean(tmp_path)
    images = sorted((tmp_path / "images" / "train").iterdir())
    (tmp_path / "train.txt").write_text("".join(f"./images/train/{p.name}\n" for p in images[:4]))
    (tmp_path / "more.txt").write_text(f"{images[4]}\nimages/train/{images[5].name}\n")
    (tmp_path / "data.yaml").write_text("train: [train.txt, more.txt]\nval: images/val\nnames: [a, b, c]\n")
    monkeypatch.chdir(tmp_path)  # a relative entry without ./ is relative to the working directory
    report = check(tmp_path / "data.yaml")
    assert report.issues == []
    assert report.stats["splits"]["train"]["images"] == 6


def test_same_file_in_two_splits_is_leakage(tmp_path, make_clean):
    make_clean(tmp_path)
    (tmp_path / "data.yaml").write_text("train: images/train\nval: [images/val, val.txt]\nnames: [a, b, c]\n")
    (tmp_path / "val.txt").write_text("./images/train/000.jpg\n")
    report = check(tmp_path / "data.yaml")
    assert report.exit_code == 1
    leaks = [i for i in report.issues if i.check == "split.leakage"]
    assert [(i.file, i.message.split(":")[0]) for i in leaks] == [("images/train/000.jpg",
                                                                   "listed in both train and val")]


def test_bad_arguments_are_usage_errors(tmp_path, make_clean):
    data_yaml = make_clean(tmp_path)
    with pytest.raises(UsageError):
        check(tmp_path / "nope.yaml")
    with pytest.raises(UsageError):
        check(data_yaml, imgsz=8)
    with pytest.raises(UsageError):
        check(data_yaml, near_dup_threshold=500)
    with pytest.raises(UsageError):
        check(data_yaml, workers=0)
    assert check(tmp_path).images == 9  # a folder holding data.yaml is accepted


def test_progress_reports_every_image(tmp_path, make_clean):
    calls = []
    check(make_clean(tmp_path), progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (9, 9)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_json_shape(planted_report):
    data = planted_report.to_dict()
    assert set(data) == {"summary", "issues", "stats"}
    assert set(data["summary"]) == {"errors", "warnings", "info", "images", "labels"}
    assert all(isinstance(v, int) for v in data["summary"].values())
    for issue in data["issues"]:
        assert set(issue) == {"check", "severity", "file", "line", "message"}
        assert issue["severity"] in ("error", "warning", "info")
        assert issue["line"] is None or isinstance(issue["line"], int)
        assert not os.path.isabs(issue["file"]) or issue["check"].startswith("yaml.relative")
