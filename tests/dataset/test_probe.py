"""Per-file checks on single files: label parsing details, byte-level truncation, perceptual hash stability."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from bracli.dataset.labels import inspect_label
from bracli.dataset.probe import inspect_image

from .conftest import jpeg_bytes


def _label(tmp_path, content: str | bytes, nc: int | None = 3, size: tuple[int, int] = (320, 320)):
    path = tmp_path / "x.txt"
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    return inspect_label(str(path), nc, *size)


def _checks(facts) -> list[tuple[str, int | None]]:
    return [(check, line) for check, line, _, _ in facts.problems]


def test_line_numbers_count_blank_lines_and_a_bom_is_accepted(tmp_path):
    facts = _label(tmp_path, "\ufeff0 0.5 0.5 0.2 0.2\n\n   \n7 0.5 0.5 0.2 0.2\n".encode())
    assert _checks(facts) == [("label.class_out_of_range", 4)]
    assert facts.rows == 2 and len(facts.boxes) == 1 and facts.lines.tolist() == [1]


def test_polygons_become_boxes(tmp_path):
    facts = _label(tmp_path, "1 0.1 0.2 0.5 0.2 0.5 0.6 0.1 0.6\n")
    assert facts.problems == []
    np.testing.assert_allclose(facts.boxes[0], [1, 0.3, 0.4, 0.4, 0.4], atol=1e-6)


def test_integer_valued_float_class_and_edge_boxes_are_fine(tmp_path):
    assert _label(tmp_path, "2.0 0.1 0.1 0.2 0.2\n0 0.5 0.5 1.0 1.0\n").problems == []


def test_spill_is_measured_in_pixels(tmp_path):
    one_pixel = 1 / 320
    assert _label(tmp_path, f"0 {0.1 - one_pixel / 2:.6f} 0.5 0.2 0.2\n").problems == []  # half a pixel: fine
    facts = _label(tmp_path, f"0 {0.1 - 2 * one_pixel:.6f} 0.5 0.2 0.2\n")
    assert _checks(facts) == [("label.box_outside_image", 1)]


def test_nan_and_inf_are_not_numbers(tmp_path):
    facts = _label(tmp_path, "0 nan 0.5 0.2 0.2\n0 0.5 inf 0.2 0.2\n")
    assert _checks(facts) == [("label.non_numeric", 1), ("label.non_numeric", 2)]


def test_class_range_is_unchecked_without_names(tmp_path):
    assert _label(tmp_path, "12 0.5 0.5 0.2 0.2\n", nc=None).problems == []
    assert _checks(_label(tmp_path, "-1 0.5 0.5 0.2 0.2\n", nc=None)) == [("label.class_out_of_range", 1)]


def test_near_duplicates_among_many_boxes(tmp_path):
    rows = [f"0 {0.02 + 0.03 * i:.4f} 0.5 0.02 0.02" for i in range(30)]  # 30 disjoint boxes
    rows.append("0 0.3205 0.5 0.02 0.02")  # nearly on top of box 11 (x = 0.32): IoU 0.95
    rows.append("1 0.3200 0.5 0.02 0.02")  # exactly on box 11, but another class
    facts = _label(tmp_path, "\n".join(rows) + "\n")
    assert _checks(facts) == [("label.near_duplicate", 31)]


def test_missing_label_is_a_background(tmp_path):
    facts = inspect_label(str(tmp_path / "none.txt"), 3)
    assert not facts.exists and _checks(facts) == [("label.missing", None)]


def test_truncation_is_found_without_decoding(tmp_path):
    data = jpeg_bytes(1)
    path = tmp_path / "x.jpg"
    for cut, expected in ((len(data) - 2, "image.truncated"), (len(data) // 2, "image.truncated")):
        path.write_bytes(data[:cut])
        facts = inspect_image(str(path), perceptual=False)
        assert [p[0] for p in facts.problems] == [expected] and not facts.usable
    path.write_bytes(data + b"extra")
    facts = inspect_image(str(path), perceptual=False)
    assert [p[0] for p in facts.problems] == ["image.jpeg_trailing_data"] and facts.usable


def test_cut_png_is_truncated(tmp_path):
    buffer = io.BytesIO()
    Image.open(io.BytesIO(jpeg_bytes(2))).save(buffer, "PNG")
    path = tmp_path / "x.png"
    path.write_bytes(buffer.getvalue()[:-30])
    assert [p[0] for p in inspect_image(str(path)).problems] == ["image.truncated"]


def test_header_facts_and_exif_size(tmp_path):
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[274] = 8
    Image.new("RGB", (64, 32), "red").save(buffer, "JPEG", exif=exif.tobytes())
    path = tmp_path / "x.jpg"
    path.write_bytes(buffer.getvalue())
    facts = inspect_image(str(path))
    assert (facts.format, facts.width, facts.height, facts.file_size) == ("jpeg", 32, 64, len(buffer.getvalue()))
    assert [p[0] for p in facts.problems] == ["image.exif_rotation"]


def _distance(a: tuple[int, int], b: tuple[int, int]) -> int:
    return bin(a[0] ^ b[0]).count("1") + bin(a[1] ^ b[1]).count("1")


def test_perceptual_hash_is_stable_across_encodings_and_separates_images(tmp_path):
    original = Image.open(io.BytesIO(jpeg_bytes(3)))
    variants = {"original.jpg": jpeg_bytes(3)}
    for name, image, fmt in (("q50.jpg", original, "JPEG"), ("smaller.jpg", original.resize((240, 240)), "JPEG"),
                             ("lossless.png", original, "PNG")):
        buffer = io.BytesIO()
        image.save(buffer, fmt, quality=50)
        variants[name] = buffer.getvalue()
    variants["other.jpg"] = jpeg_bytes(4)
    hashes = {}
    for name, data in variants.items():
        (tmp_path / name).write_bytes(data)
        hashes[name] = inspect_image(str(tmp_path / name)).dhash
    for name in ("q50.jpg", "smaller.jpg", "lossless.png"):
        assert _distance(hashes["original.jpg"], hashes[name]) <= 8, name
    assert _distance(hashes["original.jpg"], hashes["other.jpg"]) > 24


def test_without_hash_or_digest_only_the_header_and_ends_are_read(planted):
    """The same facts as from the whole file (truncation and trailing data included), but no digest."""
    root = planted[0].parent
    images = sorted(p for p in (root / "images" / "train").iterdir() if p.suffix in (".jpg", ".png"))
    assert len(images) > 30
    for path in images:
        whole, ends = inspect_image(str(path), perceptual=False), inspect_image(str(path), False, need_digest=False)
        assert whole.digest and not ends.digest
        ends.digest = whole.digest
        assert ends == whole, path.name
