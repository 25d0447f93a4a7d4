"""`bra ablate`: does BRA help on my data, and after which layer? Train each variant alike, then one table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bracli import options
from bracli.errors import BracliError, UsageError
from bracli.output import Output

if TYPE_CHECKING:
    from bracli.ablation.report import AblationReport, Row

NAME = "ablate"
EPILOG = ("Example: bra ablate data.yaml --bra-after none --bra-after p3 --bra-after p3,p4,p5 --epochs 50 "
          "--device 0,1,2,3   ·  The table again: bra ablate --report runs/ablate/data")
OWN_EXTRAS = {"epochs": "--epochs", "imgsz": "--imgsz", "batch": "--batch", "device": "--device",
              "workers": "--workers", "seed": "--seed"}
# What --report has no use for: it reads a finished folder's records and trains nothing.
NOT_WITH_REPORT = ("bra_after", "family", "task", "scale", "preset", "n_win", "topk", "heads", "side_dwconv",
                   "qk_dim", "region_size", "weights", "epochs", "imgsz", "batch", "device", "workers", "seed",
                   "project", "name", "trust_checkpoint")


def command(
    ctx: typer.Context,
    args: Annotated[list[str] | None, typer.Argument(
        metavar="[DATA] [KEY=VALUE]...",
        help="data.yaml (default: the built-in sample dataset), then any ultralytics training argument as "
        "key=value; every variant gets the same.")] = None,
    bra_after: options.BraAfterVariants = None,
    family: options.FamilyList = None,
    task: options.TaskList = None,
    scale: options.ScaleList = None,
    preset: options.PresetList = None,
    n_win: options.NWinList = None,
    topk: options.TopkList = None,
    heads: options.HeadsList = None,
    side_dwconv: options.SideDwconv = None,
    qk_dim: options.QkDim = None,
    region_size: options.RegionSize = None,
    weights: Annotated[Path | None, typer.Option("--weights", help="Local checkpoint every variant starts from "
                                                  "(weights move across inserted layers).",
                                                  show_default=False)] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 50,
    imgsz: options.Imgsz = 640,
    batch: options.Batch = 16,
    device: options.Device = None,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Dataloader workers (forced to 0 on CPU).")] = 8,
    seed: options.Seed = 0,
    project: options.Project = None,
    name: options.Name = None,
    report: Annotated[Path | None, typer.Option("--report", metavar="FOLDER", help="Print the table of an "
                                                "ablation folder from its records alone; trains nothing.",
                                                show_default=False)] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Draw mAP50-95 against GFLOPs and latency (PNG).",
                                              show_default=False)] = None,
    trust_checkpoint: options.TrustCheckpoint = False,
    json_out: options.JsonOut = None,
    force: options.Force = False,
) -> None:
    """Train variants alike (BRA placements, scales, families, BRA options) and compare them in one table.

    The ablation folder is --project (default ./runs/ablate) / --name (default: the data file's name). Re-running
    the same command skips finished variants and resumes an interrupted one; with several --device GPUs the
    variants run in parallel, one per GPU.
    """
    out = Output(json_out, force=force)
    if plot is not None:
        options.check_png(plot)
        from bracli.files import check_writable

        check_writable(plot, force)
    if report is not None:
        options.refuse_given(ctx, NOT_WITH_REPORT, "--report reads a finished folder and trains nothing; drop {flags}")
        if args:
            raise UsageError("--report reads a finished folder; drop the data and extras")
        from bracli.ablation.report import read_report

        _finish(read_report(report), out, plot, force)
        return

    paths, extra_pairs = options.split_positionals(args, 1, "data file")
    extras = options.parse_extras(extra_pairs, OWN_EXTRAS)
    imgsz = options.imgsz(imgsz, notice=out.warn)
    device = options.device(device)
    options.check_region_size(region_size)
    options.check_bra_bounds(n_win=n_win, topk=topk, heads=heads, side_dwconv=side_dwconv, qk_dim=qk_dim)
    from bracli.ablation import plan

    variants = plan.expand(bra_after, families=family, tasks=task, scales=scale, presets=preset, n_win=n_win,
                           topk=topk, heads=heads, side_dwconv=side_dwconv, qk_dim=qk_dim, region_size=region_size)
    if not any(variant.placements for variant in variants):
        options.refuse_given(ctx, options.BRA_OPTION_NAMES, "no variant has a BRA layer (--bra-after none); drop "
                             "{flags}")
    data = Path(paths[0]).expanduser().resolve() if paths else None
    if data is not None and not data.is_file():
        raise BracliError(f"data file not found: {data}")
    weights = weights.expanduser().resolve() if weights is not None else None
    if weights is not None and not weights.is_file():
        raise BracliError(f"weights file not found: {weights} (bracli never downloads weights)")
    settings = plan.Settings(data=str(data) if data else None, epochs=epochs, imgsz=imgsz, batch=batch, seed=seed,
                             weights=str(weights) if weights else None, extras=extras)
    folder = (Path(project).expanduser() if project else Path.cwd() / "runs" / "ablate") / (
        name or (data.stem if data else "sample"))
    plan.check_folder(folder.resolve(), settings, variants)

    from bracli.engine.setup import setup

    setup(trust_checkpoints=options.trust_checkpoints(trust_checkpoint))
    from bracli.engine import ablate
    from bracli.engine.devices import check_device

    check_device(device)
    devices = device.split(",") if device and device not in ("cpu", "mps") else [device]
    out.info(f"ablation folder: {folder} — {len(variants)} variant(s) on {_devices(devices)}")
    with _ProgressView(out, variants, settings.epochs) as view:
        result = ablate.run_ablation(folder, variants, settings, devices=devices, workers=workers,
                                     progress=view.update)
    _finish(result, out, plot, force)


def _devices(devices: list[str | None]) -> str:
    if len(devices) > 1:
        return f"GPUs {', '.join(devices)} (one variant per GPU at a time)"
    return {None: "the default device", "cpu": "the CPU", "mps": "the Apple GPU"}.get(devices[0], f"GPU {devices[0]}")


def _finish(result: AblationReport, out: Output, plot: Path | None, force: bool) -> None:
    _render(result, out)
    if plot is not None:
        from bracli.ablation.plot import plot_ablation

        out.wrote(plot_ablation(result, plot, force=force))
    out.emit(result)
    if result.failed:
        raise BracliError(f"{len(result.failed)} of {len(result.rows)} variant(s) failed (marked in the table); "
                          "the same command retries them")


class _ProgressView:
    """One line per variant: where it is (queued, epoch i/N, validating, …), redrawn as its record changes."""

    def __init__(self, out: Output, variants: list[Any], epochs: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        # bound to the stream of this moment: while a variant trains, ultralytics' output goes to its log
        console = Console(file=out.console.file, highlight=False)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                                 TextColumn("{task.fields[state]}"), TimeElapsedColumn(), console=console,
                                 redirect_stdout=False, redirect_stderr=False)
        self.tasks = {v.slug: self.progress.add_task(v.slug, total=epochs, state="queued", start=False)
                      for v in variants}

    def __enter__(self) -> _ProgressView:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, record: dict[str, Any]) -> None:
        task = self.tasks.get(record.get("slug"))
        if task is None:
            return
        status = record.get("status")
        epochs = int(record.get("epochs") or 1)
        epoch = min(int(record.get("epoch") or 0), epochs)
        where = f" on {record['device']}" if record.get("device") else ""
        state = {"queued": "queued", "training": f"training{where}", "validating": "validating",
                 "measuring": "measuring", "done": "done" if record.get("action") != "reused" else "done earlier",
                 "failed": f"[red]failed: {record.get('error')}[/]", "interrupted": "interrupted"}.get(status, status)
        if status != "queued":
            self.progress.start_task(task)
        self.progress.update(task, completed=epoch, total=epochs, state=state)
        if status in ("done", "failed", "interrupted"):
            self.progress.stop_task(task)


def _render(result: AblationReport, out: Output) -> None:
    from rich import box
    from rich.table import Table

    settings = result.settings
    data = settings.get("data") or "the built-in sample"
    table = Table(title=f"{result.folder} — {settings.get('epochs')} epochs at imgsz {settings.get('imgsz')}, batch "
                  f"{settings.get('batch')}, seed {settings.get('seed')}, data {data}", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("variant", min_width=max((len(row.slug) for row in result.rows), default=7))
    for column in ("mAP50", "mAP50-95", "params", "GFLOPs", "latency ms", "train"):  # a delta wraps below its value
        table.add_column(column, justify="right", min_width=8)
    table.add_column("status")
    for row in result.rows:
        table.add_row(row.slug, *_cells(row))
    out.print(table)
    baselines = sorted({row.baseline for row in result.rows if row.baseline})
    if baselines:
        out.print(f"[dim](Δ) against {', '.join(baselines)} (the plain model of the same family, task and scale): "
                  "mAP in points, cost relative.[/]")
    out.print(f"[dim]GFLOPs: one image at imgsz {settings.get('imgsz')}, multiply-add = 2, attention included. "
              "Latency: median batch-1 forward on the variant's device; the variants of one run take turns (how: "
              "latency.method in the JSON). Train: wall time of the training.[/]")
    for note in result.notes:
        out.warn(note)


def _cells(row: Row) -> list[str]:
    def with_delta(text: str, key: str, relative: bool) -> str:
        if key not in row.deltas:
            return text
        delta = row.deltas[key]
        return f"{text} ({delta:+.1%})" if relative else f"{text} ({delta:+.3f})"

    def number(value: float | None, fmt: str, key: str, relative: bool) -> str:
        return "—" if value is None else with_delta(format(value, fmt), key, relative)

    status = {"trained": "trained", "resumed": "resumed", "evaluated": "evaluated", "reused": "done earlier",
              "failed": "failed"}.get(row.action or "", row.status)
    if row.status == "failed":
        status = f"failed: {row.error}"
    elif row.status not in ("done",):
        status = f"{row.status} (epoch {row.epoch}/{row.epochs})"
    params = None if row.params is None else row.params / 1e6
    return [number(row.metrics.get("mAP50"), ".3f", "mAP50", False),
            number(row.metrics.get("mAP50-95"), ".3f", "mAP50-95", False),
            "—" if params is None else with_delta(f"{params:.2f}M", "params", True),
            number(row.gflops, ".2f", "gflops", True), number(row.latency_ms, ".1f", "latency_ms", True),
            _duration(row.train_seconds), status]


def _duration(seconds: float | None) -> str:
    if not seconds:
        return "—"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"
