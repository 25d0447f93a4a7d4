"""Data-file validation before ultralytics sees it: clear errors, no download execution, path resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bracli.engine.data import check_split, resolve_data
from bracli.errors import BracliError


def make_dataset(root: Path, images: bool = True) -> None:
    for split in ("train", "val"):
        folder = root / "images" / split
        folder.mkdir(parents=True)
        if images:
            (folder / "a.jpg").write_bytes(b"\xff\xd8\xff")  # only presence matters here


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_missing_file(tmp_path):
    with pytest.raises(BracliError, match="data file not found"):
        resolve_data(tmp_path / "nope.yaml")


def test_invalid_yaml(tmp_path):
    path = tmp_path / "data.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(BracliError, match="invalid YAML"):
        resolve_data(path)


@pytest.mark.parametrize("missing", ["train", "val"])
def test_missing_split_key(tmp_path, missing):
    make_dataset(tmp_path)
    data = {"train": "images/train", "val": "images/val", "names": ["a"]}
    del data[missing]
    with pytest.raises(BracliError, match=f"no '{missing}:' entry"):
        resolve_data(write_yaml(tmp_path / "data.yaml", data))


def test_download_refused_unless_allowed(tmp_path):
    make_dataset(tmp_path)
    data = {"train": "images/train", "val": "images/val", "names": ["a"], "download": "bash evil.sh"}
    path = write_yaml(tmp_path / "data.yaml", data)
    with pytest.raises(BracliError, match="would execute"):
        resolve_data(path)
    assert resolve_data(path, allow_download=True) == path.resolve()


def test_empty_split(tmp_path):
    make_dataset(tmp_path, images=False)
    path = write_yaml(tmp_path / "data.yaml", {"train": "images/train", "val": "images/val", "names": ["a"]})
    with pytest.raises(BracliError, match="contains no images"):
        resolve_data(path)


def test_missing_images_folder(tmp_path):
    path = write_yaml(tmp_path / "data.yaml", {"train": "images/train", "val": "images/val", "names": ["a"]})
    with pytest.raises(BracliError, match="images not found"):
        resolve_data(path)


@pytest.mark.parametrize(("test_entry", "expected"), [
    (None, "no 'test:' split"), ("images/nowhere", "images not found for the test split"),
    ("images/empty", "test split of the data.yaml contains no images"), ("images/val", None),
])
def test_a_split_to_validate_on_must_be_there(tmp_path, test_entry, expected):
    make_dataset(tmp_path)
    (tmp_path / "images" / "empty").mkdir()
    data = {"train": "images/train", "val": "images/val", "names": ["a"]}
    if test_entry:
        data["test"] = test_entry
    path = write_yaml(tmp_path / "data.yaml", {**data, "path": str(tmp_path)})
    if expected is None:
        check_split(path, "test")
        return
    with pytest.raises(BracliError, match=expected):
        check_split(path, "test")


def test_relative_path_resolved_next_to_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv("BRA_CACHE_DIR", str(tmp_path / "cache"))
    make_dataset(tmp_path / "ds")
    (tmp_path / "cfg").mkdir()
    path = write_yaml(tmp_path / "cfg" / "data.yaml",
                      {"path": "../ds", "train": "images/train", "val": "images/val", "names": ["a"]})
    monkeypatch.chdir(tmp_path / "cfg" / "..")  # a cwd from which '../ds' would be wrong
    resolved = resolve_data(path)
    assert resolved != path
    assert yaml.safe_load(resolved.read_text())["path"] == str((tmp_path / "ds").resolve())
    assert resolve_data(path) == resolved  # content-addressed: the same copy next time
    assert path.read_text().count("../ds") == 1  # the user's file is untouched


def test_yaml_without_path_used_as_is(tmp_path):
    make_dataset(tmp_path)
    path = write_yaml(tmp_path / "data.yaml", {"train": "images/train", "val": "images/val", "names": ["a"]})
    assert resolve_data(path) == path.resolve()
