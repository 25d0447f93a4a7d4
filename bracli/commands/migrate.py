"""`bra migrate`: a checkpoint trained with the blog's patched ultralytics → one bracli loads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bracli import options
from bracli.errors import UsageError
from bracli.output import Output

NAME = "migrate"
EPILOG = "Example: bra migrate runs/detect/train/weights/best.pt --out best-bracli.pt"


def command(
    source: Annotated[Path, typer.Argument(metavar="SRC.pt", help="Checkpoint trained with BRA patched into "
                                           "ultralytics (the blog's way).")],
    out_path: options.OutRequired = None,
    json_out: options.JsonOut = None,
    force: options.Force = False,
) -> None:
    """Convert a blog-trained checkpoint: legacy BRA layers become bracli's, everything else is kept.

    --out is required (never SRC itself). Nothing in SRC runs: it is read with restricted loading.
    """
    out = Output(json_out, force=force)
    if out_path is None:
        raise UsageError("--out is required: where to write the converted checkpoint (never SRC itself)")
    if out_path.suffix.lower() != ".pt":  # checked again by the library; here before torch is imported
        raise UsageError(f"--out {out_path.name}: the migrated checkpoint must end in .pt (bra val, predict and "
                         "train load .pt files; export it afterwards with bra export)")

    from bracli.engine.setup import setup

    setup()
    from bracli.engine import migrate

    with out.library_output():
        result = migrate.migrate(source, out_path, force=force)
    out.info(result.summary())
    out.ok(f"wrote {result.out} — it loads with YOLO('{result.out}') wherever bracli is installed, and with "
           "bra val/predict/export and bra train --weights")
    out.emit(result)
