"""Dataset-wide checks on the collected per-file facts: duplicates, leakage, box sizes, classes, statistics.

Vectorised with numpy. The near-duplicate image search finds every pair of perceptual hashes within the
threshold without comparing all pairs: split into ``threshold + 1`` bit ranges, two hashes that differ in
at most ``threshold`` bits agree exactly on at least one range (pigeonhole), so only hashes sharing a
range value are compared. When the hashes are too alike for that to prune (or the threshold is large),
all pairs are compared in blocks, which gives the same pairs.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bracli.dataset.labels import LabelFacts
from bracli.dataset.layout import SPLITS, Layout
from bracli.dataset.probe import ImageFacts
from bracli.dataset.report import Issue

HASH_BITS = 128
P3_STRIDE = 8  # px: the finest YOLOv8 detection grid; smaller objects fall between cells
EXTREME_ASPECT = 20.0
IMBALANCE_RATIO = 10.0
PIGEONHOLE_MAX_THRESHOLD = 15  # above this the bit ranges get too short to prune; compare all pairs
CANDIDATE_BUDGET = 4_000_000  # candidate pairs at most before falling back to blocks


@dataclass
class Entry:
    """One image as listed in one split (an image listed in two splits is two entries)."""

    split: str
    image: ImageFacts
    label: LabelFacts


def exact_duplicates(entries: list[Entry], show: Callable[[str], str]) -> list[Issue]:
    """Identical bytes listed twice: within a split a wasted sample, across splits a leak into evaluation.

    Only files that share their size with another listing carry a digest; the others cannot be copies.
    """
    groups: dict[bytes, list[Entry]] = {}
    for entry in entries:
        if entry.image.digest:
            groups.setdefault(entry.image.digest, []).append(entry)
    issues = []
    for group in groups.values():
        for index, entry in enumerate(group[1:], 1):
            earlier = group[:index]
            other_split = next((e for e in earlier if e.split != entry.split), None)
            reference = other_split or earlier[0]
            if reference.image.path == entry.image.path:
                message = f"listed in both {reference.split} and {entry.split}" if other_split else \
                    f"listed twice in {entry.split}"
            else:
                message = f"same bytes as {reference.split} image {show(reference.image.path)}"
            if other_split:
                issues.append(Issue("split.leakage", entry.image.path, None,
                                    f"{message}: evaluation would score memorised data"))
            else:
                issues.append(Issue("dataset.duplicate_image", entry.image.path, None,
                                    f"{message}: it is trained on twice as often"))
    return issues


def near_duplicates(entries: list[Entry], threshold: int, show: Callable[[str], str]) -> list[Issue]:
    """Images whose perceptual hashes differ in at most ``threshold`` bits (exact copies are reported apart).

    Each image is compared with the earlier listings (first copies only, other bytes): the nearest one
    in its own split is a near-duplicate, the nearest in an earlier split a near-leak (ties: the earliest).
    """
    indexed = [e for e in entries if e.image.dhash is not None]
    if len(indexed) < 2:
        return []
    high = np.array([e.image.dhash[0] for e in indexed], np.uint64)
    low = np.array([e.image.dhash[1] for e in indexed], np.uint64)
    copies: dict[Any, int] = {}
    group = np.array([copies.setdefault(e.image.digest or e.image.path, len(copies)) for e in indexed])
    split = np.array([SPLITS.index(e.split) for e in indexed])
    first_of_group = np.zeros(len(indexed), bool)
    first_of_group[np.unique(group, return_index=True)[1]] = True
    later, earlier, distance = close_pairs(high, low, threshold)
    usable = (group[later] != group[earlier]) & first_of_group[later] & first_of_group[earlier]
    issues = []
    for kind, same_kind in (("dataset.near_duplicate_image", split[earlier] == split[later]),
                            ("split.near_leakage", split[earlier] < split[later])):
        chosen = usable & same_kind
        rows, others, bits = later[chosen], earlier[chosen], distance[chosen]
        order = np.lexsort((others, bits, rows))  # by image, then nearest, then earliest
        rows, others, bits = rows[order], others[order], bits[order]
        nearest = np.r_[True, rows[1:] != rows[:-1]] if len(rows) else np.zeros(0, bool)
        for row, other_row, count in zip(rows[nearest].tolist(), others[nearest].tolist(), bits[nearest].tolist(),
                                         strict=True):
            entry, other = indexed[row], indexed[other_row]
            if kind == "split.near_leakage":
                message = (f"looks like {other.split} image {show(other.image.path)} ({count} of {HASH_BITS} "
                           "hash bits differ): evaluation may score near-memorised data")
            else:
                message = (f"looks like {show(other.image.path)} ({count} of {HASH_BITS} hash bits differ); "
                           "check for re-encoded or burst copies")
            issues.append(Issue(kind, entry.image.path, None, message, float(count)))
    return issues


def close_pairs(high: np.ndarray, low: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every index pair (later, earlier) whose 128-bit hashes differ in at most ``threshold`` bits, and by how many."""
    candidates = _pigeonhole_candidates(high, low, threshold) if threshold <= PIGEONHOLE_MAX_THRESHOLD else None
    if candidates is None:
        return _all_pairs(high, low, threshold)
    later, earlier = candidates
    distance = popcount(high[later] ^ high[earlier]) + popcount(low[later] ^ low[earlier])
    close = distance <= threshold
    return later[close], earlier[close], distance[close]


def _pigeonhole_candidates(high: np.ndarray, low: np.ndarray, threshold: int
                           ) -> tuple[np.ndarray, np.ndarray] | None:
    """Pairs that agree on at least one of ``threshold + 1`` bit ranges; None when there would be too many."""
    count = len(high)
    ranges = max(threshold + 1, 3)  # ranges of at most 43 bits fit a uint64 key
    edges = [round(HASH_BITS * i / ranges) for i in range(ranges + 1)]
    codes = []
    total = 0
    for start, stop in itertools.pairwise(edges):
        keys = _bit_range(high, low, start, stop)
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        lengths = np.diff(np.r_[starts, count])
        total += int((lengths * (lengths - 1) // 2).sum())
        if total > max(CANDIDATE_BUDGET, 8 * count):
            return None
        run_end = np.repeat(starts + lengths, lengths)
        partners = run_end - np.arange(count) - 1  # later positions in the same run
        first = np.repeat(np.arange(count), partners)
        offsets = np.arange(len(first)) - np.repeat(np.cumsum(partners) - partners, partners)
        a, b = order[first], order[first + 1 + offsets]
        codes.append(np.maximum(a, b).astype(np.int64) * count + np.minimum(a, b))
    unique = np.unique(np.concatenate(codes)) if codes else np.zeros(0, np.int64)
    return unique // count, unique % count


def _bit_range(high: np.ndarray, low: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Bits ``start:stop`` (0 = the top bit of ``high``) of each 128-bit hash, as uint64 keys."""
    def take(words: np.ndarray, first: int, last: int) -> np.ndarray:  # bits first:last of a 64-bit word
        return (words >> np.uint64(64 - last)) & np.uint64((1 << (last - first)) - 1)

    if stop <= 64:
        return take(high, start, stop)
    if start >= 64:
        return take(low, start - 64, stop - 64)
    return (take(high, start, 64) << np.uint64(stop - 64)) | take(low, 0, stop - 64)


def _all_pairs(high: np.ndarray, low: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    count = len(high)
    block = max(1, 2**22 // count)  # rows per step: keeps each (rows × images) array near 32 MB
    found = []
    for start in range(0, count, block):
        rows = np.arange(start, min(count, start + block))
        distance = popcount(high[rows, None] ^ high[None, :]) + popcount(low[rows, None] ^ low[None, :])
        row, column = np.nonzero((distance <= threshold) & (np.arange(count)[None, :] < rows[:, None]))
        found.append((rows[row], column, distance[row, column]))
    return tuple(np.concatenate(parts) for parts in zip(*found, strict=True))  # type: ignore[return-value]


def popcount(values: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values).astype(np.int16)
    as_bytes = values[..., None].view(np.uint8)
    return _BYTE_BITS[as_bytes].sum(-1, dtype=np.int16)


_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], np.int16)


def box_segment_mix(results: Iterable[tuple[ImageFacts, LabelFacts]], yaml_file: str) -> list[Issue]:
    """In detect mode: label files with polygons next to files with boxes only (fine here, fatal for segment)."""
    polygon_files = box_files = 0
    for _, label in results:  # a file holding both is an error of its own (label.mixed_segments)
        polygon_files += bool(label.polygons and not label.plain_boxes)
        box_files += bool(label.plain_boxes and not label.polygons)
    if not (polygon_files and box_files):
        return []
    return [Issue("dataset.box_segment_mix", yaml_file, None,
                  f"{polygon_files} label files hold polygons and {box_files} hold boxes only: detect training uses "
                  "the boxes of both, but segment training stops on such a dataset. For a segmentation model, "
                  "check with --task segment")]


@dataclass
class BoxTable:
    """Every usable box of every sized image, one row each, with its image's size and origin."""

    files: list[LabelFacts]
    owner: np.ndarray  # index into files
    lines: np.ndarray
    centres: np.ndarray  # normalised cx, cy
    width_px: np.ndarray  # in the stored image
    height_px: np.ndarray
    scale: np.ndarray  # stored image → imgsz (letterbox: long side to imgsz)
    image_sizes: np.ndarray  # (images, 2) of all sized images

    @classmethod
    def build(cls, results: Iterable[tuple[ImageFacts, LabelFacts]], imgsz: int) -> BoxTable:
        sized = [(image, label) for image, label in results if image.width and image.height]
        image_sizes = np.array([(image.width, image.height) for image, _ in sized], np.float64).reshape(-1, 2)
        counts = np.array([len(label.boxes) for _, label in sized], np.int64)
        owner = np.repeat(np.arange(len(sized)), counts)
        boxes = np.concatenate([label.boxes for _, label in sized]) if sized else np.zeros((0, 5), np.float32)
        lines = np.concatenate([label.lines for _, label in sized]) if sized else np.zeros(0, np.int32)
        size = image_sizes[owner]
        return cls(files=[label for _, label in sized], owner=owner, lines=lines, centres=boxes[:, 1:3],
                   width_px=boxes[:, 3] * size[:, 0], height_px=boxes[:, 4] * size[:, 1],
                   scale=imgsz / size.max(1) if len(size) else np.zeros(0), image_sizes=image_sizes)


def box_issues(table: BoxTable, imgsz: int) -> list[Issue]:
    """Boxes too small for the P3 grid once resized to ``imgsz``, and extremely thin boxes; one issue per file."""
    issues = []
    size_at_imgsz = np.sqrt(table.width_px * table.height_px) * table.scale
    for row, count in _worst_per_file(table.owner, size_at_imgsz, size_at_imgsz < P3_STRIDE):
        issues.append(Issue("dataset.small_boxes", table.files[table.owner[row]].path, int(table.lines[row]),
                            f"{count} box{'es' if count > 1 else ''} under the {P3_STRIDE} px P3 stride at imgsz "
                            f"{imgsz} (smallest {table.width_px[row] * table.scale[row]:.1f}×"
                            f"{table.height_px[row] * table.scale[row]:.1f} px); raise --imgsz or tile the images",
                            float(size_at_imgsz[row])))
    aspect = np.maximum(table.width_px / table.height_px, table.height_px / table.width_px)
    for row, count in _worst_per_file(table.owner, -aspect, aspect > EXTREME_ASPECT):
        issues.append(Issue("dataset.extreme_aspect", table.files[table.owner[row]].path, int(table.lines[row]),
                            f"{count} box{'es' if count > 1 else ''} thinner than 1:{EXTREME_ASPECT:g} (worst "
                            f"1:{aspect[row]:.0f}); such boxes are hard to learn and easy to mislabel",
                            -float(aspect[row])))
    return issues


def _worst_per_file(owner: np.ndarray, badness: np.ndarray, flagged: np.ndarray) -> list[tuple[int, int]]:
    """(row of the lowest ``badness`` among flagged rows, flagged count) for each file with a flagged row."""
    worst: dict[int, tuple[int, int]] = {}
    for row in np.nonzero(flagged)[0].tolist():
        file = int(owner[row])
        best, count = worst.get(file, (row, 0))
        worst[file] = (row if badness[row] < badness[best] else best, count + 1)
    return list(worst.values())


def class_issues(layout: Layout, stats: dict[str, Any]) -> list[Issue]:
    """Classes with no training instances, and a large ratio between the most and least common class."""
    if not layout.names or "train" not in layout.splits:
        return []
    yaml_file = str(layout.yaml_path)
    counts = [row["instances"].get("train", 0) for row in stats["classes"]]
    issues = []
    for row, count in zip(stats["classes"], counts, strict=True):
        if count == 0:
            elsewhere = {s: n for s, n in row["instances"].items() if n}
            note = f" (but {', '.join(f'{n} in {s}' for s, n in elsewhere.items())})" if elsewhere else ""
            issues.append(Issue("dataset.class_missing", yaml_file, None,
                                f"class {row['id']} '{row['name']}' has no instances in train{note}; the model "
                                "cannot learn it", float(row["id"])))
    present = [(count, row["name"]) for row, count in zip(stats["classes"], counts, strict=True) if count]
    if len(present) >= 2:
        (low, low_name), (high, high_name) = min(present), max(present)
        if high / low > IMBALANCE_RATIO:
            issues.append(Issue("dataset.class_imbalance", yaml_file, None,
                                f"'{high_name}' has {high / low:.0f}× the train instances of '{low_name}' ({high} vs "
                                f"{low}); consider more data for rare classes or class weighting"))
    return issues


def statistics(layout: Layout, entries: list[Entry], results: list[tuple[ImageFacts, LabelFacts]],
               table: BoxTable, imgsz: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per-split and per-class counts, image and box size distributions; and the raw arrays for plots."""
    nc = len(layout.names) if layout.names else 0
    splits: dict[str, dict[str, int]] = {}
    instances: dict[str, np.ndarray] = {}
    images_with: dict[str, np.ndarray] = {}
    for name in layout.splits:
        members = [e for e in entries if e.split == name]
        labelled = [e.label for e in members if len(e.label.boxes)]
        classes = np.concatenate([label.boxes[:, 0] for label in labelled]).astype(np.int64) if labelled else \
            np.zeros(0, np.int64)
        owner = np.repeat(np.arange(len(labelled)), [len(label.boxes) for label in labelled])
        instances[name] = np.bincount(classes, minlength=nc)
        images_with[name] = np.bincount(np.unique(owner * max(nc, 1) + classes) % max(nc, 1), minlength=nc)
        splits[name] = {"images": len(members), "labels": sum(e.label.exists for e in members),
                        "backgrounds": len(members) - len(labelled), "instances": len(classes)}
    class_rows = [{"id": i, "name": layout.names[i] if layout.names else str(i),
                   "instances": {s: int(instances[s][i]) for s in layout.splits},
                   "images": {s: int(images_with[s][i]) for s in layout.splits}} for i in range(nc)]
    sizes = table.image_sizes
    width_px, height_px = table.width_px * table.scale, table.height_px * table.scale
    stats: dict[str, Any] = {
        "splits": splits,
        "classes": class_rows,
        "image_sizes": {"count": len(sizes), "width": _spread(sizes[:, 0]), "height": _spread(sizes[:, 1]),
                        "most_common": [[int(w), int(h), n] for (w, h), n in
                                        Counter(map(tuple, sizes.tolist())).most_common(5)],
                        "formats": dict(Counter(image.format for image, _ in results if image.format).most_common()),
                        "modes": dict(Counter(image.mode for image, _ in results if image.mode).most_common())},
        "boxes": {"count": len(width_px), "imgsz": imgsz, "stride_px": P3_STRIDE,
                  "width_px": _spread(width_px), "height_px": _spread(height_px),
                  "below_stride": int((np.sqrt(width_px * height_px) < P3_STRIDE).sum()),
                  "per_image": _spread(np.bincount(table.owner, minlength=len(sizes)).astype(np.float64))},
    }
    arrays = {"class_names": [row["name"] for row in class_rows],
              "class_instances": {s: instances[s].tolist() for s in layout.splits},
              "box_width_px": width_px, "box_height_px": height_px,
              "box_centres": table.centres, "image_sizes": sizes, "imgsz": imgsz, "stride_px": P3_STRIDE}
    return stats, arrays


def _spread(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {"min": 0.0, "p5": 0.0, "median": 0.0, "p95": 0.0, "max": 0.0}
    low, p5, median, p95, high = np.percentile(values, [0, 5, 50, 95, 100]).tolist()
    return {"min": round(low, 2), "p5": round(p5, 2), "median": round(median, 2), "p95": round(p95, 2),
            "max": round(high, 2)}
