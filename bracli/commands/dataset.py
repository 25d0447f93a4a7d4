"""`bra dataset check` and `bra dataset sample`."""

from __future__ import annotations

import typer

from bracli.errors import UsageError

app = typer.Typer(help="Inspect YOLO datasets, or write the built-in sample dataset.", no_args_is_help=True)


@app.command("check", epilog="Example: bra dataset check data.yaml --json report.json")
def check() -> None:
    """Find every problem in a YOLO detection dataset before training (read-only)."""
    raise UsageError("bra dataset check is not yet implemented")


@app.command("sample", epilog="Example: bra dataset sample ./shapes")
def sample() -> None:
    """Write the small built-in sample dataset (seeded shapes, train/val, data.yaml)."""
    raise UsageError("bra dataset sample is not yet implemented")
