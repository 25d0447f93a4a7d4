"""Images that are not what they claim, to `bra predict` (checked before the model runs) and to
`bra dataset check` (a read-only report): one line each, the input untouched, no empty run folder."""

from __future__ import annotations

import functools
import io
import os

import pytest
from PIL import Image


@functools.cache
def _bomb() -> bytes:
    """48 KB of PNG that decodes to 20000×20000 pixels (1.2 GB as BGR)."""
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def _decompression_bomb(path):
    path.write_bytes(_bomb())


BAD_IMAGES = {
    "zero bytes": lambda path, good: path.write_bytes(b""),
    "random bytes": lambda path, good: path.write_bytes(os.urandom(3000)),
    "truncated JPEG": lambda path, good: path.write_bytes(good[:500]),
    "JPEG header only": lambda path, good: path.write_bytes(good[:4]),
    "text named .png": lambda path, good: path.with_suffix(".png").write_text("not an image\n"),
    "decompression bomb": lambda path, good: _decompression_bomb(path.with_suffix(".png")),
    "8x8 pixels": lambda path, good: Image.new("RGB", (8, 8)).save(path),
}


@pytest.mark.parametrize("name", BAD_IMAGES)
def test_predict_names_an_image_it_cannot_read(name, world, expect, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    BAD_IMAGES[name](folder / "bad.jpg", world.image.read_bytes())
    image = next(folder.iterdir())
    case = expect(inputs=[folder])
    case.run("predict", image, "--model", world.best, "--imgsz", "64", "--project", tmp_path / "runs", code=1,
             says=["cannot read image", image.name])
    assert not (tmp_path / "runs").exists()


def test_a_folder_of_only_bad_images_leaves_no_run_folder(world, expect, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for index, make in enumerate(BAD_IMAGES.values()):
        make(folder / f"bad{index}.jpg", world.image.read_bytes())
    case = expect(inputs=[folder])
    case.run("predict", folder, "--model", world.best, "--imgsz", "64", "--project", tmp_path / "runs", code=1,
             says=["cannot read image", f"and {len(BAD_IMAGES) - 1} more"])
    assert not (tmp_path / "runs").exists()


def test_good_images_are_predicted_and_bad_ones_make_it_fail(world, expect, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.jpg").write_bytes(world.image.read_bytes())
    (folder / "empty.jpg").write_bytes(b"")
    case = expect(inputs=[folder])
    outcome = case.run("predict", folder, "--model", world.best, "--imgsz", "64", "--project", tmp_path / "runs",
                       code=1, says=["1 image(s) could not be read"])
    assert "empty.jpg" in outcome.err
    assert (tmp_path / "runs" / "predict" / "good.jpg").is_file()


def test_a_list_of_urls_downloads_nothing(world, expect, tmp_path):
    listing = tmp_path / "sources.txt"
    listing.write_text("https://example.invalid/a.jpg\nhttp://127.0.0.1:9/b.jpg\n")
    expect(inputs=[listing]).run("predict", listing, "--model", world.best, "--imgsz", "64", "--project",
                                 tmp_path / "runs", code=1, says=["cannot read source"])


@pytest.mark.parametrize("text", ["", "\n  \n"])
def test_a_list_file_that_lists_nothing(text, world, expect, tmp_path):
    listing = tmp_path / "sources.txt"
    listing.write_text(text)
    expect(inputs=[listing]).run("predict", listing, "--model", world.best, "--imgsz", "64", "--project",
                                 tmp_path / "runs", code=1, says=["lists no image or video paths"])


def test_a_url_is_not_downloaded(world, expect):
    expect().run("predict", "https://example.invalid/evil.jpg", "--model", world.best, code=2,
                 says=["does not download"])


def test_a_glob_matching_nothing(world, expect, tmp_path):
    expect().run("predict", tmp_path / "*.nothing", "--model", world.best, code=1, says=["no images or videos"])


def test_a_device_file_as_a_source(world, expect):
    expect().run("predict", "/dev/zero", "--model", world.best, code=2, says=["not a regular file"])


def _hostile_dataset(world, root):
    """The world's dataset with bad images and labels of every kind added to its train split."""
    data = world.copy_dataset(root)
    images, labels = data.parent / "images" / "train", data.parent / "labels" / "train"
    for index, make in enumerate(BAD_IMAGES.values()):
        make(images / f"bad{index}.jpg", world.image.read_bytes())
    (labels / "bad0.txt").write_text("0 nan nan 0.1 0.1\n")
    (labels / "bad1.txt").write_bytes(b"\xff\xfe\x00\x00")
    (labels / "bad2.txt").write_text("7 " * 10_000 + "\n")
    (images / "loop.jpg").symlink_to(images / "loop.jpg")
    (labels / "ghost.txt").symlink_to("/etc/hostname")
    return data


def test_dataset_check_reports_a_hostile_dataset_and_changes_nothing(world, bra, kit, tmp_path):
    data = _hostile_dataset(world, tmp_path / "ds")
    before = kit.tree_hashes(data.parent, skip=lambda p: False)
    outcome = bra("dataset", "check", data, "--workers", "1", "--json", tmp_path / "report.json")
    assert outcome.code == 1, outcome.err  # problems found: the report is the output, not an error line
    assert "Traceback" not in outcome.out + outcome.err and "internal error" not in outcome.out + outcome.err
    assert kit.tree_hashes(data.parent, skip=lambda p: False) == before
    found = (tmp_path / "report.json").read_text()
    for check in ("image.corrupt", "image.tiny", "label.non_numeric", "label.unreadable"):
        assert check in found


def test_dataset_check_of_a_yaml_with_a_python_tag(world, bra, marker, tmp_path):
    data = tmp_path / "tagged.yaml"
    data.write_text(f"train: {world.dataset}/images/train\nval: {world.dataset}/images/val\n"
                    f"names: !!python/object/apply:os.system [\"touch {marker}\"]\n")
    outcome = bra("dataset", "check", data)
    assert outcome.code == 1 and not marker.exists()
    assert "Traceback" not in outcome.out + outcome.err and "internal error" not in outcome.out + outcome.err
