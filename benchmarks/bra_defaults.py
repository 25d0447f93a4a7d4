"""Evidence for BRA's render defaults: detection quality of each candidate on the built-in sample data.

For every candidate (the variants of ``detector_bench.py``) and seed: render YOLOv8n + BRA after P3,
train it from scratch on the seeded sample dataset (``bracli.engine.lifecycle.train``), and record
the final validation mAP50 and mAP50-95. A second, cheaper proxy for what routing gives up: on the
validation images, how far the trained P3 layer's attention output is from global attention with
the same weights (``topk`` = all regions): the cosine similarity of the two (LCE left out; 1 = same).

Latency of the same candidates comes from ``detector_bench.py``; ``docs/bra.md`` puts both in one table.

Run: ``.venv/bin/python benchmarks/bra_defaults.py --json defaults.json`` (about an hour on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from detector_bench import VARIANTS, bra_model, describe  # noqa: E402

from bracli import templates  # noqa: E402
from bracli.dataset.sample import write_sample  # noqa: E402
from bracli.engine import lifecycle, models  # noqa: E402
from bracli.nn import BiLevelRoutingAttention  # noqa: E402

CANDIDATES = ["vanilla", "heads8", "per32-fixed", "per32-n10"]  # names of detector_bench.VARIANTS


def train_one(name: str, seed: int, data: Path, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    model = bra_model("n", ["p3"], VARIANTS[name])
    path = workdir / f"{name}-s{seed}" / templates.model_filename("n", [] if VARIANTS[name] is None else ["p3"])
    path.parent.mkdir(parents=True)
    path.write_text(templates.to_yaml(model, f"bra_defaults candidate {name}"), encoding="utf-8")
    start = time.perf_counter()
    result = lifecycle.train(data, lifecycle.ModelChoice(path=path), epochs=args.epochs, imgsz=args.imgsz,
                             batch=args.batch, device="cpu", workers=0, project=workdir / "runs",
                             name=f"{name}-s{seed}", seed=seed,
                             extras={"warmup_epochs": 1, "plots": False, "val": False, "verbose": False})
    row = {"candidate": name, "seed": seed, "train_s": time.perf_counter() - start, **result.metrics}
    if VARIANTS[name] is not None and result.best is not None:
        row["attention_vs_global"] = agreement(result.best, data, args.imgsz)
    return row


def val_images(data: Path, imgsz: int) -> torch.Tensor:
    folder = data.parent / "images" / "val"
    arrays = [np.asarray(Image.open(p).convert("RGB").resize((imgsz, imgsz)), dtype=np.float32) / 255
              for p in sorted(folder.iterdir())]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def agreement(weights: Path, data: Path, imgsz: int) -> float:
    """Mean cosine similarity of the routed attention output and global attention's, on val images."""
    model = models.load(weights).eval()
    layer = next(m for m in model.modules() if isinstance(m, BiLevelRoutingAttention))
    inputs: list[torch.Tensor] = []
    handle = layer.register_forward_pre_hook(lambda _m, args: inputs.append(args[0]))
    model(val_images(data, imgsz))
    handle.remove()
    x = inputs[0]
    topk, lepe = layer.topk, layer.lepe
    bias = layer.wo.bias.view(1, -1, 1, 1)
    try:
        layer.lepe = None  # compare the attention term only: W_o · attention
        routed = layer(x) - bias
        layer.topk = layer.n_win ** 2
        full = layer(x) - bias
    finally:
        layer.topk, layer.lepe = topk, lepe
    return float(torch.nn.functional.cosine_similarity(routed.flatten(1), full.flatten(1)).mean())


def summary(rows: list[dict[str, Any]]) -> str:
    lines = ["| candidate | options | mAP50 mean ± sd | mAP50-95 mean ± sd | cos(attention, global) | runs |",
             "|---|---|---|---|---|---|"]
    for name in dict.fromkeys(row["candidate"] for row in rows):
        mine = [row for row in rows if row["candidate"] == name]

        def stat(key: str, mine=mine) -> str:
            values = [row[key] for row in mine if key in row]
            if not values:
                return "–"
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):.3f} ± {spread:.3f}"

        lines.append(f"| {name} | {describe(VARIANTS[name])} | {stat('mAP50')} | {stat('mAP50-95')} | "
                     f"{stat('attention_vs_global')} | {len(mine)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", nargs="+", default=CANDIDATES, choices=VARIANTS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--n-val", type=int, default=120, help="validation images in the generated sample")
    parser.add_argument("--json", type=Path, default=None,
                        help="results file; runs it already holds (same candidate and seed) are kept, not repeated")
    args = parser.parse_args(argv)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}; {args.epochs} epochs at {args.imgsz}, batch {args.batch}",
          flush=True)
    rows: list[dict[str, Any]] = json.loads(args.json.read_text())["rows"] if args.json and args.json.exists() else []
    done = {(row["candidate"], row["seed"]) for row in rows}
    with tempfile.TemporaryDirectory(prefix="bra-defaults-") as tmp:
        workdir = Path(tmp)
        data = write_sample(workdir / "sample", n_val=args.n_val)
        for seed in args.seeds:  # seeds outermost: a stopped run still has every candidate at equal count
            for name in args.candidates:
                if (name, seed) in done:
                    continue
                rows.append(train_one(name, seed, data, workdir, args))
                print(json.dumps(rows[-1]), flush=True)
                if args.json:
                    args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                     "rows": rows}, indent=1))
    print("\n" + summary(rows))


if __name__ == "__main__":
    main()
