"""The per-file results cache: it makes re-runs fast and never changes what is reported.

A check with the cache must give the same JSON as one without it, whatever happened to the files or to
the cache file in between: edits (same size, mtime restored), a corrupt, truncated, foreign or hostile
cache file, a folder it cannot write, two checks at once.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bracli.dataset import cache as cache_module
from bracli.dataset.check import check

from .conftest import PERMISSIONS_BIND, jpeg_bytes, planted_dataset


@pytest.fixture
def trusted_now(monkeypatch):
    """Files written by the test a moment ago count as settled (the racy window guards real edits)."""
    monkeypatch.setattr(cache_module, "RACY_SECONDS", 0.0)


@pytest.fixture
def dataset(tmp_path) -> Path:
    data_yaml, _ = planted_dataset(tmp_path / "data")
    return data_yaml


def _json(report) -> dict:
    data = report.to_dict()
    del data["stats"]["seconds"]
    return data


def _fresh(data_yaml: Path) -> dict:
    return _json(check(data_yaml, workers=1, cache=False))


def _cached(data_yaml: Path, **options):
    report = check(data_yaml, workers=1, **options)
    return _json(report), report.cache


def _regular_images(report_json: dict) -> int:
    """Images whose results can be cached: all but the missing one of the planted dataset."""
    return report_json["summary"]["images"] - 1


def test_cache_never_changes_the_report_even_after_edits(dataset, trusted_now):
    expected = _fresh(dataset)
    first, info = _cached(dataset)
    assert first == expected and info["hits"] == 0 and Path(info["file"]).is_file()
    second, info = _cached(dataset)
    assert second == expected and info["hits"] == _regular_images(expected)

    root = dataset.parent
    # one image: new pixels, same size and mtime (a same-size edit that ultralytics' cache misses)
    image = root / "images" / "train" / "clean5.jpg"
    old = image.stat()
    other = bytearray(image.read_bytes())
    other[len(other) // 2] ^= 0xFF
    image.write_bytes(bytes(other))
    os.utime(image, ns=(old.st_atime_ns, old.st_mtime_ns))
    # one label: a box moved outside its class range, same size, mtime restored
    label = root / "labels" / "train" / "clean6.txt"
    old = label.stat()
    label.write_text(label.read_text().replace("0 0.3", "9 0.3", 1))
    os.utime(label, ns=(old.st_atime_ns, old.st_mtime_ns))

    after, info = _cached(dataset)
    assert after == _fresh(dataset) != expected
    assert info["hits"] == _regular_images(expected) - 2
    assert ("label.class_out_of_range", "labels/train/clean6.txt", 1) in {
        (i["check"], i["file"], i["line"]) for i in after["issues"]}
    assert _cached(dataset)[1]["hits"] == _regular_images(expected)


def test_a_label_edit_rereads_only_the_label(dataset, trusted_now, monkeypatch):
    from bracli.dataset import probe

    _cached(dataset)
    label = dataset.parent / "labels" / "train" / "clean0.txt"
    label.write_text(label.read_text() + "1 0.5 0.5 0.1 0.1\n")
    opened = []
    real = probe.inspect_image
    monkeypatch.setattr(probe, "inspect_image", lambda path, *a, **k: opened.append(path) or real(path, *a, **k))
    after, _ = _cached(dataset)
    assert opened == [] and after == _fresh(dataset)


def test_files_changed_within_the_timestamp_granularity_are_not_stored(dataset, trusted_now):
    image = dataset.parent / "images" / "train" / "clean0.jpg"
    future = time.time_ns() + 3600 * 10**9  # changed "now" as far as any clock skew goes
    os.utime(image, ns=(future, future))
    _cached(dataset)
    stored = json.loads(Path(check(dataset, workers=1).cache["file"]).read_text())["entries"]
    assert stored[str(image)][1] is None  # its result is read again next time
    assert all(entry[1] is not None for path, entry in stored.items() if path != str(image))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign", "wrong_shapes", "unknown_check", "nan",
                                    "deep", "folder", "fifo"])
def test_a_damaged_cache_file_is_ignored(dataset, trusted_now, damage):
    expected = _fresh(dataset)
    _, info = _cached(dataset)
    path = Path(info["file"])
    text = path.read_text()
    stored = json.loads(text)
    if damage == "truncated":
        path.write_text(text[: len(text) // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(5000))
    elif damage == "foreign":
        path.write_text(json.dumps({"format": "something else", "entries": {}}))
    elif damage == "wrong_shapes":  # every entry mangled a different way
        for index, key in enumerate(stored["entries"]):
            entry = stored["entries"][key]
            entry[index % 5] = [None, "x", 3, {"a": 1}, []][index % 5]
        path.write_text(json.dumps(stored))
    elif damage == "unknown_check":
        for entry in stored["entries"].values():
            if entry[4] is not None:
                entry[4][6] = [["no.such_check", 1, "planted", 0.0]]
        path.write_text(json.dumps(stored))
    elif damage == "nan":  # numbers a box cannot have, in records of the right shape
        for index, entry in enumerate(stored["entries"].values()):
            if entry[4] is not None and entry[4][5]:
                boxes = np.frombuffer(base64.b64decode(entry[4][4]), "<f4").copy()
                boxes[1] = [np.nan, np.inf, -np.inf][index % 3]
                entry[4][4] = base64.b64encode(boxes.tobytes()).decode()
        path.write_text(json.dumps(stored))
    elif damage == "deep":
        path.write_text("[" * 100_000 + "]" * 100_000)
    elif damage == "folder":
        path.unlink()
        path.mkdir()
    elif damage == "fifo":
        path.unlink()
        os.mkfifo(path)  # reading it plainly would block forever
    assert _cached(dataset)[0] == expected
    assert _cached(dataset)[0] == expected  # and again, after the cache was (or could not be) rewritten


def test_a_cache_folder_that_cannot_be_written(dataset, tmp_path, monkeypatch):
    expected = _fresh(dataset)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("BRA_CACHE_DIR", str(blocker / "cache"))  # mkdir fails, even for root
    result, info = _cached(dataset)
    assert result == expected and info["status"].startswith("not saved")


@pytest.mark.skipif(not PERMISSIONS_BIND, reason="this process writes regardless of permissions (root)")
def test_a_read_only_cache_folder_is_read_but_not_written(dataset, trusted_now, private_cache):
    expected = _fresh(dataset)
    _cached(dataset)
    folder = private_cache / "dataset-check"
    folder.chmod(0o555)
    try:
        result, info = _cached(dataset)
        assert result == expected and info["hits"] == _regular_images(expected)  # still read
        (dataset.parent / "labels" / "train" / "clean0.txt").write_text("1 0.5 0.5 0.2 0.2\n")
        result, info = _cached(dataset)
        assert result == _fresh(dataset) and info["status"].startswith("not saved")
    finally:
        folder.chmod(0o755)


def test_two_checks_at_once(dataset, trusted_now):
    expected = _fresh(dataset)
    results, errors = [], []

    def run() -> None:
        try:
            for _ in range(3):
                results.append(_cached(dataset)[0])
        except Exception as e:  # pragma: no cover -- reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(results) == 9 and all(r == expected for r in results)
    assert _cached(dataset)[1]["hits"] == _regular_images(expected)


def test_no_cache_neither_reads_nor_writes(dataset, trusted_now, private_cache):
    check(dataset, workers=1, cache=False)
    assert not any(private_cache.rglob("*.json"))
    _, info = _cached(dataset)
    path = Path(info["file"])
    stored = json.loads(path.read_text())
    image = str(dataset.parent / "images" / "train" / "clean0.jpg")
    stored["entries"][image][1][11] = [["image.grayscale", None, "planted in the cache", 0.0]]
    path.write_text(json.dumps(stored))
    # the cache is trusted while its keys match (this is how it saves time) ...
    assert "planted in the cache" in json.dumps(_cached(dataset)[0])
    # ... and --no-cache reads the files themselves
    assert "planted in the cache" not in json.dumps(_fresh(dataset))


def test_the_cache_lives_outside_the_dataset(dataset, private_cache):
    before = sorted(p for p in dataset.parent.rglob("*"))
    report = check(dataset, workers=1)
    assert Path(report.cache["file"]).is_relative_to(private_cache)
    assert sorted(p for p in dataset.parent.rglob("*")) == before


def test_a_moved_dataset_starts_a_new_cache(dataset, trusted_now, tmp_path):
    _cached(dataset)
    moved = tmp_path / "moved"
    shutil.copytree(dataset.parent, moved, symlinks=True)
    result, info = _cached(moved / "data.yaml")
    assert info["hits"] == 0 and result == _fresh(moved / "data.yaml")


def test_exact_duplicates_need_equal_bytes_not_just_equal_ends(tmp_path, make_clean):
    """Files that agree on size and both ends get a full hash; only identical bytes are duplicates."""
    data_yaml = make_clean(tmp_path)
    original = tmp_path / "images" / "train" / "000.jpg"
    changed = bytearray(original.read_bytes())
    changed[len(changed) // 2] ^= 0x01
    (tmp_path / "images" / "train" / "zz_same_ends.jpg").write_bytes(bytes(changed))
    shutil.copy(original, tmp_path / "images" / "train" / "zz_copy.jpg")
    for name in ("zz_same_ends", "zz_copy"):
        shutil.copy(tmp_path / "labels" / "train" / "000.txt", tmp_path / "labels" / "train" / f"{name}.txt")
    report = check(data_yaml, workers=1, near_dup_threshold=None)
    duplicates = [(i.check, i.file) for i in report.issues if i.check == "dataset.duplicate_image"]
    assert duplicates == [("dataset.duplicate_image", "images/train/zz_copy.jpg")]


def test_the_command_says_what_came_from_the_cache(bra, dataset, trusted_now):
    bra("dataset", "check", dataset)
    result = bra("dataset", "check", dataset)
    assert f"{_regular_images(_fresh(dataset))} of" in result.out and "unchanged since the last check" in result.out
    assert "unchanged" not in bra("dataset", "check", dataset, "--no-cache").out


def test_images_are_read_once_per_run(tmp_path, trusted_now):
    """The first run reads every image; a re-run of an unchanged dataset opens none."""
    root = tmp_path / "d"
    for i in range(4):
        (root / "images" / "train").mkdir(parents=True, exist_ok=True)
        (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
        (root / "images" / "train" / f"{i}.jpg").write_bytes(jpeg_bytes(500 + i))
        (root / "labels" / "train" / f"{i}.txt").write_text(f"{i % 3} 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text("train: images/train\nval: images/train\nnames: [a, b, c]\n")
    assert check(root / "data.yaml", workers=1).cache["hits"] == 0
    assert check(root / "data.yaml", workers=1).cache["hits"] == 4


def test_files_of_datasets_not_checked_for_a_month_are_pruned(dataset, private_cache):
    folder = private_cache / "dataset-check"
    folder.mkdir(parents=True)
    old, recent, foreign = folder / ("a" * 24 + ".json"), folder / ("b" * 24 + ".json"), folder / "notes.json"
    for path in (old, recent, foreign):
        path.write_text("{}")
    month_ago = time.time() - 31 * 86400
    for path in (old, foreign):
        os.utime(path, (month_ago, month_ago))
    check(dataset, workers=1)
    assert not old.exists() and recent.exists() and foreign.exists()
