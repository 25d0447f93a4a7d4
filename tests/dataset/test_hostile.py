"""Hostile files: FIFOs, devices, folder link loops, folders and huge files as labels, garbage, odd names.

The check must never hang, never follow a loop, never read what is not a regular file, and report each
of these with its own id. ``hostile_dataset`` (conftest) plants them next to a clean dataset.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bracli.dataset import labels as labels_module
from bracli.dataset import probe as probe_module
from bracli.dataset.check import check
from bracli.dataset.labels import MAX_PROBLEMS, inspect_label
from bracli.dataset.probe import inspect_image
from bracli.errors import UsageError

from .conftest import PERMISSIONS_BIND, clean_dataset, jpeg_bytes, write

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and symlinks are POSIX")

ODD_NAME = os.fsdecode(b"images/train/new\nline \xff.jpg")


@pytest.fixture(scope="module")
def hostile_report(hostile):
    return check(hostile[0], workers=1, cache=False)


def test_every_hostile_file_is_reported_exactly(hostile, hostile_report):
    found = {(issue.check, issue.file, issue.line) for issue in hostile_report.issues}
    assert found == hostile[1]


def test_a_folder_link_loop_counts_every_real_image_once(hostile_report):
    # 6 clean images + fifo, zero, dir_label, fifo_label, huge, garbage, one_point and the oddly named one
    assert hostile_report.stats["splits"]["train"]["images"] == 14
    loop = next(i for i in hostile_report.issues if i.check == "image.folder_link")
    assert "images/train again" in loop.message and "loop" in loop.message


def test_the_command_never_hangs_and_prints_odd_names(hostile, tmp_path):
    """Through the real entry point in a child process, with a deadline: a FIFO opened plainly blocks forever."""
    result = subprocess.run([sys.executable, "-m", "bracli", "dataset", "check", str(hostile[0]), "--json", "-",
                             "--no-cache"], capture_output=True, timeout=120)
    assert result.returncode == 1, result.stderr.decode(errors="replace")
    report = json.loads(result.stdout)
    assert {"image.not_a_file", "image.folder_link", "label.not_a_file"} <= {i["check"] for i in report["issues"]}
    missing = [i["file"] for i in report["issues"] if i["check"] == "label.missing"]
    assert missing == [ODD_NAME]  # JSON keeps the name (undecodable bytes as surrogate escapes)
    shown = result.stderr.decode("utf-8")
    assert "images/train/new\\nline \\xff.jpg" in shown  # one line, every byte visible
    assert "Traceback" not in shown


def test_files_that_are_not_regular_are_never_opened(tmp_path):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    facts = inspect_image(str(fifo))  # a plain open() would block here
    assert [p[0] for p in facts.problems] == ["image.not_a_file"] and not facts.found
    assert "FIFO" in facts.problems[0][2]
    label = tmp_path / "x.txt"
    os.mkfifo(label)
    assert [p[0] for p in inspect_label(str(label), 3).problems] == ["label.not_a_file"]


def test_prefetch_hints_are_harmless(tmp_path):
    os.mkfifo(tmp_path / "fifo.jpg")
    (tmp_path / "x.jpg").write_bytes(jpeg_bytes(1))
    for name in ("fifo.jpg", "missing.jpg", "bad\0name.jpg"):
        assert probe_module.prefetch(str(tmp_path / name)) is False  # never blocks, never raises
    (tmp_path / "x.jpg").read_bytes()
    assert probe_module.prefetch(str(tmp_path / "x.jpg")) is False  # just read: in the page cache


def test_a_split_that_is_a_fifo_is_not_read(tmp_path, make_clean):
    data_yaml = make_clean(tmp_path)
    os.mkfifo(tmp_path / "val.txt")
    data_yaml.write_text("train: images/train\nval: val.txt\nnames: [a, b, c]\n")
    report = check(data_yaml, cache=False)
    assert [(i.check, i.line) for i in report.issues if i.check.startswith("yaml.")] == [
        ("yaml.split_not_found", 2), ("yaml.no_images", 2)]


def test_a_data_yaml_that_is_a_fifo_is_a_usage_error(tmp_path):
    os.mkfifo(tmp_path / "data.yaml")
    with pytest.raises(UsageError, match="not a regular file"):
        check(tmp_path / "data.yaml")


def test_garbage_text_labels_give_a_bounded_number_of_issues(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("".join(f"not a label row {i}\n" for i in range(5000)))
    facts = inspect_label(str(path), 3, 320, 320)
    assert len(facts.problems) == MAX_PROBLEMS
    assert facts.problems[-1][2].endswith(f"(and {5000 - MAX_PROBLEMS} more problems in this file, not listed)")


def test_a_pile_of_stacked_boxes_stops_at_the_comparison_budget(tmp_path, monkeypatch):
    rows = "".join(f"0 0.5 0.5 0.{200000 + i:06d} 0.3\n" for i in range(60))  # 60 nearly identical boxes
    (tmp_path / "x.txt").write_text(rows)
    everything = inspect_label(str(tmp_path / "x.txt"), 3, 320, 320)
    monkeypatch.setattr(labels_module, "NEAR_DUP_BUDGET", 300)
    budgeted = inspect_label(str(tmp_path / "x.txt"), 3, 320, 320)
    count = [sum(p[0] == "label.near_duplicate" for p in f.problems) for f in (everything, budgeted)]
    assert 0 < count[1] < count[0]


def test_a_file_too_large_to_hold_is_streamed(tmp_path, monkeypatch):
    """Past MAX_IMAGE_BYTES the header, ends and digest are read in pieces; only the perceptual hash is skipped."""
    path = tmp_path / "x.jpg"
    path.write_bytes(jpeg_bytes(7) + b"\0" * 10)
    whole = inspect_image(str(path))
    monkeypatch.setattr(probe_module, "MAX_IMAGE_BYTES", 1000)
    streamed = inspect_image(str(path))
    for name in ("format", "width", "height", "mode", "file_size", "digest", "fingerprint", "usable", "problems"):
        assert getattr(streamed, name) == getattr(whole, name), name
    assert whole.dhash is not None and streamed.dhash is None


@pytest.mark.skipif(not PERMISSIONS_BIND, reason="this process reads files regardless of their permissions (root)")
def test_unreadable_files_and_folders(tmp_path):
    data_yaml = clean_dataset(tmp_path)
    (tmp_path / "images" / "train" / "sub").mkdir()
    write(tmp_path / "images" / "train" / "sub" / "hidden.jpg", jpeg_bytes(400))
    locked = [tmp_path / "images" / "train" / "000.jpg", tmp_path / "labels" / "train" / "001.txt",
              tmp_path / "images" / "train" / "sub"]
    for path in locked:
        path.chmod(0)
    try:
        report = check(data_yaml, workers=1, cache=False)
    finally:
        for path in locked:
            path.chmod(0o755)
    found = {(i.check, i.file) for i in report.issues}
    assert found == {("image.corrupt", "images/train/000.jpg"), ("label.unreadable", "labels/train/001.txt"),
                     ("image.folder_unreadable", "images/train/sub")}


def _worker_dies(*args):
    os._exit(3)  # as a decoder crashing on a hostile file would


def test_a_dying_worker_is_one_clear_error(tmp_path, make_clean, monkeypatch):
    from bracli.dataset import check as check_module
    from bracli.errors import BracliError

    monkeypatch.setattr(check_module, "SERIAL_BELOW", 0)
    monkeypatch.setattr(check_module, "probe_chunk", _worker_dies)
    with pytest.raises(BracliError, match="--workers 1"):
        check(make_clean(tmp_path), workers=2, cache=False)


def test_class_names_are_shown_as_written_never_as_markup(bra, tmp_path, make_clean):
    data_yaml = make_clean(tmp_path)
    data_yaml.write_text('train: images/train\nval: images/val\nnames: ["[/]", "a\\nb", "[bold]c"]\n')
    result = bra("dataset", "check", data_yaml, "--plots", tmp_path / "plots")
    assert result.code == 0, result.err
    assert "[/]" in result.out and "a\\nb" in result.out and "[bold]c" in result.out
    data_yaml.write_text('train: images/train\nval: images/val\nnames: ["$\\\\frac{$", "$x^$", "c"]\n')
    assert bra("dataset", "check", data_yaml, "--plots", tmp_path / "plots", "--force").code == 0
