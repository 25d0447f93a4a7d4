"""Benchmark `bra dataset check` against ultralytics' own label scan (its dataset cache build).

Generates a YOLO dataset (the sample generator at 640 px, 5,000 images by default, in parallel shards
listed by one data.yaml) in a temp folder, warms the page cache, then times in rounds, every variant
once per round in turn (so load from other processes hits them alike), each in a fresh process with
imports done before the clock starts:

- ultralytics: building ``YOLODataset`` for train and val with no label cache present — the scan every
  training run does on new data (``verify_image_label`` over a thread pool of its own sizing), through
  the real ultralytics code path (imported after bracli's set-up);
- bracli ``check()``, first run (empty per-file cache) and re-run (the cache from that first run), with
  the near-duplicate search (a reduced pixel decode per image) and without it (``--no-near-dups``:
  headers, bytes and labels only), on all usable cores; and the first runs on one worker, which shows
  how the work scales with cores.

Prints a table (median and best of the rounds) with ratios to ultralytics and of first run to re-run,
the load average before and after, and CPU seconds with an idle-machine estimate made from them (on a
machine shared with other jobs the wall clock measures the other jobs as much as these).

Run: ``python benchmarks/dataset_bench.py [--images 5000] [--data DIR] [--rounds 3] [--cold]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# variant name → (kind, options); "rerun" variants reuse the cache folder of the first run before them
VARIANTS = {
    "ultralytics label scan (cache build)": ("ultralytics", {}),
    "bra dataset check, first run": ("bra", {}),
    "bra dataset check, re-run (unchanged)": ("rerun", {}),
    "bra dataset check --no-near-dups, first run": ("bra", {"near_dup_threshold": None}),
    "bra dataset check --no-near-dups, re-run": ("rerun", {"near_dup_threshold": None}),
    "bra dataset check, first run, 1 worker": ("bra", {"workers": 1}),
    "bra dataset check --no-near-dups, first run, 1 worker": ("bra", {"workers": 1, "near_dup_threshold": None}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="images to generate (80%% train, 20%% val)")
    parser.add_argument("--imgsz", type=int, default=640, help="side of the generated images")
    parser.add_argument("--data", type=Path, help="reuse (or create) the dataset in this folder")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="drop the dataset's files from the page cache before "
                        "every run but the re-runs (posix_fadvise DONTNEED: clean pages only, no root needed)")
    parser.add_argument("--one", nargs=3, metavar=("KIND", "DATA_YAML", "OPTIONS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return _time_one(*args.one)

    with tempfile.TemporaryDirectory(prefix="bra-bench-") as scratch:
        data_yaml = _dataset(args.data or Path(scratch) / "data", args.images, args.imgsz)
        images = _count_images(data_yaml)
        _warm_page_cache(data_yaml.parent)
        load_before = os.getloadavg()
        timings, cpu_times = _run_rounds(data_yaml, args.rounds, Path(scratch), args.cold)
        load_after = os.getloadavg()
    _print_table(timings, cpu_times, images, args, load_before, load_after)


def _dataset(root: Path, images: int, imgsz: int) -> Path:
    """The sample generator in parallel shards (one seed each); data.yaml lists every shard's folders."""
    from concurrent.futures import ProcessPoolExecutor

    from bracli.dataset.check import usable_cpus
    from bracli.dataset.sample import CLASS_NAMES, write_sample

    data_yaml = root / "data.yaml"
    if data_yaml.is_file():
        return data_yaml
    shards = min(usable_cpus(), max(1, images // 100))
    sizes = [images // shards + (i < images % shards) for i in range(shards)]
    started = time.perf_counter()
    with ProcessPoolExecutor(shards) as pool:
        jobs = [pool.submit(write_sample, root / f"shard{i}", seed=i, n_train=n - n // 5, n_val=n // 5, imgsz=imgsz)
                for i, n in enumerate(sizes)]
        for job in jobs:
            job.result()
    folders = {split: "".join(f"  - shard{i}/images/{split}\n" for i in range(shards)) for split in ("train", "val")}
    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(CLASS_NAMES))
    data_yaml.write_text(f"train:\n{folders['train']}val:\n{folders['val']}names:\n{names}")
    print(f"generated {images} images in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return data_yaml


def _count_images(data_yaml: Path) -> int:
    from bracli.dataset.layout import load_layout

    return sum(len(split.images) for split in load_layout(data_yaml).splits.values())


def _warm_page_cache(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            path.read_bytes()


def _drop_page_cache(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _run_rounds(data_yaml: Path, rounds: int, scratch: Path, cold: bool
                ) -> tuple[dict[str, list[float]], dict[str, list[tuple[float, float]]]]:
    """Wall seconds and CPU seconds (the process, its worker processes) of every variant in every round."""
    timings: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu_times: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
    for round_number in range(rounds):
        cache_dir = None
        for name, (kind, options) in VARIANTS.items():
            if kind == "bra":
                cache_dir = scratch / f"cache-{round_number}-{len(timings[name])}-{abs(hash(name))}"
            env = {**os.environ, "BRA_CACHE_DIR": str(cache_dir or scratch / "unused")}
            if cold and kind != "rerun":
                _drop_page_cache(data_yaml.parent)
            result = subprocess.run([sys.executable, __file__, "--one", "bra" if kind == "rerun" else kind,
                                     str(data_yaml), repr(options)], capture_output=True, text=True, env=env)
            if result.returncode:
                raise SystemExit(f"{name} failed:\n{result.stderr}")
            wall, own, workers = (float(v) for v in result.stdout.strip().splitlines()[-1].split())
            timings[name].append(wall)
            cpu_times[name].append((own, workers))
            print(f"round {round_number + 1}: {name}: {wall:.3f} s (CPU s: {own:.2f} + workers {workers:.2f})",
                  file=sys.stderr)
    return timings, cpu_times


def _time_one(kind: str, data_yaml: str, options: str) -> None:
    """In a fresh process: import first, then time one scan; print the seconds."""
    import ast

    run = _ultralytics_scan(Path(data_yaml)) if kind == "ultralytics" else _bra_check(Path(data_yaml),
                                                                                   ast.literal_eval(options))
    import resource

    def cpu(who: int) -> float:  # user + system seconds of this process (threads included) or its reaped workers
        usage = resource.getrusage(who)
        return usage.ru_utime + usage.ru_stime

    started = time.perf_counter(), cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
    run()
    ended = time.perf_counter(), cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
    print(" ".join(f"{end - start:.6f}" for start, end in zip(started, ended, strict=True)))


def _bra_check(data_yaml: Path, options: dict):
    import PIL.Image  # noqa: F401 -- what the check imports lazily, imported before the clock as ultralytics' is
    import yaml  # noqa: F401

    from bracli.dataset.check import check

    def run() -> None:
        report = check(data_yaml, **options)
        if report.summary["errors"]:
            raise SystemExit(f"the generated dataset should be clean, got {report.summary}")

    return run


def _ultralytics_scan(data_yaml: Path):
    """A function that builds ultralytics' train and val datasets from scratch (label caches deleted first)."""
    from bracli.engine.setup import setup

    setup()
    os.environ["YOLO_VERBOSE"] = "False"
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    def scan() -> None:
        data = check_det_dataset(str(data_yaml))
        for cache in data_yaml.parent.glob("*/labels/*.cache"):
            cache.unlink()
        for split in ("train", "val"):
            YOLODataset(img_path=data[split], data=data, task="detect", imgsz=640, augment=False,
                        prefix=f"{split}: ")

    return scan


def _print_table(timings: dict[str, list[float]], cpu_times: dict[str, list[tuple[float, float]]], images: int,
                 args: argparse.Namespace, load_before: tuple[float, ...], load_after: tuple[float, ...]) -> None:
    """Wall-clock results, and an idle-machine estimate from CPU time for when other jobs share the cores.

    The estimate is the process's own CPU time plus its workers' CPU time shared over the workers
    (ultralytics' scan runs in one process); it assumes nothing else runs and ignores I/O waits.
    """
    import PIL

    from bracli.dataset.check import usable_cpus

    cores = usable_cpus()

    def estimate(name: str) -> float:
        kind, options = VARIANTS[name]
        workers = 1 if kind == "ultralytics" else options.get("workers") or cores
        return statistics.median(own + children / workers for own, children in cpu_times[name])

    names = list(timings)
    baseline, baseline_estimate = statistics.median(timings[names[0]]), estimate(names[0])
    cache = "cold (dropped before each run but the re-runs)" if args.cold else "warm"
    print(f"\n{images} generated {args.imgsz} px JPEG images (80/20 train/val), page cache {cache}; {args.rounds} "
          f"rounds, variants in turn, each in a fresh process (imports not timed). "
          f"{platform.processor() or platform.machine()}, {cores} usable of {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, Pillow {PIL.__version__}, {date.today()}. Load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after.\n")
    print("| run | median s | best s | images/s | vs ultralytics | first ÷ re-run | CPU s (own + workers) "
          "| idle estimate s | vs ultralytics (estimate) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    first = None
    for name in names:
        median, best = statistics.median(timings[name]), min(timings[name])
        own, children = (statistics.median(values) for values in zip(*cpu_times[name], strict=True))
        speedup = ""
        if "first run" in name and "1 worker" not in name:
            first = median
        elif "re-run" in name and first:
            speedup = f"{first / median:.1f}×"
        print(f"| {name} | {median:.3f} | {best:.3f} | {images / median:,.0f} | {baseline / median:.2f}× | {speedup} "
              f"| {own:.2f} + {children:.2f} | {estimate(name):.2f} | {baseline_estimate / estimate(name):.2f}× |")


if __name__ == "__main__":
    main()
