"""`bra dataset check`: every problem in a YOLO dataset, found read-only before training.

Flow: data.yaml → file lists (``layout``) → per-file results, from the cache (``cache``) where the files
are unchanged, else from the per-file checks (``probe``, ``labels``) in a process pool → dataset-wide
checks on the collected facts (``dataset_wide``: duplicates, leakage, class balance, box sizes) →
``Report``. Nothing here imports ultralytics or writes into the dataset.

Results always pass through the same plain records whether they come fresh from a worker or from the
cache file, so the cache cannot change what is reported.
"""

from __future__ import annotations

import functools
import math
import os
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import repeat
from pathlib import Path

from bracli.dataset import DEFAULT_NEAR_DUP_THRESHOLD
from bracli.dataset import dataset_wide as wide
from bracli.dataset.cache import ResultCache
from bracli.dataset.fsio import walk
from bracli.dataset.labels import MISSING, TASKS, LabelFacts, inspect_label, stat_key
from bracli.dataset.layout import Layout, extension, label_path, load_layout
from bracli.dataset.probe import ImageFacts, file_digest, inspect_image, probe_chunk
from bracli.dataset.report import CHECKS, Issue, Report
from bracli.errors import BracliError, UsageError
from bracli.formats import image_extensions

NOT_LABELS = frozenset({"classes.txt"})  # class lists that annotation tools write beside the labels
SERIAL_BELOW = 200  # images; under this a process pool costs more than it saves
SEGMENT_ONLY = ("label.no_polygons", "label.polygon_degenerate", "label.polygon_repeated_points")
DETECT_ONLY = ("dataset.box_segment_mix",)
HASH_BITS = wide.HASH_BITS

_MALFORMED = (ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError)  # a bad cache record

Progress = Callable[[int, int], None]
Results = dict[str, tuple[ImageFacts, LabelFacts]]


def check(data_yaml: str | Path, *, imgsz: int = 640, strict: bool = False,
          near_dup_threshold: int | None = DEFAULT_NEAR_DUP_THRESHOLD, workers: int | None = None,
          progress: Progress | None = None, task: str = "detect", cache: bool = True) -> Report:
    """Check the dataset described by ``data_yaml`` without modifying it.

    ``near_dup_threshold`` is the largest perceptual-hash distance (bits of 128) that counts as a
    near-duplicate; ``None`` skips perceptual hashing, and with it the only pixel decode. ``workers``
    defaults to the usable CPU cores. ``progress(done, total)`` is called as images are inspected.
    ``task`` is ``detect`` or ``segment`` (polygons checked as masks). ``cache=False`` ignores and keeps
    no per-file results between runs.
    """
    started = time.perf_counter()
    path = _data_yaml_path(Path(data_yaml))
    if imgsz < 32:
        raise UsageError(f"--imgsz {imgsz} is too small; use the training image size (e.g. 640)")
    if near_dup_threshold is not None and not 0 <= near_dup_threshold <= HASH_BITS:
        raise UsageError(f"--near-dup-threshold must be between 0 and {HASH_BITS} bits")
    if workers is not None and workers < 1:
        raise UsageError("--workers must be at least 1")
    if task not in TASKS:
        raise UsageError(f"--task must be one of {', '.join(TASKS)}, not {task!r}")
    workers = workers or usable_cpus()

    layout = load_layout(path)
    listings = [(split.name, image) for split in layout.splits.values() for image in split.images]
    unique = list(dict.fromkeys(image for _, image in listings))
    store = ResultCache.open(layout.yaml_path, _cache_context(), len(unique), enabled=cache)
    gather = _Gather(layout, near_dup_threshold is not None, task, workers, progress, store)
    results = gather.run(unique, Counter(image for _, image in listings))
    store.save()
    entries = [wide.Entry(split, *results[image]) for split, image in listings]

    show = functools.partial(_display, root=layout.root)
    issues = list(layout.issues)
    issues += _file_issues(results.values(), show)
    issues += _orphans(layout, {label.path for _, label in results.values()})
    issues += wide.exact_duplicates(entries, show)
    if near_dup_threshold is not None:
        issues += wide.near_duplicates(entries, near_dup_threshold, show)
    if task == "detect":
        issues += wide.box_segment_mix(results.values(), str(layout.yaml_path))
    table = wide.BoxTable.build(results.values(), imgsz)
    issues += wide.box_issues(table, imgsz)
    stats, arrays = wide.statistics(layout, entries, list(results.values()), table, imgsz)
    issues += wide.class_issues(layout, stats)
    for issue in issues:
        issue.file = show(issue.file)
    stats.update({"data_yaml": str(layout.yaml_path), "root": str(layout.root), "imgsz": imgsz,
                  "near_dup_threshold": near_dup_threshold, "workers": workers,
                  "seconds": round(time.perf_counter() - started, 3)})
    if task != "detect":
        stats["task"] = task
    skipped = [] if near_dup_threshold is not None else ["dataset.near_duplicate_image", "split.near_leakage"]
    skipped += DETECT_ONLY if task == "segment" else SEGMENT_ONLY
    return Report(str(layout.yaml_path), issues, stats, images=len(unique),
                  labels=sum(label.exists for _, label in results.values()), strict=strict, skipped=skipped,
                  not_run=_not_run(layout, len(unique), {issue.check for issue in issues}),
                  arrays=arrays, cache={**store.summary(), "images": len(unique)})


def _not_run(layout: Layout, images: int, found: set[str]) -> dict[str, str]:
    """Checks that had nothing to look at, with why: the report shows them as not run instead of as passed."""
    if not layout.data.raw and "yaml.parse" in found:
        reason, ran = "the data.yaml could not be read", {"yaml.parse"}
    elif not images:
        reason, ran = "no images were found", {check for check in CHECKS if check.startswith("yaml.")}
    else:
        return {}
    return {check: reason for check in CHECKS if check not in ran | found}


def _data_yaml_path(path: Path) -> Path:
    if path.is_dir():
        path = path / "data.yaml"
    if not path.is_file():
        what = "not a regular file" if path.exists() else "not found"
        raise UsageError(f"{path}: {what}; pass the dataset's data.yaml (or its folder)")
    return path


def usable_cpus() -> int:
    """CPU cores this process may run on (affinity-aware where the platform tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _cache_context() -> dict:
    """What else per-file results depend on: a change to any of these makes the whole cache stale."""
    import PIL

    from bracli import __version__

    return {"bracli": __version__, "pillow": PIL.__version__, "formats": sorted(image_extensions())}


class _Gather:
    """Per-file results for every listed image: served from the cache, or inspected (in parallel)."""

    def __init__(self, layout: Layout, perceptual: bool, task: str, workers: int, progress: Progress | None,
                 store: ResultCache) -> None:
        self.nc = len(layout.names) if layout.names else None
        self.perceptual, self.task, self.workers = perceptual, task, workers
        self.progress, self.store = progress, store
        self.results: Results = {}

    def run(self, images: list[str], listed: Counter) -> Results:
        tasks, known = [], {}
        for image in images:
            info = _stat(image)
            if info is None or not stat.S_ISREG(info.st_mode):  # missing, unreadable or not a file: told by stat
                self._fresh(image, inspect_image(image, self.perceptual, False, info))
                continue
            entry = self.store.lookup(image)
            image_facts = self._served_image(image, entry, info) if entry else None
            if image_facts is None:
                tasks.append((image, label_path(image), None))
                continue
            label_facts = self._served_label(image, entry, image_facts)
            if label_facts is None:
                known[image] = (image_facts, entry)
                tasks.append((image, label_path(image), (image_facts.found, image_facts.width, image_facts.height)))
                continue
            self.results[image] = (image_facts, label_facts)
            self.store.keep(image, entry)
        if self.progress:
            self.progress(len(self.results), len(images))
        for task, (image_record, image_key, label_record, label_key) in self._inspect(tasks, len(images)):
            image = task[0]
            if image_record is None:  # the image was served from the cache; only its label is new
                image_facts, entry = known[image]
                image_record, image_key = entry[1], entry[0]
            else:
                image_facts = ImageFacts.from_record(image, image_record, self.perceptual, CHECKS)
            label_facts = LabelFacts.from_record(task[1], label_record, CHECKS)
            self.results[image] = (image_facts, label_facts)
            self.store.put(image, image_key, image_record, label_key, self._label_params(image_facts), label_record)
        self._digests(images, listed)
        return {image: self.results[image] for image in images}

    def _digests(self, images: list[str], listed: Counter) -> None:
        """Full SHA-1s for the files that could be copies of another listing (same size and fingerprint)."""
        alike = Counter()
        for image in images:
            facts = self.results[image][0]
            if facts.fingerprint:
                alike[facts.file_size, facts.fingerprint] += listed[image]
        for image in images:
            facts = self.results[image][0]
            if facts.fingerprint and not facts.digest and alike[facts.file_size, facts.fingerprint] > 1:
                try:
                    facts.digest, key = file_digest(image)
                except OSError:
                    continue  # it changed or vanished since it was inspected: no duplicate claim without bytes
                self.store.add_digest(image, key, facts.digest)

    def _fresh(self, image: str, image_facts: ImageFacts) -> None:
        """Results that are not worth caching (the image could not be read), through the same records."""
        label_file = label_path(image)
        label = inspect_label(label_file, self.nc, image_facts.width, image_facts.height, self.task) \
            if image_facts.found else LabelFacts(label_file)
        self.results[image] = (ImageFacts.from_record(image, image_facts.to_record(), self.perceptual, CHECKS),
                               LabelFacts.from_record(label_file, label.to_record(), CHECKS))

    def _label_params(self, image: ImageFacts) -> list:
        return [self.nc, image.width, image.height, self.task]

    def _served_image(self, image: str, entry: list, info: os.stat_result) -> ImageFacts | None:
        key, record = entry[0], entry[1]
        if record is None or key != stat_key(info):
            return None
        try:
            facts = ImageFacts.from_record(image, record, self.perceptual, CHECKS)
        except _MALFORMED:
            return None
        if not facts.found or (self.perceptual and facts.usable and not facts.hashed):  # checked without pixels
            return None
        return facts

    def _served_label(self, image: str, entry: list, image_facts: ImageFacts) -> LabelFacts | None:
        key, params, record = entry[2], entry[3], entry[4]
        if record is None or params != self._label_params(image_facts):
            return None
        label_file = label_path(image)
        info = _stat(label_file)
        current = MISSING if info is None and not os.path.lexists(label_file) else (
            stat_key(info) if info is not None and stat.S_ISREG(info.st_mode) else None)
        if current is None or key != current:
            return None
        try:
            return LabelFacts.from_record(label_file, record, CHECKS)
        except _MALFORMED:
            return None

    def _inspect(self, tasks: list[tuple], total: int) -> Iterable[tuple[tuple, tuple]]:
        """(task, result) for every task, in a process pool when there are enough to gain from one."""
        if not tasks:
            return
        done = total - len(tasks)
        size = max(8, min(64, math.ceil(len(tasks) / (self.workers * 8))))  # small enough to end together
        chunks = [tasks[i:i + size] for i in range(0, len(tasks), size)]
        arguments = (self.nc, self.perceptual, self.task)
        if self.workers == 1 or len(tasks) < SERIAL_BELOW:
            outputs: Iterable = (probe_chunk(chunk, *arguments) for chunk in chunks)
            yield from self._collect(chunks, outputs, done, total)
            return
        try:
            with ProcessPoolExecutor(min(self.workers, len(chunks)), mp_context=_pool_context()) as pool:
                outputs = pool.map(probe_chunk, chunks, *(repeat(a) for a in arguments))
                yield from self._collect(chunks, outputs, done, total)
        except BrokenProcessPool as e:
            raise BracliError("a worker process died while reading images (a decoder crashed on a hostile file, or "
                              "memory ran out); run with --workers 1 to see which file") from e

    def _collect(self, chunks: list[list[tuple]], outputs: Iterable, done: int, total: int):
        for chunk, output in zip(chunks, outputs, strict=True):
            yield from zip(chunk, output, strict=True)
            done += len(chunk)
            if self.progress:
                self.progress(done, total)


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except (OSError, ValueError):  # ValueError: an embedded NUL byte in a listed path
        return None


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
        context.set_forkserver_preload(["bracli.dataset.probe"])
    return context


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
            if recursive:
                candidates.update(walk(folder, lambda name: name.endswith(".txt")).files)
            else:
                candidates.update(path for path in _listdir(folder) if path.endswith(".txt"))
    issues = []
    folders: dict[str, list[str]] = {}
    for candidate in sorted(candidates - expected - list_files):
        if os.path.basename(candidate) not in NOT_LABELS and not _has_image(candidate, folders):
            issues.append(Issue("label.orphan", candidate, None, "no image uses this label file; check for a renamed "
                                "or deleted image"))
    return issues


def _listdir(folder: str) -> list[str]:
    """Paths of the entries in ``folder`` whose names do not start with a dot (as glob lists them)."""
    try:
        with os.scandir(folder) as entries:
            return [e.path for e in entries if not e.name.startswith(".")]
    except OSError:
        return []


def _has_image(label_file: str, folders: dict[str, list[str]]) -> bool:
    """Whether an image file ``<stem>.*`` sits where training would look for this label's image."""
    labels, images = f"{os.sep}labels{os.sep}", f"{os.sep}images{os.sep}"
    stem = images.join(label_file.rsplit(labels, 1)).rsplit(".", 1)[0]
    folder = os.path.dirname(stem)
    if folder not in folders:
        folders[folder] = _listdir(folder)
    formats = image_extensions()
    return any(path.startswith(stem + ".") and extension(path) in formats for path in folders[folder])


def _display(path: str, root: Path) -> str:
    """Paths under the dataset root are shown relative to it; others stay absolute."""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path
