"""`bra train`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from bracli import options
from bracli.engine import distributed  # reads torchrun's environment; imports neither torch nor ultralytics
from bracli.errors import BracliError, UsageError
from bracli.output import Output

NAME = "train"
EPILOG = ("Example: bra train data.yaml --epochs 50 --scale s --bra-after p3,p4 --weights yolov8s.pt lr0=0.005  "
          "·  Resume: bra train --resume [runs/detect/train]")
OWN_EXTRAS = {"epochs": "--epochs", "imgsz": "--imgsz", "batch": "--batch", "device": "--device",
              "workers": "--workers", "seed": "--seed"}
# What a resumed run takes over from the command line: ultralytics' trainer (check_resume) applies these and
# keeps the checkpoint's value for every other argument: --imgsz, --batch, --workers and --device when given,
# and these extras.
RESUME_EXTRAS = ("close_mosaic", "augmentations", "save_period", "cache", "patience", "time", "freeze", "val",
                 "plots", "channels_last")
NOT_ON_RESUME = ("model", "weights", "epochs", "name", "seed", *options.RENDER_OPTION_NAMES)


def command(
    ctx: typer.Context,
    args: Annotated[list[str] | None, typer.Argument(
        metavar="[DATA] [KEY=VALUE]...",
        help="data.yaml (default: the built-in sample dataset), then any ultralytics argument as key=value.")] = None,
    model: Annotated[Path | None, typer.Option("--model", help="Model YAML or .pt to train (default: render "
                                                "--scale/--bra-after).", show_default=False)] = None,
    family: options.Family = "yolov8",
    task: options.Task = "detect",
    scale: options.Scale = None,
    bra_after: options.BraAfter = None,
    preset: options.Preset = "bracli",
    region_size: options.RegionSize = None,
    n_win: options.NWin = None,
    topk: options.Topk = None,
    heads: options.Heads = None,
    side_dwconv: options.SideDwconv = None,
    qk_dim: options.QkDim = None,
    weights: Annotated[Path | None, typer.Option("--weights", help="Local checkpoint to start from (vanilla "
                                                  "YOLO or BRA); weights move across inserted layers.",
                                                  show_default=False)] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 50,
    imgsz: options.Imgsz = 640,
    batch: options.Batch = 16,
    device: options.Device = None,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Dataloader workers (forced to 0 on CPU).")] = 8,
    project: options.Project = None,
    name: options.Name = None,
    seed: options.Seed = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run: the newest last.pt, or "
                                         "the checkpoint/run folder given as DATA.")] = False,
    allow_download: options.AllowDownload = False,
    trust_checkpoint: options.TrustCheckpoint = False,
    json_out: options.JsonOut = None,
    force: options.Force = False,
) -> None:
    """Train a BRA detector (built-in sample data by default). Under torchrun, on every node: see docs/train.md."""
    world = distributed.world()
    with _reported_once(world):
        out = Output(json_out if world.main else None, force=force)
        notice = out.warn if world.main else _quiet
        paths, extra_pairs = options.split_positionals(args, 2 if resume else 1, "data file")
        extras = options.parse_extras(extra_pairs, OWN_EXTRAS)
        bra = options.bra_options(preset, n_win=n_win, topk=topk, heads=heads, side_dwconv=side_dwconv,
                                  qk_dim=qk_dim, region_size=region_size)
        if resume:
            options.refuse_given(ctx, NOT_ON_RESUME, "--resume continues a run with its own settings; it does not "
                                 "take {flags} (it takes --imgsz, --batch, --device, --workers)")
            _check_resume_extras(extras)
            if _resume_arguments(paths)[0] is not True:
                options.refuse_given(ctx, ("project",), "--resume RUN names the run; {flags} only says where to "
                                     "look for the newest one when no RUN is given")
        if model:
            options.refuse_given(ctx, options.ARCHITECTURE_OPTION_NAMES, "--model takes the architecture from its "
                                 "file; drop {flags} or --model")
            if model.suffix.lower() == ".pt":
                options.refuse_given(ctx, ("scale",), "a checkpoint carries its scale; drop {flags}")
        imgsz = options.imgsz(imgsz, notice=notice)
        device = options.device(device)
        if resume:  # the device goes to the trainer as it does for a new run; these as the overrides resume applies
            taken = {"imgsz": imgsz, "batch": batch, "workers": workers}
            extras.update({key: value for key, value in taken.items() if options.given(ctx, key)})
        if not resume or options.given(ctx, "batch"):  # else the checkpoint's batch, checked by the trainer
            distributed.check_batch(batch, world)

        from bracli import templates

        templates.check_family(family)
        templates.check_task(task)
        placements = templates.parse_placements(bra_after or ["p3"], family, task)
        if not placements and model is None:
            options.refuse_given(ctx, options.BRA_OPTION_NAMES, "--bra-after none renders a model without a BRA "
                                 "layer; drop {flags}")
        if not resume and model is None:  # bad options fail before torch is imported
            templates.render(scale or "n", placements, family=family, task=task, **bra)

        from bracli.engine.setup import setup

        setup(trust_checkpoints=options.trust_checkpoints(trust_checkpoint))
        from bracli.engine import train

        with out.library_output():
            if resume:
                target, data = _resume_arguments(paths)
                result = train.train(data, resume=target, device=device, project=project,
                                     allow_download=allow_download, extras=extras, notice=notice)
            else:
                choice = train.ModelChoice(path=model, scale=scale, placements=tuple(placements), bra_options=bra,
                                           family=family, task=task)
                result = train.train(paths[0] if paths else None, choice, weights, epochs=epochs, imgsz=imgsz,
                                     batch=batch, device=device, workers=workers, project=project, name=name, seed=seed,
                                     allow_download=allow_download, extras=extras, notice=notice)
        if world.main:
            render(result, out)
            out.emit(result)


@contextlib.contextmanager
def _reported_once(world: distributed.World) -> Iterator[None]:
    """Under torchrun every rank runs this command: rank 0 prints the errors all ranks hit alike, the others
    print only their own, with their rank in front."""
    try:
        yield
    except BracliError as e:
        if world.main:
            raise
        if distributed.silent_here(e, world):
            distributed.step_aside(e)
            raise typer.Exit(e.exit_code) from None
        raise distributed.on_this_rank(e, world) from e


def _quiet(message: str) -> None:
    """Notices on ranks other than 0: rank 0 prints the same ones."""


def _check_resume_extras(extras: dict[str, str]) -> None:
    """Extras a resume would ignore (ultralytics keeps the checkpoint's value) are refused, not dropped."""
    ignored = [f"{key}=" for key in extras if key not in RESUME_EXTRAS]
    if ignored:
        raise UsageError(f"--resume continues a run with its own settings; it does not take {', '.join(ignored)} "
                         f"(of extras it takes {', '.join(k + '=' for k in RESUME_EXTRAS)})")


def _resume_arguments(paths: list[str]) -> tuple[str | bool, str | None]:
    """``--resume [RUN] [DATA]``: the run (a checkpoint or run folder; default the newest) and an optional data.yaml."""
    run = [p for p in paths if not p.lower().endswith((".yaml", ".yml"))]
    data = [p for p in paths if p.lower().endswith((".yaml", ".yml"))]
    if len(run) > 1 or len(data) > 1:
        raise UsageError(f"--resume takes a run (checkpoint or folder) and optionally its data.yaml, got {paths}")
    return (run[0] if run else True), (data[0] if data else None)


def render(result, out: Output) -> None:
    from bracli.output import metrics_table

    out.print()
    if result.transfer:
        out.info(f"weights: {result.transfer['summary']}")
    out.print(metrics_table(f"final metrics ({result.epochs} epochs, validation split)", result.metrics))
    out.ok(f"run folder: {result.run_dir}")
    if result.best:
        out.info(f"  best weights: {result.best}")
    if result.last:
        out.info(f"  last weights: {result.last}")
    out.info(f"  bracli options: {result.run_dir / 'bracli.yaml'}")
