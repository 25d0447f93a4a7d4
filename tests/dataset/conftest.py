"""Small YOLO datasets built by the tests: a clean one, and one with one planted defect of every kind.

``planted`` gives the data.yaml and the set of (check id, file relative to the dataset root, line) the
checker must report — nothing more, nothing less.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from bracli.dataset.sample import render_image

GOOD_ROWS = "0 0.3 0.3 0.2 0.2\n0 0.7 0.7 0.2 0.2\n"


def _permissions_bind() -> bool:
    """Whether file permissions stop this process (not for root, unless it dropped CAP_DAC_OVERRIDE)."""
    with tempfile.NamedTemporaryFile() as f:
        os.chmod(f.name, 0)
        try:
            open(f.name, "rb").close()
        except PermissionError:
            return True
        return False


PERMISSIONS_BIND = _permissions_bind()
NAMES = "names:\n  0: alpha\n  1: beta\n  2: gamma\n"


def jpeg_bytes(seed: int, size: int = 320, quality: int = 90) -> bytes:
    """A distinct, real JPEG (seeded shapes and clutter)."""
    image, _ = render_image(np.random.default_rng([99, seed]), size)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return encoded.tobytes()


def pil_bytes(seed: int, fmt: str, mode: str = "RGB", size: int | None = None, **save) -> bytes:
    """The seeded image re-saved by PIL in another format/mode/size (PNG with alpha, grayscale JPEG, GIF…)."""
    image = Image.open(io.BytesIO(jpeg_bytes(seed))).convert(mode)
    if size:
        image = image.resize((size, size))
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)


def clean_dataset(root: Path, n_train: int = 6, n_val: int = 3) -> Path:
    """A small dataset without any problem: distinct images, valid labels, every class in train."""
    for split, count, offset in (("train", n_train, 0), ("val", n_val, 1000)):
        for i in range(count):
            write(root / "images" / split / f"{i:03d}.jpg", jpeg_bytes(offset + i))
            write(root / "labels" / split / f"{i:03d}.txt", f"{i % 3} 0.3 0.3 0.2 0.2\n{(i + 1) % 3} 0.7 0.7 0.2 0.2\n")
    write(root / "data.yaml", "train: images/train\nval: images/val\n" + NAMES)
    return root / "data.yaml"


def planted_dataset(root: Path) -> tuple[Path, set[tuple[str, str, int | None]]]:
    """A dataset with exactly one planted defect of every kind a data.yaml-valid dataset can have."""
    expected: set[tuple[str, str, int | None]] = set()
    train_images, train_labels = root / "images" / "train", root / "labels" / "train"

    def image(name: str, data: bytes, rows: str | bytes | None = GOOD_ROWS, split: str = "train") -> str:
        write(root / "images" / split / name, data)
        if rows is not None:
            write(root / "labels" / split / (name.rsplit(".", 1)[0] + ".txt"), rows)
        return f"images/{split}/{name}"

    def label(name: str) -> str:
        return f"labels/train/{name.rsplit('.', 1)[0]}.txt"

    for i in range(8):  # clean images: 16 instances of class 0
        image(f"clean{i}.jpg", jpeg_bytes(i))
    image("rare.jpg", jpeg_bytes(8), "1 0.5 0.5 0.2 0.2\n")  # the only class-1 instance: 1 vs many → imbalance
    expected.add(("dataset.class_imbalance", "data.yaml", None))
    expected.add(("dataset.class_missing", "data.yaml", None))  # class 2 only in val

    # images
    expected.add(("image.missing", "images/extra/missing.jpg", None))
    write(root / "extra.txt", "./images/extra/missing.jpg\n")
    expected.add(("image.corrupt", image("corrupt.jpg", np.random.default_rng(0).bytes(3000)), None))
    expected.add(("image.truncated", image("truncated.jpg", jpeg_bytes(20)[:12000]), None))
    expected.add(("image.jpeg_trailing_data", image("trailing.jpg", jpeg_bytes(21) + b"\0" * 40), None))
    expected.add(("image.unsupported_format", image("gif_inside.png", pil_bytes(22, "GIF", "P")), None))
    expected.add(("image.tiny", image("tiny.png", pil_bytes(23, "PNG", size=8)), None))
    exif = Image.Exif()
    exif[274] = 6
    expected.add(("image.exif_rotation", image("rotated.jpg", pil_bytes(24, "JPEG", exif=exif.tobytes())), None))
    expected.add(("image.alpha", image("alpha.png", pil_bytes(25, "PNG", "RGBA")), None))
    expected.add(("image.grayscale", image("grey.jpg", pil_bytes(26, "JPEG", "L")), None))
    expected.add(("image.ignored", image("animation.gif", pil_bytes(27, "GIF", "P"), rows=None), None))

    # labels: each defect on line 2 of its own file, after a good row
    rows = {
        "label.columns": "0 0.5 0.5 0.2\n",
        "label.non_numeric": "0 0.5 abc 0.2 0.2\n",
        "label.class_not_integer": "1.5 0.5 0.5 0.2 0.2\n",
        "label.class_out_of_range": "7 0.5 0.5 0.2 0.2\n",
        "label.coords_out_of_range": "0 1.7 0.5 0.2 0.2\n",
        "label.degenerate_box": "0 0.5 0.5 0 0.2\n",
        "label.mixed_segments": "0 0.6 0.6 0.8 0.6 0.8 0.8\n",
        "label.box_outside_image": "0 0.95 0.5 0.3 0.2\n",
        "label.duplicate": "0 0.3 0.3 0.2 0.2\n",
        "label.near_duplicate": "0 0.305 0.3 0.2 0.2\n",
        "dataset.small_boxes": "0 0.5 0.5 0.01 0.01\n",
        "dataset.extreme_aspect": "0 0.5 0.55 0.9 0.02\n",
    }
    for index, (check, row) in enumerate(rows.items()):
        name = f"{check.split('.')[1]}.jpg"
        image(name, jpeg_bytes(40 + index), "0 0.3 0.3 0.2 0.2\n" + row)
        expected.add((check, label(name), 2))
    image("unreadable.jpg", jpeg_bytes(60), b"0 0.5 0.5 0.2 0.2\n\xff\xfe\n")
    expected.add(("label.unreadable", label("unreadable.jpg"), None))
    image("empty.jpg", jpeg_bytes(61), "")
    expected.add(("label.empty", label("empty.jpg"), None))
    expected.add(("label.missing", image("background.jpg", jpeg_bytes(62), rows=None), None))
    write(train_labels / "ghost.txt", "0 0.5 0.5 0.2 0.2\n")
    write(train_labels / "classes.txt", "alpha\nbeta\ngamma\n")  # an annotation tool's class list: no orphan
    expected.add(("label.orphan", "labels/train/ghost.txt", None))

    # duplicates and leakage
    shutil.copy(train_images / "clean0.jpg", train_images / "zz_copy.jpg")
    shutil.copy(train_labels / "clean0.txt", train_labels / "zz_copy.txt")
    expected.add(("dataset.duplicate_image", "images/train/zz_copy.jpg", None))
    reencoded = Image.open(train_images / "clean1.jpg")
    buffer = io.BytesIO()
    reencoded.save(buffer, "JPEG", quality=60)
    expected.add(("dataset.near_duplicate_image", image("zz_reencoded.jpg", buffer.getvalue()), None))
    expected.add(("split.leakage", image("leak.jpg", (train_images / "clean2.jpg").read_bytes(), split="val"), None))
    reencoded = Image.open(train_images / "clean3.jpg")
    buffer = io.BytesIO()
    reencoded.save(buffer, "JPEG", quality=70)
    expected.add(("split.near_leakage", image("near_leak.jpg", buffer.getvalue(), split="val"), None))
    image("val_only.jpg", jpeg_bytes(63), "2 0.5 0.5 0.2 0.2\n", split="val")

    # data.yaml: a download script (must never run) and an empty test split
    (root / "images" / "test").mkdir(parents=True)
    write(root / "data.yaml", "train:\n  - images/train\n  - extra.txt\nval: images/val\ntest: images/test\n"
          "download: |\n  open('PWNED', 'w').write('ran')\n" + NAMES)
    expected.add(("yaml.download", "data.yaml", 6))
    expected.add(("yaml.no_images", "data.yaml", 5))
    return root / "data.yaml", expected


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own bracli cache folder (the per-file results of `bra dataset check` land there)."""
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("BRA_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def make_clean():
    """``make_clean(root, n_train=6, n_val=3) -> data.yaml`` of a dataset without any problem."""
    return clean_dataset


@pytest.fixture(scope="session")
def planted(tmp_path_factory) -> tuple[Path, set[tuple[str, str, int | None]]]:
    return planted_dataset(tmp_path_factory.mktemp("planted"))


POLYGON = "0 0.2 0.2 0.5 0.2 0.5 0.5 0.2 0.5\n"  # a square as a polygon


def hostile_dataset(root: Path) -> tuple[Path, set[tuple[str, str, int | None]]]:
    """A clean dataset plus hostile files: a FIFO and a device as images, a folder link loop, a folder and a
    FIFO as labels, a huge (sparse) label, binary garbage, a 1-point polygon, odd names. Never hangs."""
    data_yaml = clean_dataset(root)
    train_images, train_labels = root / "images" / "train", root / "labels" / "train"
    expected: set[tuple[str, str, int | None]] = set()
    os.mkfifo(train_images / "fifo.jpg")
    os.symlink("/dev/zero", train_images / "zero.jpg")
    expected |= {("image.not_a_file", "images/train/fifo.jpg", None), ("image.not_a_file", "images/train/zero.jpg",
                                                                        None)}
    os.symlink(".", train_images / "loop")  # images/train/loop → images/train
    expected.add(("image.folder_link", "images/train/loop", None))
    for seed, (name, make) in enumerate((("dir_label", lambda p: p.mkdir()), ("fifo_label", lambda p: os.mkfifo(p)))):
        write(train_images / f"{name}.jpg", jpeg_bytes(200 + seed))
        make(train_labels / f"{name}.txt")
        expected.add(("label.not_a_file", f"labels/train/{name}.txt", None))
    write(train_images / "huge.jpg", jpeg_bytes(210))
    with open(train_labels / "huge.txt", "wb") as f:
        f.truncate(17 << 20)  # sparse: 17 MiB that occupy no disk
    expected.add(("label.too_large", "labels/train/huge.txt", None))
    write(train_images / "garbage.jpg", jpeg_bytes(211))
    write(train_labels / "garbage.txt", np.random.default_rng(5).bytes(4096))
    expected.add(("label.unreadable", "labels/train/garbage.txt", None))
    write(train_images / "one_point.jpg", jpeg_bytes(212))
    write(train_labels / "one_point.txt", GOOD_ROWS + "1 0.5 0.5\n")
    expected.add(("label.polygon_points", "labels/train/one_point.txt", 3))
    odd = os.fsdecode(b"new\nline \xff.jpg")  # a newline and a byte that is not UTF-8; no label, so it is named
    write(train_images / odd, jpeg_bytes(213))
    expected.add(("label.missing", f"images/train/{odd}", None))
    return data_yaml, expected


def segment_dataset(root: Path) -> tuple[Path, set[tuple[str, str, int | None]]]:
    """Polygon labels with one planted defect of each segment kind (as ``--task segment`` reports them)."""
    expected: set[tuple[str, str, int | None]] = set()
    rows = {
        "clean": POLYGON.replace("0 ", "1 ", 1),
        "collinear": "0 0.1 0.1 0.3 0.3 0.5 0.5\n",  # zero area
        "two_points": "0 0.1 0.1 0.4 0.4 0.1 0.1 0.4 0.4\n",  # four points, two distinct
        "repeated": "0 0.2 0.2 0.5 0.2 0.5 0.2 0.5 0.5 0.2 0.5\n",  # point 3 repeats point 2
        "closed": "0 0.2 0.2 0.5 0.2 0.5 0.5 0.2 0.5 0.2 0.2\n",  # the ring is closed explicitly
        "boxes_only": GOOD_ROWS,
        "mixed": POLYGON + "0 0.7 0.7 0.2 0.2\n",
    }
    for i, (name, text) in enumerate(rows.items()):
        write(root / "images" / "train" / f"{name}.jpg", jpeg_bytes(300 + i))
        write(root / "labels" / "train" / f"{name}.txt", text)
    write(root / "images" / "val" / "v.jpg", jpeg_bytes(320))
    write(root / "labels" / "val" / "v.txt", POLYGON)
    write(root / "data.yaml", "train: images/train\nval: images/val\nnames: [a, b]\n")
    expected |= {("label.polygon_degenerate", "labels/train/collinear.txt", 1),
                 ("label.polygon_degenerate", "labels/train/two_points.txt", 1),
                 ("label.polygon_repeated_points", "labels/train/repeated.txt", 1),
                 ("label.polygon_repeated_points", "labels/train/closed.txt", 1),
                 ("label.no_polygons", "labels/train/boxes_only.txt", 1),
                 ("label.mixed_segments", "labels/train/mixed.txt", 2)}
    return root / "data.yaml", expected


@pytest.fixture(scope="session")
def hostile(tmp_path_factory) -> tuple[Path, set[tuple[str, str, int | None]]]:
    return hostile_dataset(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="session")
def segment(tmp_path_factory) -> tuple[Path, set[tuple[str, str, int | None]]]:
    return segment_dataset(tmp_path_factory.mktemp("segment"))
