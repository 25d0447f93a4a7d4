"""`bra dataset check`: every problem in a YOLO detection dataset, found read-only before training.

Flow: data.yaml → file lists (``layout``) → per-file checks in a process pool (``inspect``) →
dataset-wide checks on the collected facts (duplicates, leakage, class balance, box sizes) → ``Report``.
Nothing here imports ultralytics or writes into the dataset.
"""

from __future__ import annotations

import functools
import glob
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from bracli.dataset import DEFAULT_NEAR_DUP_THRESHOLD
from bracli.dataset.inspect import ImageFacts, LabelFacts, inspect_chunk
from bracli.dataset.layout import IMG_FORMATS, SPLITS, Layout, label_path, load_layout
from bracli.dataset.report import Issue, Report
from bracli.errors import UsageError

HASH_BITS = 128
P3_STRIDE = 8  # px: the finest YOLOv8 detection grid; smaller objects fall between cells
EXTREME_ASPECT = 20.0
IMBALANCE_RATIO = 10.0
NOT_LABELS = frozenset({"classes.txt"})  # class lists that annotation tools write beside the labels
SERIAL_BELOW = 200  # images; under this a process pool costs more than it saves

Progress = Callable[[int, int], None]


@dataclass
class _Entry:
    """One image as listed in one split (an image listed in two splits is two entries)."""

    split: str
    image: ImageFacts
    label: LabelFacts


def check(data_yaml: str | Path, *, imgsz: int = 640, strict: bool = False,
          near_dup_threshold: int | None = DEFAULT_NEAR_DUP_THRESHOLD, workers: int | None = None,
          progress: Progress | None = None) -> Report:
    """Check the dataset described by ``data_yaml`` without modifying it.

    ``near_dup_threshold`` is the largest perceptual-hash distance (bits of 128) that counts as a
    near-duplicate; ``None`` skips perceptual hashing, and with it the only pixel decode. ``workers``
    defaults to the usable CPU cores. ``progress(done, total)`` is called as images are inspected.
    """
    started = time.perf_counter()
    path = _data_yaml_path(Path(data_yaml))
    if imgsz < 32:
        raise UsageError(f"--imgsz {imgsz} is too small; use the training image size (e.g. 640)")
    if near_dup_threshold is not None and not 0 <= near_dup_threshold <= HASH_BITS:
        raise UsageError(f"--near-dup-threshold must be between 0 and {HASH_BITS} bits")
    if workers is not None and workers < 1:
        raise UsageError("--workers must be at least 1")
    workers = workers or usable_cpus()

    layout = load_layout(path)
    nc = len(layout.names) if layout.names else None
    unique = list(dict.fromkeys(image for split in layout.splits.values() for image in split.images))
    inspected = _inspect_all(unique, nc, near_dup_threshold is not None, workers, progress)
    results = dict(zip(unique, inspected, strict=True))
    entries = [_Entry(split.name, *results[image]) for split in layout.splits.values() for image in split.images]

    show = functools.partial(_display, root=layout.root)
    issues = list(layout.issues)
    issues += _file_issues(results.values(), show)
    issues += _orphans(layout, {label.path for _, label in results.values()})
    issues += _exact_duplicates(entries, show)
    if near_dup_threshold is not None:
        issues += _near_duplicates(entries, near_dup_threshold, show)
    table = _BoxTable.build(results.values(), imgsz)
    issues += _box_issues(table, imgsz)
    stats, arrays = _stats(layout, entries, results.values(), table, imgsz)
    issues += _class_issues(layout, stats)
    for issue in issues:
        issue.file = show(issue.file)
    stats.update({"data_yaml": str(layout.yaml_path), "root": str(layout.root), "imgsz": imgsz,
                  "near_dup_threshold": near_dup_threshold, "workers": workers,
                  "seconds": round(time.perf_counter() - started, 3)})
    skipped = [] if near_dup_threshold is not None else ["dataset.near_duplicate_image", "split.near_leakage"]
    return Report(str(layout.yaml_path), issues, stats, images=len(unique),
                  labels=sum(label.exists for _, label in results.values()), strict=strict, skipped=skipped,
                  arrays=arrays)


def _data_yaml_path(path: Path) -> Path:
    if path.is_dir():
        path = path / "data.yaml"
    if not path.is_file():
        raise UsageError(f"{path} not found: pass the dataset's data.yaml (or its folder)")
    return path


def usable_cpus() -> int:
    """CPU cores this process may run on (affinity-aware where the platform tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _inspect_all(images: list[str], nc: int | None, perceptual: bool, workers: int,
                 progress: Progress | None) -> list[tuple[ImageFacts, LabelFacts]]:
    """Run the per-file checks, in a process pool when the dataset is big enough to gain from one."""
    tasks = [(image, label_path(image)) for image in images]
    size = max(8, min(128, math.ceil(len(tasks) / (workers * 4))))
    chunks = [tasks[i:i + size] for i in range(0, len(tasks), size)]
    results: list[tuple[ImageFacts, LabelFacts]] = []
    if workers == 1 or len(tasks) < SERIAL_BELOW:
        outputs: Iterable = (inspect_chunk(chunk, nc, perceptual) for chunk in chunks)
        _collect(outputs, results, len(tasks), progress)
        return results
    with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=_pool_context()) as pool:
        _collect(pool.map(inspect_chunk, chunks, repeat(nc), repeat(perceptual)), results, len(tasks), progress)
    return results


def _pool_context():
    """Fork when this process has a single thread (instant, and safe then); else a clean server process."""
    import multiprocessing
    import threading

    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        from PIL import Image  # noqa: F401 -- imported once here, inherited by every forked worker

        return multiprocessing.get_context("fork")
    method = "forkserver" if "forkserver" in methods else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(["bracli.dataset.inspect"])
    return context


def _collect(outputs: Iterable, results: list, total: int, progress: Progress | None) -> None:
    for output in outputs:
        results.extend(output)
        if progress:
            progress(len(results), total)


def _file_issues(results: Iterable[tuple[ImageFacts, LabelFacts]], show: Callable[[str], str]) -> list[Issue]:
    issues = []
    for image, label in results:
        issues += [Issue(check, image.path, line, message, rank) for check, line, message, rank in image.problems]
        for check, line, message, rank in label.problems:
            # a missing label file is about the image: name the image, and say where its labels were expected
            if check == "label.missing":
                issues.append(Issue(check, image.path, None, f"{message}; expected {show(label.path)}", rank))
            else:
                issues.append(Issue(check, label.path, line, message, rank))
    return issues


def _orphans(layout: Layout, expected: set[str]) -> list[Issue]:
    """Label files in the label folders that no image of any split uses and that have no image beside them."""
    list_files = {f for split in layout.splits.values() for f in split.list_files}
    candidates: set[str] = set()
    for split in layout.splits.values():
        for folder, recursive in split.label_folders:
            pattern = os.path.join(glob.escape(folder), "**", "*.txt") if recursive else \
                os.path.join(glob.escape(folder), "*.txt")
            candidates.update(glob.glob(pattern, recursive=recursive))
    issues = []
    for candidate in sorted(candidates - expected - list_files):
        if os.path.basename(candidate) not in NOT_LABELS and not _has_image(candidate):
            issues.append(Issue("label.orphan", candidate, None, "no image uses this label file; check for a renamed "
                                "or deleted image"))
    return issues


def _has_image(label_file: str) -> bool:
    labels, images = f"{os.sep}labels{os.sep}", f"{os.sep}images{os.sep}"
    stem = images.join(label_file.rsplit(labels, 1)).rsplit(".", 1)[0]
    return any(f.rpartition(".")[-1].lower() in IMG_FORMATS for f in glob.glob(glob.escape(stem) + ".*"))


def _exact_duplicates(entries: list[_Entry], show: Callable[[str], str]) -> list[Issue]:
    """Identical bytes listed twice: within a split a wasted sample, across splits a leak into evaluation."""
    groups: dict[bytes, list[_Entry]] = {}
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


def _near_duplicates(entries: list[_Entry], threshold: int, show: Callable[[str], str]) -> list[Issue]:
    """Images whose perceptual hashes differ in at most ``threshold`` bits (exact copies are reported apart)."""
    indexed = [e for e in entries if e.image.dhash is not None]
    if len(indexed) < 2:
        return []
    high = np.array([e.image.dhash[0] for e in indexed], np.uint64)
    low = np.array([e.image.dhash[1] for e in indexed], np.uint64)
    digest_ids: dict[bytes, int] = {}
    group = np.array([digest_ids.setdefault(e.image.digest, len(digest_ids)) for e in indexed])
    split = np.array([SPLITS.index(e.split) for e in indexed])
    first_of_group = np.zeros(len(indexed), bool)
    first_of_group[np.unique(group, return_index=True)[1]] = True
    order = np.arange(len(indexed))
    issues = []
    block = max(1, 2**22 // len(indexed))  # rows per step: keeps each (rows × images) array near 32 MB
    for start in range(0, len(indexed), block):
        rows = slice(start, start + block)
        distance = _popcount(high[rows, None] ^ high[None, :]) + _popcount(low[rows, None] ^ low[None, :])
        usable = (order[None, :] < order[rows, None]) & (group[None, :] != group[rows, None]) & first_of_group[None, :]
        for kind, mask in (("dataset.near_duplicate_image", split[None, :] == split[rows, None]),
                           ("split.near_leakage", split[None, :] < split[rows, None])):
            masked = np.where(usable & mask, distance, HASH_BITS + 1)
            nearest = masked.argmin(1)
            best = masked[np.arange(len(nearest)), nearest]
            for row in np.nonzero((best <= threshold) & first_of_group[rows])[0].tolist():
                entry, other = indexed[start + row], indexed[int(nearest[row])]
                bits = int(best[row])
                if kind == "split.near_leakage":
                    message = (f"looks like {other.split} image {show(other.image.path)} ({bits} of {HASH_BITS} "
                               "hash bits differ): evaluation may score near-memorised data")
                else:
                    message = (f"looks like {show(other.image.path)} ({bits} of {HASH_BITS} hash bits differ); "
                               "check for re-encoded or burst copies")
                issues.append(Issue(kind, entry.image.path, None, message, float(bits)))
    return issues


def _popcount(values: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values).astype(np.int16)
    as_bytes = values[..., None].view(np.uint8)
    return _BYTE_BITS[as_bytes].sum(-1, dtype=np.int16)


_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], np.int16)


@dataclass
class _BoxTable:
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
    def build(cls, results: Iterable[tuple[ImageFacts, LabelFacts]], imgsz: int) -> _BoxTable:
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


def _box_issues(table: _BoxTable, imgsz: int) -> list[Issue]:
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


def _class_issues(layout: Layout, stats: dict[str, Any]) -> list[Issue]:
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


def _stats(layout: Layout, entries: list[_Entry], results: Iterable[tuple[ImageFacts, LabelFacts]],
           table: _BoxTable, imgsz: int) -> tuple[dict[str, Any], dict[str, Any]]:
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


def _display(path: str, root: Path) -> str:
    """Paths under the dataset root are shown relative to it; others stay absolute."""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path
