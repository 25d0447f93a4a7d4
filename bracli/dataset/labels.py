"""Label files: parse one the way training does and report every row training would reject or alter.

A row is a box (``class cx cy w h``) or a polygon (``class x1 y1 x2 y2 …``, three points or more);
both are normalised to the image size. In ``segment`` mode polygons are also checked as masks (at least
three distinct points, a non-zero area, no repeated points) and a file with boxes only is an error,
because ultralytics' segment loader refuses a dataset whose objects do not all have polygons.

Runs in worker processes: plain Python (faster than numpy for the few rows a file has), small results.
"""

from __future__ import annotations

import base64
import math
import os
from dataclasses import dataclass, field

import numpy as np

from bracli.dataset.fsio import NotRegularFile, read_regular

COORD_EPS = 1e-6  # rounding slack for coordinates written with 6 decimals
SPILL_PX = 1.0  # a box may poke this far past the image edge before it is reported
SPILL_NORMALISED = 0.002  # the same when the image size is unknown
NEAR_DUP_IOU = 0.9
NEAR_DUP_BUDGET = 2_000_000  # box pairs compared per file at most
MIN_POLYGON_AREA_PX = 1.0  # a mask smaller than one pixel is empty
MIN_POLYGON_AREA = 1e-6  # the same, normalised, when the image size is unknown
MAX_LABEL_BYTES = 16 << 20  # ~400,000 rows; a label file this big is not one
MAX_PROBLEMS = 100  # per file: a file of garbage would otherwise give one issue per line
TASKS = ("detect", "segment")
MISSING = "missing"  # the cache key of a label file that does not exist

Problem = tuple[str, int | None, str, float]  # (check id, line, message, rank: lower is worse)


@dataclass
class LabelFacts:
    """The usable rows of one label file as boxes (``cls cx cy w h``, normalised) with their line numbers."""

    path: str
    exists: bool = False
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), np.float32))
    lines: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    rows: int = 0
    polygons: int = 0  # rows written as polygons
    plain_boxes: int = 0  # rows written as boxes
    problems: list[Problem] = field(default_factory=list)
    key: list[int] | str | None = field(default=None, compare=False)  # ``stat_key`` of what was read

    def to_record(self) -> list:
        """Plain data (for the cache and for sending between processes); the arrays as base64 of their bytes."""
        boxes = base64.b64encode(self.boxes.astype("<f4").tobytes()).decode("ascii")
        lines = base64.b64encode(self.lines.astype("<i4").tobytes()).decode("ascii")
        return [self.exists, self.rows, self.polygons, self.plain_boxes, boxes, lines,
                [list(p) for p in self.problems]]

    @classmethod
    def from_record(cls, path: str, record: list, known_checks) -> LabelFacts:
        """The inverse of ``to_record``; raises ``ValueError`` (or ``TypeError``) on anything malformed."""
        exists, rows, polygons, plain_boxes, boxes_text, lines_text, problems = record
        boxes = np.frombuffer(base64.b64decode(boxes_text, validate=True), "<f4").reshape(-1, 5)
        lines = np.frombuffer(base64.b64decode(lines_text, validate=True), "<i4")
        if type(exists) is not bool or len(lines) != len(boxes) or not np.isfinite(boxes).all():
            raise ValueError("malformed label record")
        return cls(path, exists, boxes, lines, _count(rows), _count(polygons), _count(plain_boxes),
                   problems_from_record(problems, known_checks) if problems else [])


def stat_key(info: os.stat_result) -> list[int]:
    """What says a file is unchanged: size, modification and change times (ns) and inode.

    The change time moves on every write even when a tool restores the modification time afterwards,
    so a same-size edit is caught; edits within the timestamp granularity are the cache's concern.
    """
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino]


def _count(value) -> int:
    if type(value) is not int or value < 0:
        raise ValueError("malformed count")
    return value


def problems_from_record(problems: list, known_checks) -> list[Problem]:
    """Problems as stored, validated: known check ids, int-or-null lines, text messages, number ranks."""
    result = []
    for check, line, message, rank in problems:
        if check not in known_checks or not isinstance(message, str) or isinstance(rank, bool) \
                or not isinstance(rank, (int, float)) or not (line is None or (isinstance(line, int)
                                                                               and not isinstance(line, bool))):
            raise ValueError("malformed problem")
        result.append((check, line, message, float(rank)))
    return result


def inspect_label(path: str, nc: int | None, width: int = 0, height: int = 0, task: str = "detect"
                  ) -> LabelFacts:
    """Parse a YOLO label file the way training does, reporting every row training would reject or alter."""
    facts = LabelFacts(path)
    problems = facts.problems
    try:
        raw, info = read_regular(path, MAX_LABEL_BYTES)
    except FileNotFoundError:
        problems.append(("label.missing", None, "no label file: trained as a background image (no objects)", 0.0))
        facts.key = MISSING
        return facts
    except NotRegularFile as e:
        problems.append(("label.not_a_file", None, f"is {e.kind}, not a label file: training treats the image as "
                         "a background (no objects)", 0.0))
        return facts
    except OSError as e:
        problems.append(("label.unreadable", None, f"cannot be read: {e.strerror or e}", 0.0))
        return facts
    facts.exists = True
    facts.key = stat_key(info)
    if raw is None:
        problems.append(("label.too_large", None, f"{info.st_size / (1 << 20):.0f} MiB: not parsed (a label file "
                         f"over {MAX_LABEL_BYTES >> 20} MiB is not YOLO labels; training would read all of it)",
                         -float(info.st_size)))
        return facts
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        problems.append(("label.unreadable", None, f"not UTF-8 text (byte {e.start}); training drops the image",
                         0.0))
        return facts
    _parse_rows(facts, text, nc, width, height, task == "segment")
    return facts


def _parse_rows(facts: LabelFacts, text: str, nc: int | None, width: int, height: int, segment: bool) -> None:
    rows: list[tuple[float, float, float, float, float]] = []
    lines: list[int] = []
    seen: dict[tuple[float, ...], int] = {}
    kinds: dict[str, int] = {}  # "box"/"polygon" -> first line
    problems = facts.problems
    hidden = 0
    for number, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        facts.rows += 1
        parsed = _parse_row(tokens, number, nc, width, height, segment, problems)
        hidden += _trim(problems)
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
        if kind == "box":
            facts.plain_boxes += 1
        else:
            facts.polygons += 1
    if facts.rows == 0:
        problems.append(("label.empty", None, "empty label file: trained as a background image (no objects)", 0.0))
    if len(kinds) == 2:
        second = max(kinds.values())
        problems.append(("label.mixed_segments", second, "mixes box rows and polygon rows; training drops the whole "
                         "image. Use one kind per file", 0.0))
    elif segment and "box" in kinds:
        problems.append(("label.no_polygons", kinds["box"], "boxes only, no polygon: segment training stops on a "
                         "dataset where any object lacks a polygon ('requires equal numbers of boxes and segments'); "
                         "add polygons, or train a detect model", 0.0))
    if rows:
        problems.extend(_near_duplicates(rows, lines))
        facts.boxes = np.asarray(rows, np.float32)
        facts.lines = np.asarray(lines, np.int32)
    hidden += _trim(problems)
    if hidden:
        check, line, message, rank = problems[-1]
        problems[-1] = (check, line, f"{message} (and {hidden} more problems in this file, not listed)", rank)


def _trim(problems: list[Problem]) -> int:
    """Keep the first ``MAX_PROBLEMS`` problems; return how many were dropped."""
    extra = len(problems) - MAX_PROBLEMS
    if extra <= 0:
        return 0
    del problems[MAX_PROBLEMS:]
    return extra


def _parse_row(tokens: list[str], number: int, nc: int | None, width: int, height: int, segment: bool,
               problems: list[Problem]) -> tuple[str, tuple[float, ...], tuple[float, ...]] | None:
    """One label row → (kind, raw values, cls-cx-cy-w-h box), or None after recording why it is unusable."""
    count = len(tokens)
    if count == 5:
        kind = "box"
    elif count >= 7 and count % 2 == 1:
        kind = "polygon"
    elif count == 3:
        problems.append(("label.polygon_points", number, "one point (3 values): a polygon needs at least 3 points "
                         "('class x1 y1 x2 y2 x3 y3 …')", 0.0))
        return None
    else:
        problems.append(("label.columns", number, f"{count} values; a box row is 'class cx cy w h' (5), a polygon "
                         "row 'class x1 y1 x2 y2 …' (odd, 7 or more)", 0.0))
        return None
    try:
        values = tuple(map(float, tokens))
    except ValueError:
        bad = next(t for t in tokens if not _is_number(t))
        problems.append(("label.non_numeric", number, f"'{bad[:20]}' is not a number", 0.0))
        return None
    if not all(map(math.isfinite, values)):
        problems.append(("label.non_numeric", number, "contains nan or inf", 0.0))
        return None
    cls = values[0]
    if cls != int(cls):
        problems.append(("label.class_not_integer", number, f"class id {tokens[0][:20]} is not an integer", 0.0))
        return None
    if cls < 0 or (nc is not None and cls >= nc):
        allowed = f"0-{nc - 1}" if nc else "0 or more"
        problems.append(("label.class_out_of_range", number, f"class id {int(cls)} is outside {allowed}; training "
                         "stops or drops the image", 0.0))
        return None
    coords = values[1:]
    if min(coords) < -COORD_EPS or max(coords) > 1 + COORD_EPS:
        outside = [v for v in coords if v < -COORD_EPS or v > 1 + COORD_EPS]
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
    if kind == "polygon" and segment:
        problems.extend(_polygon_problems(coords, number, width, height))
    return kind, values, (cls, cx, cy, w, h)


def _polygon_problems(coords: tuple[float, ...], number: int, width: int, height: int) -> list[Problem]:
    """A polygon as a mask: enough distinct points, an area of a pixel or more, no point written twice in a row."""
    points = list(zip(coords[0::2], coords[1::2], strict=True))
    problems: list[Problem] = []
    distinct = len(set(points))
    twice = [i + 1 for i in range(1, len(points)) if points[i] == points[i - 1]]
    closing = len(points) > 3 and points[-1] == points[0]
    if twice or closing:
        where = f"point {twice[0]} repeats point {twice[0] - 1}" if twice else "the last point repeats the first"
        problems.append(("label.polygon_repeated_points", number, f"{where}; training closes polygons itself and "
                         "repeated points add nothing (often an exporter's doing)", 0.0))
    area = abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1], strict=True))) / 2
    if width and height:
        area_px, minimum, unit = area * width * height, MIN_POLYGON_AREA_PX, "px²"
    else:
        area_px, minimum, unit = area, MIN_POLYGON_AREA, "of the image"
    if distinct < 3:
        problems.append(("label.polygon_degenerate", number, f"only {distinct} distinct point{'s' * (distinct > 1)}: "
                         "the mask is empty", 0.0))
    elif area_px < minimum:
        problems.append(("label.polygon_degenerate", number, f"area {area_px:.2g} {unit} (its points lie on a line): "
                         "the mask is empty", float(area_px)))
    return problems


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
    files stay fast; plain Python beats numpy on the few boxes a typical file has. A hostile file of
    thousands of stacked boxes stops after ``NEAR_DUP_BUDGET`` comparisons instead of taking hours.
    """
    spans = sorted((cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2, cls, line)
                   for (cls, cx, cy, w, h), line in zip(boxes, lines, strict=True))
    problems: list[Problem] = []
    reported: set[int] = set()
    budget = NEAR_DUP_BUDGET
    for i, (x0, x1, y0, y1, cls, line) in enumerate(spans):
        for j in range(i + 1, len(spans)):
            ox0, ox1, oy0, oy1, other_cls, other_line = spans[j]
            budget -= 1
            if ox0 >= x1 or budget < 0:
                break
            if other_cls != cls or other_line in reported:
                continue
            inter = (min(x1, ox1) - ox0) * max(0.0, min(y1, oy1) - max(y0, oy0))
            iou = inter / ((x1 - x0) * (y1 - y0) + (ox1 - ox0) * (oy1 - oy0) - inter)
            if iou > NEAR_DUP_IOU:
                first, second = sorted((line, other_line))
                if second in reported:  # each line is reported once, against the first box it copies
                    continue
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
