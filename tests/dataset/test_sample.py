"""The built-in sample dataset: deterministic, clean, tight boxes, safe to write and to cache."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from bracli.dataset import sample
from bracli.dataset.check import check
from bracli.dataset.sample import CLASS_NAMES, default_sample, render_image, write_sample
from bracli.errors import OutputExistsError, UsageError


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def default_size_sample(tmp_path_factory) -> Path:
    return write_sample(tmp_path_factory.mktemp("sample"))


def test_default_sample_is_clean(default_size_sample):
    report = check(default_size_sample)
    assert report.issues == []
    assert report.summary == {"errors": 0, "warnings": 0, "info": 0, "images": 168, "labels": 168}
    instances = [row["instances"]["train"] for row in report.stats["classes"]]
    assert [row["name"] for row in report.stats["classes"]] == list(CLASS_NAMES)
    assert min(instances) > 0.5 * max(instances)  # every class well represented


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    first = _digest(write_sample(tmp_path / "a", seed=3, n_train=4, n_val=2).parent)
    again = _digest(write_sample(tmp_path / "b", seed=3, n_train=4, n_val=2).parent)
    other = _digest(write_sample(tmp_path / "c", seed=4, n_train=4, n_val=2).parent)
    assert first == again
    assert len(first) == 2 * 6 + 1
    images = [k for k in first if k.endswith(".jpg")]
    assert all(first[k] != other[k] for k in images)


def test_val_images_do_not_depend_on_the_train_count(tmp_path):
    small = _digest(write_sample(tmp_path / "a", n_train=2, n_val=2).parent)
    large = _digest(write_sample(tmp_path / "b", n_train=5, n_val=2).parent)
    assert {k: v for k, v in small.items() if "/val/" in k} == {k: v for k, v in large.items() if "/val/" in k}


def test_data_yaml_resolves_next_to_itself(tmp_path):
    data_yaml = write_sample(tmp_path / "s", n_train=2, n_val=1)
    text = data_yaml.read_text()
    assert "\npath:" not in text and "train: images/train" in text and "val: images/val" in text
    moved = tmp_path / "moved"
    data_yaml.parent.rename(moved)
    assert check(moved / "data.yaml").images == 3


def test_ultralytics_reads_the_sample_from_another_directory(tmp_path):
    """The real loader, in a fresh process, from an unrelated working directory (imports via bracli.engine)."""
    data_yaml = write_sample(tmp_path / "s", n_train=2, n_val=1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import sys\nfrom bracli.engine.setup import setup\nsetup()\n"
            "from ultralytics.data.utils import check_det_dataset\n"
            "d = check_det_dataset(sys.argv[1])\nprint(d['train']); print(d['val']); print(d['nc'])")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    result = subprocess.run([sys.executable, "-c", code, os.path.relpath(data_yaml, elsewhere)], cwd=elsewhere,
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    train, val, nc = result.stdout.strip().splitlines()[-3:]
    assert Path(train) == data_yaml.parent / "images" / "train"
    assert Path(val) == data_yaml.parent / "images" / "val"
    assert int(nc) == len(CLASS_NAMES)


def test_boxes_are_tight_around_the_coloured_shapes():
    for index in range(6):
        image, boxes = render_image(np.random.default_rng([0, 0, index]), 320)
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
        shape_pixels = (hsv[..., 1] > 120) & (hsv[..., 2] > 100)  # the clutter is grey: only shapes are vivid
        covered = np.zeros_like(shape_pixels)
        for box in boxes:
            x0, y0 = (box.cx - box.w / 2) * 320, (box.cy - box.h / 2) * 320
            x1, y1 = (box.cx + box.w / 2) * 320, (box.cy + box.h / 2) * 320
            covered[int(y0):int(np.ceil(y1)) + 1, int(x0):int(np.ceil(x1)) + 1] = True
            inside = shape_pixels[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))]
            ys, xs = np.nonzero(inside)
            # the shape reaches (within 2 px) every side of its box
            assert xs.min() <= 2 and ys.min() <= 2
            assert xs.max() >= inside.shape[1] - 3 and ys.max() >= inside.shape[0] - 3
        assert shape_pixels[~covered].sum() <= 3  # no shape pixel outside the boxes


def test_non_empty_folder_needs_force(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        write_sample(tmp_path, n_train=2, n_val=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_force_replaces_only_what_the_sample_owns(tmp_path):
    write_sample(tmp_path, n_train=5, n_val=1)
    (tmp_path / "notes.txt").write_text("mine")
    write_sample(tmp_path, n_train=2, n_val=1, force=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert len(list((tmp_path / "images" / "train").iterdir())) == 2  # no stale images from the first run
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_bad_sizes_are_usage_errors(tmp_path):
    with pytest.raises(UsageError):
        write_sample(tmp_path / "a", n_train=0)
    with pytest.raises(UsageError):
        write_sample(tmp_path / "b", imgsz=32)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError):
        write_sample(tmp_path / "file")


@pytest.mark.parametrize(("numbers", "message"), [
    ({"seed": -1}, "seed=-1 is negative"),
    ({"seed": "a"}, "seed='a' is not a whole number"),
    ({"seed": 1.5}, "seed=1.5 is not a whole number"),
    ({"n_val": True}, "n_val=True is not a whole number"),
    ({"n_train": 10**9}, "n_train=1000000000 is out of range"),
    ({"imgsz": 10**6}, "larger than 8192 pixels"),
])
def test_bad_numbers_are_one_line_before_anything_is_created(tmp_path, numbers, message):
    target = tmp_path / "nested" / "ws"
    with pytest.raises(UsageError, match=message) as raised:
        write_sample(target, **{"n_train": 1, "n_val": 1, **numbers})
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "nested").exists()


def test_default_sample_is_generated_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BRA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(sample, "DEFAULTS", {**sample.DEFAULTS, "n_train": 3, "n_val": 2})
    data_yaml = default_sample()
    assert data_yaml == tmp_path / "cache" / sample.SAMPLE_VERSION / "data.yaml"
    stamp = data_yaml.stat().st_mtime_ns
    assert default_sample() == data_yaml and data_yaml.stat().st_mtime_ns == stamp
    assert os.listdir(tmp_path / "cache") == [sample.SAMPLE_VERSION]  # no staging folder left behind
    assert len(list((data_yaml.parent / "images" / "train").iterdir())) == 3


def test_a_finished_sample_from_another_process_wins(tmp_path, monkeypatch):
    """If another process renamed its sample into place first, ours is discarded and theirs used."""
    monkeypatch.setenv("BRA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(sample, "DEFAULTS", {**sample.DEFAULTS, "n_train": 2, "n_val": 1})
    real_write = sample.write_sample

    def racing_write(out_dir, **kwargs):
        result = real_write(out_dir, **kwargs)
        real_write(tmp_path / sample.SAMPLE_VERSION, **kwargs)  # the other process finishes first
        (tmp_path / sample.SAMPLE_VERSION / "theirs").write_text("")
        return result

    monkeypatch.setattr(sample, "write_sample", racing_write)
    data_yaml = default_sample()
    assert (data_yaml.parent / "theirs").exists()
    assert os.listdir(tmp_path) == [sample.SAMPLE_VERSION]


# ---------------------------------------------------------------- the segmentation sample


def _polygons(label: Path) -> list[tuple[int, np.ndarray]]:
    rows = [line.split() for line in label.read_text().splitlines()]
    return [(int(row[0]), np.array(row[1:], dtype=float).reshape(-1, 2)) for row in rows]


def test_segment_sample_has_the_detect_images_and_polygons_whose_boxes_are_the_detect_boxes(tmp_path):
    detect = write_sample(tmp_path / "d", seed=5, n_train=4, n_val=2).parent
    segment = write_sample(tmp_path / "s", seed=5, n_train=4, n_val=2, task="segment").parent
    detect_files, segment_files = _digest(detect), _digest(segment)
    assert detect_files.keys() == segment_files.keys()
    assert all(detect_files[k] == segment_files[k] for k in detect_files if k.endswith(".jpg"))
    for label in sorted((segment / "labels").rglob("*.txt")):
        boxes = [line.split() for line in (detect / label.relative_to(segment)).read_text().splitlines()]
        polygons = _polygons(label)
        assert len(polygons) == len(boxes) > 0
        for (cls, points), box in zip(polygons, boxes, strict=True):
            assert cls == int(box[0])
            assert len(points) == {0: sample.CIRCLE_VERTICES, 1: 4, 2: 3}[cls]
            (x0, y0), (x1, y1) = points.min(0), points.max(0)
            cx, cy, w, h = (float(v) for v in box[1:])
            assert np.allclose([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], [cx, cy, w, h], atol=2e-6)
    text = (segment / "data.yaml").read_text()
    assert "polygons" in text and "sample-seg-v1" in text


def test_segment_polygons_outline_the_coloured_shapes():
    for index in range(6):
        image, shapes = sample.render_shapes(np.random.default_rng([0, 0, index]), 320)
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
        vivid = (hsv[..., 1] > 120) & (hsv[..., 2] > 100)  # the clutter is grey: only shapes are vivid
        drawn = np.zeros(vivid.shape, np.uint8)
        for shape in shapes:
            cv2.fillPoly(drawn, [np.round(np.array(shape.polygon) * 320 * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
        drawn = drawn.astype(bool)
        assert (vivid & drawn).sum() / (vivid | drawn).sum() > 0.9


def test_segment_sample_is_clean_for_the_checker_and_for_ultralytics(tmp_path):
    data_yaml = write_sample(tmp_path / "s", n_train=6, n_val=2, task="segment")
    report = check(data_yaml)
    assert report.issues == [] and report.summary["errors"] == 0

    from bracli.engine.setup import setup

    setup()
    from ultralytics.data.utils import verify_image_label

    for label in sorted((data_yaml.parent / "labels" / "train").iterdir()):
        image = data_yaml.parent / "images" / "train" / f"{label.stem}.jpg"
        _, boxes, _, segments, _, missing, found, empty, corrupt, message = verify_image_label(
            (str(image), str(label), "", False, len(CLASS_NAMES), 0, 0, False))
        assert (missing, found, empty, corrupt) == (0, 1, 0, 0), message
        assert len(segments) == len(boxes) == len(_polygons(label))


def test_default_segment_sample_is_cached_beside_the_detect_one(tmp_path, monkeypatch):
    monkeypatch.setenv("BRA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(sample, "DEFAULTS", {**sample.DEFAULTS, "n_train": 2, "n_val": 1})
    segment = default_sample(task="segment")
    detect = default_sample()
    assert segment == tmp_path / "cache" / "sample-seg-v1" / "data.yaml"
    assert detect == tmp_path / "cache" / sample.SAMPLE_VERSION / "data.yaml"
    assert len(_polygons(next((segment.parent / "labels" / "train").iterdir()))[0][1]) >= 3
    assert sorted(os.listdir(tmp_path / "cache")) == sorted([sample.SAMPLE_VERSION, "sample-seg-v1"])


def test_unknown_task_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="'pose'"):
        write_sample(tmp_path / "a", task="pose")
    with pytest.raises(UsageError, match="'pose'"):
        default_sample(task="pose")
    assert not (tmp_path / "a").exists()


def test_bra_dataset_sample_task_segment_writes_polygons(tmp_path, bra):
    out = bra("dataset", "sample", tmp_path / "seg", "--task", "segment", "--n-train", "2", "--n-val", "1")
    assert out.code == 0, out.err
    labels = sorted((tmp_path / "seg" / "labels" / "train").iterdir())
    assert len(labels) == 2 and all(len(row[1]) >= 3 for label in labels for row in _polygons(label))
    bad = bra("dataset", "sample", tmp_path / "other", "--task", "pose")
    assert bad.code == 2 and "'pose'" in bad.err and not (tmp_path / "other").exists()
