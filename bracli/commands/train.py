"""`bra train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bracli.commands import _shared as opt
from bracli.errors import UsageError

NAME = "train"
EPILOG = ("Example: bra train data.yaml --epochs 50 --scale s --bra-after p3,p4 --weights yolov8s.pt lr0=0.005  "
          "·  Resume: bra train --resume [runs/detect/train/weights/last.pt]")


def command(
    args: Annotated[list[str] | None, typer.Argument(
        metavar="[DATA] [KEY=VALUE]...",
        help="data.yaml (default: the built-in sample dataset), then any ultralytics argument as key=value.")] = None,
    model: Annotated[Path | None, typer.Option("--model", help="Model YAML or .pt to train (default: render "
                                                "--scale/--bra-after).")] = None,
    scale: Annotated[str, typer.Option("--scale", help="n, s, m, l or x (when rendering).")] = "n",
    bra_after: Annotated[list[str] | None, typer.Option("--bra-after", help="Placements, repeatable or comma "
                                                         "separated (default p3).")] = None,
    n_win: Annotated[int | None, typer.Option("--n-win", help="BRA regions per side.")] = None,
    topk: Annotated[int | None, typer.Option("--topk", help="BRA routed regions per query region.")] = None,
    heads: Annotated[int | None, typer.Option("--heads", help="BRA attention heads.")] = None,
    side_dwconv: Annotated[int | None, typer.Option("--side-dwconv", help="BRA LCE kernel (odd, 0 = off).")] = None,
    qk_dim: Annotated[int | None, typer.Option("--qk-dim", help="BRA q/k channels (default = dim).")] = None,
    weights: Annotated[Path | None, typer.Option("--weights", help="Local checkpoint to start from (vanilla "
                                                  "YOLOv8 or BRA); weights move across inserted layers.")] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 50,
    imgsz: opt.Imgsz = 640,
    batch: opt.Batch = 16,
    device: opt.Device = None,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Dataloader workers (forced to 0 on CPU).")] = 8,
    project: opt.Project = None,
    name: Annotated[str | None, typer.Option("--name", help="Run name (default train, train-2, …).")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run: the newest last.pt, or "
                                         "the checkpoint/run folder given as DATA.")] = False,
    allow_download: opt.AllowDownload = False,
    json_out: opt.JsonOut = None,
    force: opt.Force = False,
) -> None:
    """Train a BRA detector (built-in sample data by default)."""
    paths, extra_pairs = opt.split_positionals(args, 1, "data file")
    bra_options = {k: v for k, v in {"n_win": n_win, "topk": topk, "heads": heads, "side_dwconv": side_dwconv,
                                     "qk_dim": qk_dim}.items() if v is not None}
    if model and (bra_after or bra_options):
        raise UsageError("--model takes the architecture from its file; drop --bra-after/--n-win/… or --model")
    opt.check_json_target(json_out, force)
    if resume and (model or weights or bra_after or bra_options):
        raise UsageError("--resume continues a run as it was; it takes no model or weights options")

    from bracli import templates

    placements = templates.parse_placements(bra_after or ["p3"])
    if not resume and model is None:
        templates.render(scale, placements, **bra_options)  # bad options fail before torch is imported

    from bracli.engine import lifecycle

    extras = lifecycle.parse_extras(extra_pairs)
    if resume:
        target = paths[0] if paths else True
        result = lifecycle.train(resume=target, device=device, project=project, extras=extras)
    else:
        choice = lifecycle.ModelChoice(path=model, scale=scale, placements=tuple(placements),
                                       bra_options=bra_options)
        result = lifecycle.train(paths[0] if paths else None, choice, weights, epochs=epochs,
                                 imgsz=opt.rounded_imgsz(imgsz), batch=batch, device=device, workers=workers,
                                 project=project, name=name, seed=seed, allow_download=allow_download, extras=extras)
    _render(result)
    opt.emit_json(json_out, result.to_dict(), force)


def _render(result) -> None:
    from bracli.commands._shared import metrics_table
    from bracli.ui import console, success

    console.print()
    if result.transfer:
        console.print(f"weights: {result.transfer['summary']}")
    console.print(metrics_table(f"final metrics ({result.epochs} epochs, validation split)", result.metrics))
    success(f"run folder: {result.run_dir}")
    if result.best:
        console.print(f"  best weights: {result.best}")
    if result.last:
        console.print(f"  last weights: {result.last}")
    console.print(f"  bracli options: {result.run_dir / 'bracli.yaml'}")
