"""Option types and renderers shared by several commands (no heavy imports here)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bracli.errors import UsageError

Imgsz = Annotated[int, typer.Option("--imgsz", help="Input size in pixels (rounded up to a multiple of 32).")]
Device = Annotated[str | None, typer.Option("--device", help="cpu, 0, 0,1 … (default: first GPU, else CPU).")]
Batch = Annotated[int, typer.Option("--batch", min=1, help="Images per batch.")]
Project = Annotated[Path | None, typer.Option("--project", help="Runs folder (default ./runs/detect).")]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Also write the result as JSON to this file.")]
Force = Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")]
AllowDownload = Annotated[bool, typer.Option(
    "--allow-download", help="Let ultralytics run the data.yaml 'download:' entry (it executes code).")]


def check_json_target(json_out: Path | None, force: bool) -> None:
    """Fail before any work when --json would overwrite a file.

    Commands that run ultralytics take a file only: its log lines go to stdout and would corrupt JSON there.
    """
    if json_out is None:
        return
    if str(json_out) == "-":
        raise UsageError("--json needs a file path here (ultralytics logs to stdout)")
    from bracli.files import check_writable

    check_writable(json_out, force)


def emit_json(json_out: Path | None, payload: dict, force: bool) -> None:
    if json_out:
        from bracli.files import write_json

        write_json(json_out, payload, force=force)


def split_positionals(values: list[str] | None, max_paths: int, what: str) -> tuple[list[str], list[str]]:
    """Separate ``key=value`` extras from plain positional paths."""
    paths, extras = [], []
    for value in values or []:
        (extras if "=" in value and not Path(value).exists() else paths).append(value)
    if len(paths) > max_paths:
        raise UsageError(f"expected at most {max_paths} {what}, got {', '.join(paths)}")
    return paths, extras


def rounded_imgsz(imgsz: int) -> int:
    """Round --imgsz up to the stride as ultralytics would, but say so on the console."""
    from bracli.engine.lifecycle import round_imgsz
    from bracli.ui import warn

    rounded = round_imgsz(imgsz)
    if rounded != imgsz:
        warn(f"--imgsz {imgsz} is not a multiple of the stride 32; using {rounded}")
    return rounded


def metrics_table(title: str, metrics: dict[str, float]) -> Table:
    table = Table(title=title, title_justify="left")
    for name in metrics:
        table.add_column(name, justify="right")
    table.add_row(*(f"{v:.3f}" for v in metrics.values()))
    return table
