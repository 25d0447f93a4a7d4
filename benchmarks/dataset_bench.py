"""Benchmark `bra dataset check` against ultralytics' own label scan (its dataset cache build).

Generates a YOLO dataset (the sample generator at 640 px, 5,000 images by default, in parallel shards
listed by one data.yaml) in a temp folder, warms the page cache, then times, each a few times (median
reported):

- ultralytics: building ``YOLODataset`` for train and val with no label cache present — the scan every
  training run does on new data (``verify_image_label`` over a thread pool of its own sizing), through
  the real ultralytics code path (imported after bracli's set-up);
- bracli: ``check()`` with the near-duplicate search (a reduced pixel decode per image), and without it
  (``near_dup_threshold=None``: headers, bytes and labels only), on all cores and on one.

Run: ``python benchmarks/dataset_bench.py [--images 5000] [--data DIR] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000, help="images to generate (80%% train, 20%% val)")
    parser.add_argument("--imgsz", type=int, default=640, help="side of the generated images")
    parser.add_argument("--data", type=Path, help="reuse (or create) the dataset in this folder")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bra-bench-") as scratch:
        root = args.data or Path(scratch) / "data"
        data_yaml = _dataset(root, args.images, args.imgsz)
        _warm_page_cache(root)
        timings = _run_all(data_yaml, args.repeat)
    _print_table(timings, args)


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


def _warm_page_cache(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            path.read_bytes()


def _run_all(data_yaml: Path, repeat: int) -> dict[str, list[float]]:
    from bracli.dataset.check import check, usable_cpus

    cores = usable_cpus()
    runs = {
        "ultralytics label scan (cache build)": _ultralytics_scan(data_yaml),
        f"bra dataset check, {cores} workers": lambda: check(data_yaml, workers=cores),
        f"bra dataset check --no-near-dups, {cores} workers": lambda: check(data_yaml, workers=cores,
                                                                            near_dup_threshold=None),
        "bra dataset check, 1 worker": lambda: check(data_yaml, workers=1),
        "bra dataset check --no-near-dups, 1 worker": lambda: check(data_yaml, workers=1, near_dup_threshold=None),
    }
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            started = time.perf_counter()
            result = run()
            timings[name].append(time.perf_counter() - started)
            if hasattr(result, "summary") and result.summary["errors"]:
                raise SystemExit(f"the generated dataset should be clean, got {result.summary}")
    return timings


def _ultralytics_scan(data_yaml: Path):
    """A function that builds ultralytics' train and val datasets from scratch (label caches deleted first).

    ultralytics is imported here, before any timing, so its import time is not counted.
    """
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


def _print_table(timings: dict[str, list[float]], args: argparse.Namespace) -> None:
    import PIL

    from bracli.dataset.check import usable_cpus

    baseline = statistics.median(next(iter(timings.values())))
    print(f"\n{args.images} generated {args.imgsz} px JPEG images (80/20 train/val), page cache warm; median of "
          f"{args.repeat} runs. {platform.processor() or platform.machine()}, {usable_cpus()} usable of "
          f"{os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, Pillow {PIL.__version__}, {date.today()}.\n")
    print("| run | seconds | images/s | vs ultralytics |")
    print("|---|---:|---:|---:|")
    for name, values in timings.items():
        seconds = statistics.median(values)
        print(f"| {name} | {seconds:.2f} | {args.images / seconds:,.0f} | {baseline / seconds:.2f}× |")


if __name__ == "__main__":
    main()
