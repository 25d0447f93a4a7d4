"""What BRA costs inside a detector: YOLOv8 + BRA against vanilla YOLOv8 of the same scale (CPU or GPU).

Two measurements per input size and batch:

- ``infer``: eval mode, Conv+BN fused (what ``predict`` and ``val`` run), ``torch.inference_mode``.
- ``train``: one training step — train-mode forward, ultralytics' detection loss on random boxes,
  backward, SGD step — under ultralytics' default deterministic mode.

Variants take turns in every round, so load from other processes hits all of them alike. Each ratio
is the median over rounds of (variant ÷ vanilla) within the round; the milliseconds are medians.

Models are rendered with ``bracli.templates.render``: ``recommended`` is the default render (the
``bracli`` preset: ``n_win`` 10, a head per 32 channels, ``region_size`` auto = ``⌈640 / (stride · n_win)⌉``,
so the grid is ``n_win`` up to a 640 input and grows beyond it), the others change one thing at a time.

Run: ``.venv/bin/python benchmarks/detector_bench.py`` (``--help`` for sizes, batches, variants).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bra_bench import cpu_name  # noqa: E402  (this folder is on sys.path when a script here runs)

from bracli import templates  # noqa: E402
from bracli.engine import models  # noqa: E402  (registers BRA with ultralytics)

VARIANTS: dict[str, dict[str, Any] | None] = {  # render options over the default (bracli) preset
    "vanilla": None,
    "recommended": {},  # what `bra init` renders by default
    "per32-n10": {"n_win": 10},  # the same model, named for the tables of the defaults study
    "per32-n8": {"n_win": 8},
    "per32-fixed": {"n_win": 8, "region_size": "none"},
    "heads8": {"preset": "blog", "n_win": 8},  # the render defaults before the bracli preset
    "blog": {"preset": "blog"},  # the widely copied YOLOv8 + BiFormer blog: n_win 7, 8 heads, fixed grid
}


def bra_model(scale: str, placements: list[str], options: dict[str, Any] | None) -> dict[str, Any]:
    """A rendered model dict; ``options`` None gives vanilla YOLOv8."""
    return templates.render(scale, [] if options is None else placements, **(options or {}))


def describe(options: dict[str, Any] | None) -> str:
    return "YOLOv8 without BRA" if options is None else f"render options {options}" if options else "the default render"


def detector(scale: str, placements: list[str], options: dict[str, Any] | None, mode: str) -> nn.Module:
    model = models.build(bra_model(scale, placements, options))
    if mode == "infer":
        model = model.fuse(verbose=False).eval()
    else:
        from ultralytics.cfg import get_cfg

        model.args = get_cfg()  # the loss reads its gains (box, cls, dfl) from here
        model.train()
    return model


def random_targets(batch: int, per_image: int, nc: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Boxes in ultralytics' batch layout: normalised xywh, class, image index."""
    generator = torch.Generator().manual_seed(0)
    count = batch * per_image
    centres = torch.rand(count, 2, generator=generator) * 0.8 + 0.1
    sizes = torch.rand(count, 2, generator=generator) * 0.15 + 0.05
    return {"batch_idx": torch.arange(batch).repeat_interleave(per_image).float().to(device),
            "cls": torch.randint(0, nc, (count, 1), generator=generator).float().to(device),
            "bboxes": torch.cat([centres, sizes], 1).to(device)}


def step_fn(model: nn.Module, mode: str, x: torch.Tensor) -> Callable[[], None]:
    if mode == "infer":
        def infer() -> None:
            with torch.inference_mode():
                model(x)
        return infer
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.937, nesterov=True)
    batch = {"img": x, **random_targets(x.shape[0], 8, model.model[-1].nc, x.device)}

    def train() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss, _ = model.loss(batch)
        loss.sum().backward()
        optimizer.step()
    return train


def deterministic_like_ultralytics() -> None:
    """What ultralytics' trainer sets up by default (``init_seeds(deterministic=True)``)."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.utils.deterministic.fill_uninitialized_memory = False  # it skips the NaN fill of every new tensor


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args: argparse.Namespace, mode: str, size: int, batch: int) -> dict[str, Any]:
    device = torch.device(args.device)
    x = torch.rand(batch, 3, size, size, device=device)
    steps = {}
    for name in args.variants:
        model = detector(args.scale, args.placements, VARIANTS[name], mode).to(device)
        steps[name] = step_fn(model, mode, x)
    for step in steps.values():  # warm-up: allocator, kernel choice, optimizer state
        for _ in range(args.warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            times[name].append(time.perf_counter() - start)
    base = times[args.variants[0]]
    row = {"mode": mode, "size": size, "batch": batch, "load_average": os.getloadavg()[0]}
    for name, rounds in times.items():
        row[name] = {"median_ms": 1e3 * statistics.median(rounds), "min_ms": 1e3 * min(rounds),
                     "ratio": statistics.median(t / b for t, b in zip(rounds, base, strict=True)),
                     "rounds_ms": [1e3 * t for t in rounds]}
    return row


def table(rows: list[dict[str, Any]], names: list[str]) -> str:
    head = ["mode", "input", "batch"] + [f"{name} ms" for name in names] + [f"{name} ×" for name in names[1:]]
    head.append("load")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["mode"], str(row["size"]), str(row["batch"])]
        cells += [f"{row[name]['median_ms']:.0f}" for name in names]
        cells += [f"**{row[name]['ratio']:.2f}×**" for name in names[1:]]
        cells.append(f"{row['load_average']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="n", choices=templates.SCALES)
    parser.add_argument("--placements", nargs="+", default=["p3"])
    parser.add_argument("--variants", nargs="+", default=["vanilla", "recommended", "per32-n8", "heads8", "blog"],
                        choices=VARIANTS,
                        help="the first is the baseline of the ratios")
    parser.add_argument("--modes", nargs="+", default=["infer", "train"], choices=["infer", "train"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[640, 1280])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--train-sizes", type=int, nargs="+", default=[640], help="sizes for the training step")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_name()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {args.device} ({device_name}), torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}, scale {args.scale}, "
          f"BRA after {','.join(args.placements)}", flush=True)
    for name in args.variants:
        print(f"#   {name}: {describe(VARIANTS[name])}")
    rows = []
    for mode in args.modes:
        if mode == "infer":
            jobs = [(size, batch) for size in args.sizes for batch in args.batches]
        else:
            jobs = [(size, args.train_batch) for size in args.train_sizes]
            deterministic_like_ultralytics()
        for size, batch in jobs:
            rows.append(measure(args, mode, size, batch))
            print(table(rows[-1:], args.variants).splitlines()[-1], flush=True)
        torch.use_deterministic_algorithms(False)
    print("\n" + table(rows, args.variants))
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "device_name": device_name, "torch": torch.__version__,
                                         "threads": torch.get_num_threads(), "variants": {
                                             name: VARIANTS[name] for name in args.variants}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
