"""`read_data_yaml`: the one data.yaml reader (pure, never raises, every problem an Issue with a line)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bracli.dataset.data_yaml import MAX_CLASSES, DataYaml, read_data_yaml


def _read(tmp_path: Path, text: str) -> DataYaml:
    path = tmp_path / "data.yaml"
    path.write_text(text)
    return read_data_yaml(path)


def _ids(data: DataYaml) -> list[tuple[str, int | None]]:
    return [(issue.check, issue.line) for issue in data.issues]


def test_a_complete_file(tmp_path, monkeypatch):
    (tmp_path / "ds" / "images" / "train").mkdir(parents=True)
    data = _read(tmp_path, "path: ds\ntrain: images/train\nval: [images/val, lists/val.txt]\ntest: ../elsewhere\n"
                 "names:\n  0: cat\n  1: dog\ndownload: https://example.com/ds.zip\n")
    assert data.path == tmp_path / "data.yaml"
    assert data.root == tmp_path / "ds"
    assert data.names == ["cat", "dog"] and data.nc == 2
    assert data.splits == {"train": [tmp_path / "ds" / "images" / "train"],
                           "val": [tmp_path / "ds" / "images" / "val", tmp_path / "ds" / "lists" / "val.txt"],
                           "test": [tmp_path / "ds" / "elsewhere"]}  # ultralytics' second guess for a missing ../
    assert data.download == "https://example.com/ds.zip"
    assert data.raw["names"] == {0: "cat", 1: "dog"}
    assert _ids(data) == [("yaml.download", 8), ("yaml.relative_path", 1)]
    assert data.first_error() is None  # a warning and an info are not errors
    assert data.to_dict()["splits"]["train"] == [str(tmp_path / "ds" / "images" / "train")]


def test_a_relative_root_is_resolved_next_to_the_yaml_from_any_working_directory(tmp_path, monkeypatch):
    (tmp_path / "ds").mkdir()
    (tmp_path / "elsewhere" / "ds").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "elsewhere")  # a ./ds here must not win: bra train looks next to the YAML
    assert _read(tmp_path, "path: ds\ntrain: a\nval: b\nnames: [x]\n").root == tmp_path / "ds"
    assert _read(tmp_path, "train: a\nval: b\nnames: [x]\n").root == tmp_path
    assert _read(tmp_path, f"path: {tmp_path / 'abs'}\ntrain: a\nval: b\nnames: [x]\n").root == tmp_path / "abs"


@pytest.mark.parametrize(("lines", "line"), [
    ("nc: abc", 3), ("nc: 2.5", 3), ("nc: true", 3), ("nc: 0", 3), ("nc: -1", 3), ("nc: [1]", 3),
    (f"nc: {MAX_CLASSES + 1}", 3), ("nc: 1e300", 3),
    ("names: abc", 3), ("names: 5", 3), ("names: {0: a, 2: c}", 3), ("names: {a: x}", 3), ("names: []", 3),
    ("names: [[1, 2]]", 3), ("names: [a, null]", 3), ("names: [a, '']", 3),
    ("nc: 3\nnames: [a, b]", 3),
])
def test_invalid_nc_and_names_are_one_error_each(tmp_path, lines, line):
    data = _read(tmp_path, f"train: a\nval: b\n{lines}\n")
    assert _ids(data) == [("yaml.names", line)]
    message = data.first_error()
    assert message.startswith(f"{tmp_path / 'data.yaml'}:{line}: ") and "\n" not in message


@pytest.mark.parametrize(("lines", "names"), [
    ("nc: 3", ["class_0", "class_1", "class_2"]), ("nc: '2'", ["class_0", "class_1"]), ("nc: 2.0", ["class_0",
                                                                                                   "class_1"]),
    ("names: {'1': b, '0': a}", ["a", "b"]), ("names: [1, 2.5]", ["1", "2.5"]), ("nc: 2\nnames: [a, b]", ["a", "b"]),
])
def test_valid_nc_and_names(tmp_path, lines, names):
    data = _read(tmp_path, f"train: a\nval: b\n{lines}\n")
    assert data.issues == [] and data.names == names


def test_validation_is_accepted_for_val(tmp_path):
    data = _read(tmp_path, "train: a\nvalidation: b\nnames: [x]\n")
    assert data.issues == [] and data.splits["val"] == [tmp_path / "b"]


@pytest.mark.parametrize(("text", "check_id", "line"), [
    ("train: [a\n", "yaml.parse", 2),
    ("- a list\n", "yaml.parse", None),
    ("train: a\nnames: [x]\n", "yaml.missing_key", None),
    ("train: a\nval: 3\nnames: [x]\n", "yaml.parse", 2),
    ("train: a\nval: b\n", "yaml.missing_key", None),
    ("path: [x]\ntrain: a\nval: b\nnames: [x]\n", "yaml.parse", 1),
    ("!!python/object/apply:os.system ['echo PWNED']\n", "yaml.parse", 1),
])
def test_structural_problems(tmp_path, text, check_id, line):
    data = _read(tmp_path, text)
    assert (check_id, line) in _ids(data)
    assert data.first_error() is not None


def test_unreadable_files_are_issues_not_exceptions(tmp_path):
    assert _ids(read_data_yaml(tmp_path / "missing.yaml")) == [("yaml.parse", None)]
    assert "folder" in read_data_yaml(tmp_path).first_error()
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage")
    assert "not UTF-8" in read_data_yaml(tmp_path / "binary.yaml").first_error()
    (tmp_path / "deep.yaml").write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert read_data_yaml(tmp_path / "deep.yaml").first_error() is not None
    with open(tmp_path / "huge.yaml", "wb") as f:
        f.truncate(32 << 20)
    assert "MiB" in read_data_yaml(tmp_path / "huge.yaml").first_error()
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.yaml")
        assert "FIFO" in read_data_yaml(tmp_path / "fifo.yaml").first_error()  # and no hang


def test_aliases_cannot_blow_up_names(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi",
                                                                                               strict=True))
    data = _read(tmp_path, bomb + "train: a\nval: b\nnames: *i\n")  # 9^9 names if expanded to text
    assert _ids(data) == [("yaml.names", 12)]
