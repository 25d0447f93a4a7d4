"""`bra migrate`: a checkpoint trained with the blog's patched ultralytics → one bracli loads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bracli.commands import _shared as opt

NAME = "migrate"
EPILOG = "Example: bra migrate runs/detect/train/weights/best.pt --out best-bracli.pt"


def command(
    source: Annotated[Path, typer.Argument(metavar="SRC.pt", help="Checkpoint trained with BRA patched into "
                                           "ultralytics (the blog's way).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the converted checkpoint (never SRC).")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the result as JSON to this file, "
                                                  "or - for stdout.")] = None,
    force: opt.Force = False,
) -> None:
    """Convert a blog-trained checkpoint: legacy BRA layers become bracli's, everything else is kept."""
    to_stdout = json_out is not None and str(json_out) == "-"
    if json_out is not None and not to_stdout:
        from bracli.files import check_writable

        check_writable(json_out, force)
    from bracli.engine import migrate

    result = migrate.migrate(source, out, force=force)
    _render(result, to_stdout)
    if json_out is not None:
        from bracli.files import write_json

        write_json(json_out, result.to_dict(), force=force)


def _render(result, to_stdout: bool) -> None:
    from bracli.ui import console, err_console

    stream = err_console if to_stdout else console  # stdout carries the JSON then
    stream.print(result.summary(), soft_wrap=True)
    stream.print(f"[green]✔[/] wrote {result.out} — it loads with YOLO('{result.out}') wherever bracli is "
                 "installed, and with bra val/predict/export and bra train --weights", soft_wrap=True)
