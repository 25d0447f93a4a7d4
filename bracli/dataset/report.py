"""What `bra dataset check` found: the check catalogue, issues, the report and its rich rendering.

Every check has a stable id and one severity, so scripts can filter the JSON by id and the CLI can
decide the exit code: errors make training wrong or silently drop data, warnings deserve a look,
info is context (background images, grayscale inputs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bracli.output import MARKS

SECTIONS = {"yaml": "data.yaml", "image": "Images", "label": "Labels", "dataset": "Dataset", "split": "Splits"}


@dataclass(frozen=True)
class Check:
    """One kind of problem: its id, severity and a short title for the report and the docs."""

    id: str
    severity: str
    title: str

    @property
    def section(self) -> str:
        return self.id.split(".", 1)[0]


_CATALOGUE = [
    Check("yaml.parse", "error", "data.yaml is readable YAML mapping"),
    Check("yaml.missing_key", "error", "train, val and names (or nc) are present"),
    Check("yaml.names", "error", "names and nc agree"),
    Check("yaml.split_not_found", "error", "every split is an existing folder or image list"),
    Check("yaml.no_images", "error", "every split has images"),
    Check("yaml.download", "warning", "no download: script (ultralytics would execute it)"),
    Check("yaml.relative_path", "info", "path: resolves the same from any working directory"),
    Check("image.missing", "error", "listed images exist"),
    Check("image.not_a_file", "error", "listed images are regular files (not folders, FIFOs or devices)"),
    Check("image.folder_link", "error", "no folder link loops or repeats a folder"),
    Check("image.folder_unreadable", "error", "every image folder can be listed"),
    Check("image.corrupt", "error", "images open and decode"),
    Check("image.truncated", "error", "images are complete"),
    Check("image.unsupported_format", "error", "image formats are supported"),
    Check("image.tiny", "error", "images are at least 10 px per side"),
    Check("image.jpeg_trailing_data", "warning", "JPEGs end with their end-of-image marker"),
    Check("image.exif_rotation", "warning", "no EXIF orientation rotates an image"),
    Check("image.alpha", "warning", "no alpha channel is dropped"),
    Check("image.ignored", "warning", "no image file is skipped for its extension"),
    Check("image.grayscale", "info", "colour images"),
    Check("label.unreadable", "error", "label files are UTF-8 text"),
    Check("label.not_a_file", "error", "label paths are regular files"),
    Check("label.too_large", "error", "label files are of a plausible size"),
    Check("label.columns", "error", "rows have 5 columns (or a polygon)"),
    Check("label.non_numeric", "error", "values are finite numbers"),
    Check("label.class_not_integer", "error", "class ids are integers"),
    Check("label.class_out_of_range", "error", "class ids are within names"),
    Check("label.coords_out_of_range", "error", "coordinates are within [0, 1]"),
    Check("label.degenerate_box", "error", "boxes have a positive width and height"),
    Check("label.mixed_segments", "error", "a file holds boxes or polygons, not both"),
    Check("label.polygon_points", "error", "polygons have at least 3 points"),
    Check("label.polygon_degenerate", "error", "polygons enclose an area (segment)"),
    Check("label.no_polygons", "error", "every label file has polygons (segment)"),
    Check("label.box_outside_image", "warning", "boxes stay inside the image"),
    Check("label.duplicate", "warning", "no row is repeated"),
    Check("label.near_duplicate", "warning", "no two boxes of one class overlap with IoU > 0.9"),
    Check("label.orphan", "warning", "every label file has an image"),
    Check("label.missing", "info", "images with a label file"),
    Check("label.empty", "info", "non-empty label files"),
    Check("label.polygon_repeated_points", "info", "no polygon repeats a point (segment)"),
    Check("dataset.class_missing", "warning", "every class has training instances"),
    Check("dataset.class_imbalance", "warning", "classes are roughly balanced"),
    Check("dataset.small_boxes", "warning", "boxes are larger than the P3 stride at the training size"),
    Check("dataset.extreme_aspect", "warning", "no box is extremely thin"),
    Check("dataset.duplicate_image", "warning", "no image appears twice in a split"),
    Check("dataset.near_duplicate_image", "warning", "no near-duplicate images in a split"),
    Check("dataset.box_segment_mix", "info", "label files are all boxes or all polygons (detect)"),
    Check("split.leakage", "error", "no image is in two splits"),
    Check("split.near_leakage", "warning", "no near-duplicate of a train image in val/test"),
]
CHECKS: dict[str, Check] = {c.id: c for c in _CATALOGUE}
CHECK_ORDER = {check_id: i for i, check_id in enumerate(CHECKS)}


@dataclass
class Issue:
    """One problem at one place. ``rank`` orders the examples of a check, worst first (not exported)."""

    check: str
    file: str
    line: int | None
    message: str
    rank: float = field(default=0.0, compare=False)

    @property
    def severity(self) -> str:
        return CHECKS[self.check].severity

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "severity": self.severity, "file": self.file, "line": self.line,
                "message": self.message}


@dataclass
class Report:
    """The result of a check. ``arrays`` holds per-box and per-image data for plots (not exported)."""

    data_yaml: str
    issues: list[Issue]
    stats: dict[str, Any]
    images: int
    labels: int
    strict: bool = False
    skipped: list[str] = field(default_factory=list)
    not_run: dict[str, str] = field(default_factory=dict)  # check id -> why it had nothing to look at
    arrays: dict[str, Any] = field(default_factory=dict, repr=False)
    cache: dict[str, Any] = field(default_factory=dict)  # where per-file results came from (not exported)

    def __post_init__(self) -> None:
        self.issues.sort(key=lambda i: (CHECK_ORDER[i.check], i.rank, i.file, i.line or 0))

    def count(self, severity: str) -> int:
        return sum(1 for issue in self.issues if issue.severity == severity)

    @property
    def summary(self) -> dict[str, int]:
        return {"errors": self.count("error"), "warnings": self.count("warning"), "info": self.count("info"),
                "images": self.images, "labels": self.labels}

    @property
    def passed(self) -> bool:
        """No errors (and, when strict, no warnings either)."""
        return self.count("error") == 0 and not (self.strict and self.count("warning"))

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        result = {"summary": self.summary, "issues": [i.to_dict() for i in self.issues], "stats": self.stats}
        if self.not_run:
            result["not_run"] = self.not_run
        return result




def render(report: Report, console, examples: int = 3) -> None:
    """Print the report in sections: one line per check with its count and the worst examples."""
    from rich.markup import escape
    from rich.table import Table

    by_check: dict[str, list[Issue]] = {}
    for issue in report.issues:
        by_check.setdefault(issue.check, []).append(issue)
    console.print(f"[bold]Dataset check[/] {escape(printable(report.data_yaml))}  "
                  f"[dim](paths relative to {escape(printable(str(report.stats.get('root', '.'))))})[/]")
    for section, heading in SECTIONS.items():
        console.print(f"\n[bold underline]{heading}[/]")
        for check in _CATALOGUE:
            if check.section != section:
                continue
            found = by_check.get(check.id, [])
            if check.id in report.skipped:
                console.print(f"  [dim]– {check.title} (skipped)[/]")
                continue
            if not found and check.id in report.not_run:
                console.print(f"  [dim]– {check.title} (not run: {report.not_run[check.id]})[/]")
                continue
            if not found:
                console.print(f"  {MARKS['ok']} {check.title}")
                continue
            console.print(f"  {MARKS[check.severity]} {check.title}: [bold]{len(found)}[/] "
                          f"[dim]{check.id}[/]")
            for issue in found[:examples]:
                where = f"{issue.file}:{issue.line}" if issue.line else issue.file
                console.print(f"      {escape(printable(where))}  {escape(printable(issue.message))}", soft_wrap=True)
            if len(found) > examples:
                console.print(f"      [dim]… and {len(found) - examples} more[/]")
    _render_stats(report, console, Table)
    summary = report.summary
    colour = "red" if summary["errors"] else ("yellow" if summary["warnings"] else "green")
    console.print(f"\n[bold {colour}]{summary['errors']} errors, {summary['warnings']} warnings, "
                  f"{summary['info']} info[/] — {summary['images']} images, {summary['labels']} label files")
    cache = report.cache
    if cache.get("hits"):
        console.print(f"[dim]{cache['hits']} of {cache['images']} images unchanged since the last check: their "
                      "results came from the cache (--no-cache to read everything again)[/]")
    if str(cache.get("status", "")).startswith(("not saved", "ignored")):
        console.print(f"[dim]cache {escape(printable(cache['status']))}: {escape(printable(str(cache['file'])))}[/]")


def printable(text: str) -> str:
    """``text`` safe for a terminal line: control characters and undecodable bytes as escapes.

    File names may hold newlines, and bytes that are not UTF-8 (Python keeps those as surrogates,
    which cannot be printed at all).
    """
    if text.isprintable():
        return text
    out = []
    for char in text:
        if "\udc80" <= char <= "\udcff":  # an undecodable byte, as os.fsdecode keeps it
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        elif char.isprintable() or char == " ":
            out.append(char)
        else:
            out.append(char.encode("unicode_escape", "backslashreplace").decode("ascii"))
    return "".join(out)


def _render_stats(report: Report, console, table_type) -> None:
    from rich.markup import escape

    stats = report.stats
    classes = stats.get("classes") or []
    splits = list(stats.get("splits", {}))
    if classes and splits:
        table = table_type(title="Instances per class", title_justify="left", show_edge=False, pad_edge=False)
        table.add_column("id", justify="right")
        table.add_column("class")
        for split in splits:
            table.add_column(split, justify="right")
        for row in classes:
            table.add_row(str(row["id"]), escape(printable(row["name"])),  # names come from the data.yaml
                          *(str(row["instances"].get(s, 0)) for s in splits))
        console.print()
        console.print(table)
    if splits:
        table = table_type(title="Splits", title_justify="left", show_edge=False, pad_edge=False)
        for column in ("split", "images", "label files", "backgrounds", "instances"):
            table.add_column(column, justify="left" if column == "split" else "right")
        for name, split in stats["splits"].items():
            table.add_row(name, *(str(split[k]) for k in ("images", "labels", "backgrounds", "instances")))
        console.print()
        console.print(table)
    sizes, boxes = stats.get("image_sizes") or {}, stats.get("boxes") or {}
    if sizes.get("count"):
        common = ", ".join(f"{w}×{h} ({n})" for w, h, n in sizes["most_common"][:3])
        console.print(f"\nImage sizes: width {_spread(sizes['width'])}, height {_spread(sizes['height'])}; "
                      f"most common {common}")
    if boxes.get("count"):
        console.print(f"Boxes at imgsz {boxes['imgsz']}: width {_spread(boxes['width_px'])} px, "
                      f"height {_spread(boxes['height_px'])} px; {boxes['below_stride']} below the "
                      f"{boxes['stride_px']} px P3 stride")


def _spread(values: dict[str, float]) -> str:
    if values["min"] == values["max"]:
        return f"{values['min']:g}"
    return f"{values['min']:g}–{values['max']:g} (median {values['median']:g})"
