"""`bra dataset check` and `bra dataset sample`."""

from __future__ import annotations

from pathlib import Path

import typer

from bracli import options
from bracli.dataset import DEFAULT_NEAR_DUP_THRESHOLD
from bracli.dataset.sample import DEFAULTS as SAMPLE
from bracli.dataset.sample import MAX_IMAGES as MAX_SAMPLE_IMAGES
from bracli.errors import UsageError
from bracli.files import probe_writable
from bracli.output import Output, stderr_console

app = typer.Typer(help="Inspect YOLO datasets, or write the built-in sample dataset.", no_args_is_help=True)

PROGRESS_FROM = 500  # images; smaller datasets finish before a progress bar is worth drawing


@app.command("check", epilog="Example: bra dataset check data.yaml --json report.json")
def check(
    data: Path = typer.Argument(..., metavar="DATA_YAML", help="The dataset's data.yaml (or the folder holding it)."),
    imgsz: options.Imgsz = 640,
    task: options.Task = "detect",
    strict: bool = typer.Option(False, "--strict", help="Exit 1 on warnings too, not only on errors."),
    plots: Path | None = typer.Option(None, "--plots", metavar="DIR", help="Write PNG plots of the dataset here."),
    near_dup_threshold: int = typer.Option(DEFAULT_NEAR_DUP_THRESHOLD, "--near-dup-threshold", metavar="BITS",
                                           help="Perceptual-hash bits (of 128) that may differ for a near-duplicate."),
    near_dups: bool = typer.Option(True, "--near-dups/--no-near-dups",
                                   help="Look for near-duplicate images (the only check that decodes pixels)."),
    workers: int | None = typer.Option(None, "--workers", min=1, show_default="all cores",
                                       help="Processes to use."),
    cache: bool = typer.Option(True, "--cache/--no-cache",
                               help="Reuse results of unchanged files from the last check (kept outside the dataset)."),
    examples: int = typer.Option(3, "--examples", min=0, help="Examples shown per check."),
    json_out: options.JsonOut = None,
    force: options.Force = False,
) -> None:
    """Find every problem in a YOLO dataset before training (read-only).

    --imgsz is the training size, for the small-box check; --task segment also checks polygons as masks.
    Exit code 0: no errors; 1: errors found (or warnings, with --strict); 2: bad usage.
    """
    from bracli.dataset.check import check as run_check
    from bracli.dataset.report import render

    out = Output(json_out, force=force)
    imgsz = options.imgsz(imgsz, notice=out.warn)
    if plots is not None:
        from bracli.dataset.plots import PLOT_NAMES, check_plots_writable

        check_plots_writable(plots, force)
        probe_writable(plots / PLOT_NAMES[0])
    with _ProgressBar(stderr_console) as progress:
        report = run_check(data, imgsz=imgsz, strict=strict,
                           near_dup_threshold=near_dup_threshold if near_dups else None, workers=workers,
                           progress=progress, task=task, cache=cache)
    render(report, out.console, examples=examples)
    out.emit(report)
    if plots is not None:
        from bracli.dataset.plots import write_plots

        for written in write_plots(report, plots, force=force):
            out.wrote(written, "plot")
    if report.exit_code:
        raise typer.Exit(report.exit_code)


class _ProgressBar:
    """A rich progress bar on stderr with images per second, started once a dataset is big enough to wait for.

    It refreshes when called rather than from a thread of its own: worker processes fork only from a
    single-threaded process (see ``check._pool_context``).
    """

    def __init__(self, console) -> None:
        self.console = console
        self.bar = None
        self.task = None
        self.first = 0  # images already done (cached) when the bar appeared

    def __enter__(self):
        return self.update

    def update(self, done: int, total: int) -> None:
        if self.bar is None:
            if total < PROGRESS_FROM or done >= total or not self.console.is_terminal:
                return
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("checking images"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=self.console,
                                transient=True, auto_refresh=False)
            self.bar.start()
            self.task = self.bar.add_task("check", total=total, completed=done, rate="")
            self.first = done
        task = self.bar.tasks[0]
        elapsed = task.elapsed or 0.0
        rate = f"{(done - self.first) / elapsed:,.0f} images/s" if elapsed > 0.2 and done > self.first else ""
        self.bar.update(self.task, completed=done, rate=rate, refresh=True)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


@app.command("sample", epilog="Example: bra dataset sample ./shapes")
def sample(
    out_dir: Path = typer.Argument(..., metavar="OUT_DIR",
                                   help="Folder to write the dataset into (created; must be empty)."),
    seed: options.Seed = SAMPLE["seed"],
    n_train: int = typer.Option(SAMPLE["n_train"], "--n-train", min=1, max=MAX_SAMPLE_IMAGES, help="Training images."),
    n_val: int = typer.Option(SAMPLE["n_val"], "--n-val", min=1, max=MAX_SAMPLE_IMAGES, help="Validation images."),
    imgsz: options.Imgsz = SAMPLE["imgsz"],
    task: options.Task = "detect",
    force: options.Force = False,
) -> None:
    """Write the small built-in sample dataset (seeded shapes, train/val, data.yaml).

    --imgsz is the side of the generated square images; --task segment writes polygon labels for the same
    images; --force writes into a non-empty folder, replacing its images/, labels/ and data.yaml.
    """
    from bracli.dataset.sample import CLASS_NAMES, write_sample

    out = Output()
    imgsz = options.imgsz(imgsz, notice=out.warn)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} is a file; give a folder for the dataset")
    data_yaml = write_sample(out_dir, seed=seed, n_train=n_train, n_val=n_val, imgsz=imgsz, force=force, task=task)
    out.ok(f"sample dataset written: {n_train} train + {n_val} val images of {imgsz} px, "
           f"{len(CLASS_NAMES)} classes ({', '.join(CLASS_NAMES)})")
    out.ok(f"next: bra dataset check {data_yaml}   or   bra train {data_yaml}")
