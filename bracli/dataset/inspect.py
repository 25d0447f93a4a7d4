"""Per-file checks: pure functions from one image file and its label file to facts and problems.

These run in worker processes, so they import only PIL and numpy, read each file once, and return
small picklable results. Images are read header-first: format, size, mode and EXIF come from the header
without decoding pixels. Truncation is found from the bytes themselves (a JPEG whose last scan has no
end-of-image marker after it, a PNG without its IEND chunk), so it costs no decode either. Pixels are
decoded only for the perceptual hash, and then at reduced size (JPEG DCT scaling via ``draft``); that
decode also catches data that breaks the decoder.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

EXIF_ORIENTATION = 274
MIN_SIDE = 10  # ultralytics drops images with a side under 10 px
COORD_EPS = 1e-6  # rounding slack for coordinates written with 6 decimals
SPILL_PX = 1.0  # a box may poke this far past the image edge before it is reported
SPILL_NORMALISED = 0.002  # the same when the image size is unknown
NEAR_DUP_IOU = 0.9
THUMB_SIDE = 32
HASH_SIDE = 9  # 9×9 thumbnail → 8×8 horizontal + 8×8 vertical gradient bits = 128-bit hash
GREY_MODES = frozenset({"1", "L", "I", "I;16", "I;16B", "I;16L", "F"})
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
ORIENTATION_NAMES = {2: "mirrored", 3: "rotated 180°", 4: "flipped", 5: "mirrored and rotated 90°",
                     6: "rotated 90°", 7: "mirrored and rotated 270°", 8: "rotated 270°"}
SUPPORTED_FORMATS = frozenset({"avif", "bmp", "dng", "heic", "heif", "jpeg2000", "jpeg", "mpo", "png", "tiff",
                               "webp"})

Problem = tuple[str, int | None, str, float]  # (check id, line, message, rank: lower is worse)


@dataclass
class ImageFacts:
    """What one image file is, as training would see it (size after EXIF rotation)."""

    path: str
    found: bool = True
    usable: bool = False
    format: str = ""
    width: int = 0
    height: int = 0
    mode: str = ""
    file_size: int = 0
    digest: bytes = b""
    dhash: tuple[int, int] | None = None
    problems: list[Problem] = field(default_factory=list)


@dataclass
class LabelFacts:
    """The usable boxes of one label file (``cls cx cy w h``, normalised) with their line numbers."""

    path: str
    exists: bool = False
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), np.float32))
    lines: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    rows: int = 0
    problems: list[Problem] = field(default_factory=list)


def inspect_chunk(tasks: list[tuple[str, str]], nc: int | None, perceptual: bool
                  ) -> list[tuple[ImageFacts, LabelFacts]]:
    """Inspect (image, label) pairs; the unit of work sent to a worker process."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL warns on odd EXIF and huge images; the checks report what matters
        results = []
        for image_path, label_file in tasks:
            image = inspect_image(image_path, perceptual)
            # the label of a missing image is moot: the missing image is the error to fix
            label = inspect_label(label_file, nc, image.width, image.height) if image.found else LabelFacts(label_file)
            results.append((image, label))
        return results


def inspect_image(path: str, perceptual: bool = True) -> ImageFacts:
    """Header, integrity and (optionally) a perceptual hash of one image file."""
    from PIL import Image, UnidentifiedImageError

    facts = ImageFacts(path)
    problems = facts.problems
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        problems.append(("image.missing", None, "listed in the split but the file does not exist", 0.0))
        facts.found = False
        return facts
    except OSError as e:
        problems.append(("image.corrupt", None, f"cannot be read: {e.strerror}", 0.0))
        return facts
    facts.file_size = len(data)
    facts.digest = hashlib.sha1(data, usedforsecurity=False).digest()  # identity, not security: the fastest here
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, ImportError):  # ImportError: a registered decoder plugin is not installed
        problems.append(("image.corrupt", None, "not an image file any installed decoder recognises; "
                         "training drops it", 0.0))
        return facts
    except Exception as e:  # PIL raises many types on hostile headers
        problems.append(("image.corrupt", None, f"cannot be opened ({type(e).__name__}: {e}); training drops it",
                         0.0))
        return facts
    facts.format = (image.format or "").lower()
    facts.mode = image.mode
    width, height = image.size
    orientation = _orientation(image)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    facts.width, facts.height = width, height
    facts.usable = True
    if facts.format not in SUPPORTED_FORMATS:
        problems.append(("image.unsupported_format", None, f"{image.format} data; training drops it (convert it to "
                         "JPEG or PNG)", 0.0))
        facts.usable = False
    if min(width, height) < MIN_SIDE:
        problems.append(("image.tiny", None, f"{width}×{height} px; training drops images under {MIN_SIDE} px a side",
                         float(min(width, height))))
        facts.usable = False
    if orientation in ORIENTATION_NAMES:
        problems.append(("image.exif_rotation", None,
                         f"EXIF orientation {orientation} ({ORIENTATION_NAMES[orientation]}): training sees the image "
                         "turned, so boxes drawn on the stored pixels no longer match; bake the rotation in", 0.0))
    if image.mode in GREY_MODES:
        problems.append(("image.grayscale", None, f"{image.mode} (single channel); it is trained as 3 equal channels",
                         0.0))
    elif image.mode in ALPHA_MODES or "transparency" in image.info:
        problems.append(("image.alpha", None, f"{image.mode} with transparency; training drops the alpha channel, so "
                         "transparent areas show whatever colour they hide", 0.0))
    ending = _ending_problem(facts.format, data)
    if ending is not None:
        problems.append(ending)
        if ending[0] == "image.truncated":
            facts.usable = False
    if perceptual and facts.usable:
        try:
            facts.dhash = _dhash(image, facts.format)
        except Exception as e:
            truncated = "truncated" in str(e)
            problems.append(("image.truncated" if truncated else "image.corrupt", None,
                             f"pixel data cannot be decoded ({e}); training drops or damages it", 0.0))
            facts.usable = False
    return facts


def _orientation(image) -> int:
    try:
        return int(image.getexif().get(EXIF_ORIENTATION) or 1)
    except Exception:  # broken EXIF: training ignores it as well
        return 1


def _ending_problem(fmt: str, data: bytes) -> Problem | None:
    """Truncation found from the bytes alone: the decoder would stop early (or ultralytics would rewrite)."""
    if fmt in ("jpeg", "mpo"):
        if data.endswith(b"\xff\xd9"):
            return None
        end, last_scan = data.rfind(b"\xff\xd9"), data.rfind(b"\xff\xda")
        if end > last_scan >= 0:
            return ("image.jpeg_trailing_data", None,
                    f"{len(data) - end - 2} bytes after the JPEG end marker; ultralytics re-encodes such files "
                    "in place when it caches labels", 0.0)
        return ("image.truncated", None, "JPEG data stops before its end marker: the bottom of the image is "
                "missing (grey), and ultralytics rewrites the file in place", 0.0)
    if fmt == "png" and b"IEND" not in data[-16:]:
        return ("image.truncated", None, "PNG has no IEND chunk: the file was cut short", 0.0)
    return None


def _dhash(image, fmt: str) -> tuple[int, int]:
    """A 128-bit gradient hash (8×8 horizontal + 8×8 vertical) of a small greyscale thumbnail.

    JPEGs are decoded at 1/2-1/8 scale (DCT scaling). Going through a 32×32 box-filtered thumbnail
    first keeps the hash stable across resizes, re-encodes and formats.
    """
    from PIL import Image

    if fmt in ("jpeg", "mpo"):
        image.draft("L", (2 * THUMB_SIDE, 2 * THUMB_SIDE))
    grey = image.convert("L").resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX, reducing_gap=2.0)
    thumb = np.asarray(grey.resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX), np.int16)
    horizontal = thumb[:-1, 1:] > thumb[:-1, :-1]
    vertical = thumb[1:, :-1] > thumb[:-1, :-1]
    return (int.from_bytes(np.packbits(horizontal).tobytes(), "big"),
            int.from_bytes(np.packbits(vertical).tobytes(), "big"))


def inspect_label(path: str, nc: int | None, width: int = 0, height: int = 0) -> LabelFacts:
    """Parse a YOLO label file the way training does, reporting every row training would reject or alter."""
    facts = LabelFacts(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        facts.problems.append(("label.missing", None, "no label file: trained as a background image (no objects)",
                               0.0))
        return facts
    except OSError as e:
        facts.problems.append(("label.unreadable", None, f"cannot be read: {e.strerror}", 0.0))
        return facts
    facts.exists = True
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        facts.problems.append(("label.unreadable", None, f"not UTF-8 text (byte {e.start}); training drops the image",
                               0.0))
        return facts
    rows: list[tuple[float, float, float, float, float]] = []
    lines: list[int] = []
    seen: dict[tuple[float, ...], int] = {}
    kinds: dict[str, int] = {}  # "box"/"polygon" -> first line
    problems = facts.problems
    for number, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        facts.rows += 1
        parsed = _parse_row(tokens, number, nc, width, height, problems)
        if parsed is None:
            continue
        kind, values, box = parsed
        kinds.setdefault(kind, number)
        if values in seen:
            problems.append(("label.duplicate", number, f"repeats line {seen[values]}; training drops the copy", 0.0))
            continue
        seen[values] = number
        rows.append(box)
        lines.append(number)
    if facts.rows == 0:
        problems.append(("label.empty", None, "empty label file: trained as a background image (no objects)", 0.0))
    if len(kinds) == 2:
        second = max(kinds.values())
        problems.append(("label.mixed_segments", second, "mixes box rows and polygon rows; training drops the whole "
                         "image. Use one kind per file", 0.0))
    if rows:
        problems.extend(_near_duplicates(rows, lines))
        facts.boxes = np.asarray(rows, np.float32)
        facts.lines = np.asarray(lines, np.int32)
    return facts


def _parse_row(tokens: list[str], number: int, nc: int | None, width: int, height: int,
               problems: list[Problem]) -> tuple[str, tuple[float, ...], tuple[float, ...]] | None:
    """One label row → (kind, raw values, cls-cx-cy-w-h box), or None after recording why it is unusable."""
    count = len(tokens)
    if count == 5:
        kind = "box"
    elif count >= 7 and count % 2 == 1:
        kind = "polygon"
    else:
        problems.append(("label.columns", number, f"{count} values; a box row is 'class cx cy w h' (5), a polygon "
                         "row 'class x1 y1 x2 y2 …' (odd, 7 or more)", 0.0))
        return None
    try:
        values = tuple(float(t) for t in tokens)
    except ValueError:
        bad = next(t for t in tokens if not _is_number(t))
        problems.append(("label.non_numeric", number, f"'{bad[:20]}' is not a number", 0.0))
        return None
    if not all(math.isfinite(v) for v in values):
        problems.append(("label.non_numeric", number, "contains nan or inf", 0.0))
        return None
    cls = values[0]
    if cls != int(cls):
        problems.append(("label.class_not_integer", number, f"class id {tokens[0]} is not an integer", 0.0))
        return None
    if cls < 0 or (nc is not None and cls >= nc):
        allowed = f"0-{nc - 1}" if nc else "0 or more"
        problems.append(("label.class_out_of_range", number, f"class id {int(cls)} is outside {allowed}; training "
                         "stops or drops the image", 0.0))
        return None
    coords = values[1:]
    outside = [v for v in coords if v < -COORD_EPS or v > 1 + COORD_EPS]
    if outside:
        worst = max(outside, key=lambda v: abs(v - 0.5))
        problems.append(("label.coords_out_of_range", number, f"value {worst:g} is outside [0, 1]; coordinates must "
                         "be normalised by the image width and height", -abs(worst - 0.5)))
        return None
    if kind == "box":
        cx, cy, w, h = coords
    else:
        xs, ys = coords[0::2], coords[1::2]
        cx, cy, w, h = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)
    if w <= 0 or h <= 0:
        problems.append(("label.degenerate_box", number, f"width {w:g} × height {h:g}: a box needs a positive size",
                         0.0))
        return None
    if kind == "box" and (spill := _spill(cx, cy, w, h, width, height)):
        over, amount = spill
        problems.append(("label.box_outside_image", number, f"box reaches {amount} past the image edge; training "
                         "clips it, which shifts its centre", -over))
    return kind, values, (cls, cx, cy, w, h)


def _spill(cx: float, cy: float, w: float, h: float, width: int, height: int) -> tuple[float, str] | None:
    """How far a box pokes past the image edge (pixels when the size is known), or None within the slack."""
    over_x = max(w / 2 - cx, cx + w / 2 - 1, 0.0)
    over_y = max(h / 2 - cy, cy + h / 2 - 1, 0.0)
    if width and height:
        over = max(over_x * width, over_y * height)
        return (over, f"{over:.1f} px") if over > SPILL_PX else None
    over = max(over_x, over_y)
    return (over, f"{over:.3f} of the image") if over > SPILL_NORMALISED else None


def _near_duplicates(boxes: list[tuple[float, ...]], lines: list[int]) -> list[Problem]:
    """Same-class boxes overlapping with IoU above the threshold (likely double annotations).

    A sweep over boxes sorted by left edge compares only boxes that overlap horizontally, so crowded
    files stay fast; plain Python beats numpy on the few boxes a typical file has.
    """
    spans = sorted((cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2, cls, line)
                   for (cls, cx, cy, w, h), line in zip(boxes, lines, strict=True))
    problems: list[Problem] = []
    reported: set[int] = set()
    for i, (x0, x1, y0, y1, cls, line) in enumerate(spans):
        for ox0, ox1, oy0, oy1, other_cls, other_line in spans[i + 1:]:
            if ox0 >= x1:
                break
            if other_cls != cls or other_line in reported:
                continue
            inter = (min(x1, ox1) - ox0) * max(0.0, min(y1, oy1) - max(y0, oy0))
            iou = inter / ((x1 - x0) * (y1 - y0) + (ox1 - ox0) * (oy1 - oy0) - inter)
            if iou > NEAR_DUP_IOU:
                first, second = sorted((line, other_line))
                reported.add(second)
                problems.append(("label.near_duplicate", second, f"same class as line {first} and overlaps it with "
                                 f"IoU {iou:.2f}: probably annotated twice", -iou))
    return problems


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True
