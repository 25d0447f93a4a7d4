"""A split where ultralytics can use no image at all: too few class names for the labels, every label row
malformed, every image not an image. `bra train` and `bra val` fail in one line naming the split and pointing to
`bra dataset check`, exit 1, with no run folder left and the dataset untouched."""

from __future__ import annotations

from pathlib import Path

import pytest


def _too_few_names(data: Path) -> None:
    text = data.read_text(encoding="utf-8")
    data.write_text(text[:text.index("nc:")] + "names: [circle]\n", encoding="utf-8")


def _malformed_val_rows(data: Path) -> None:
    for label in (data.parent / "labels" / "val").glob("*.txt"):
        label.write_text("not a label row\n", encoding="utf-8")


def _val_images_not_images(data: Path) -> None:
    for image in (data.parent / "images" / "val").glob("*.jpg"):
        image.write_text("this is text, not a JPEG\n", encoding="utf-8")


UNUSABLE = {"names lacks the labels' classes": (_too_few_names, "exceeds dataset class count"),
            "every val row malformed": (_malformed_val_rows, "could not convert"),
            "every val image not an image": (_val_images_not_images, "not an image PIL can read")}


@pytest.fixture(params=list(UNUSABLE))
def unusable(request, world, kit, tmp_path) -> tuple[Path, str]:
    """A copy of the tiny dataset spoiled one way; returns its data.yaml and what the first problem says."""
    spoil, says = UNUSABLE[request.param]
    data = world.copy_dataset(tmp_path / "data")
    spoil(data)
    return data, says


def test_train_on_an_unusable_split_is_one_line(unusable, expect, tmp_path):
    data, first_problem = unusable
    outcome = expect(inputs=[data.parent]).run(
        "train", data, "--imgsz", "64", "--epochs", "1", "--batch", "4", "--device", "cpu", "--project",
        tmp_path / "runs", code=1, says=["no usable image in the", "bra dataset check DATA", first_problem])
    assert "split (" in outcome.err and str(data.parent / "labels") in outcome.err
    assert not (tmp_path / "runs").exists()


def test_val_on_an_unusable_split_is_one_line(unusable, world, expect, tmp_path):
    data, first_problem = unusable
    expect(inputs=[data.parent, world.best]).run(
        "val", world.best, "--data", data, "--imgsz", "64", "--device", "cpu", "--project", tmp_path / "val",
        code=1, says=["no usable image in the val split", str(data.parent / "labels" / "val"),
                      "bra dataset check DATA", first_problem])
    assert not (tmp_path / "val").exists()


def test_control_the_unspoiled_copy_validates(world, kit, expect, tmp_path):
    data = world.copy_dataset(tmp_path / "data")
    expect(inputs=[data.parent]).run("val", world.best, "--data", data, "--imgsz", "64", "--device", "cpu",
                                     "--project", tmp_path / "val", code=0)
