"""`bra val`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bracli.commands import _shared as opt

NAME = "val"
EPILOG = "Example: bra val runs/detect/train/weights/best.pt --data data.yaml --json metrics.json"


def command(
    weights: Annotated[Path, typer.Argument(help="Checkpoint to validate (.pt).")],
    extra: Annotated[list[str] | None, typer.Argument(metavar="[KEY=VALUE]...",
                                                      help="Any ultralytics val argument.")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="data.yaml (default: the one the checkpoint was "
                                              "trained on, if it exists here).")] = None,
    imgsz: Annotated[int | None, typer.Option("--imgsz", help="Input size (default: the training size).")] = None,
    batch: opt.Batch = 16,
    device: opt.Device = None,
    split: Annotated[str, typer.Option("--split", help="val or test.")] = "val",
    project: opt.Project = None,
    allow_download: opt.AllowDownload = False,
    json_out: opt.JsonOut = None,
    force: opt.Force = False,
) -> None:
    """Validate weights: mAP50, mAP50-95, precision, recall, overall and per class."""
    from bracli.errors import UsageError
    _, extra_pairs = opt.split_positionals(extra, 0, "extra paths")
    if split not in ("val", "test"):
        raise UsageError(f"--split must be val or test, not {split!r}")
    opt.check_json_target(json_out, force)
    from bracli.engine import lifecycle

    extras = lifecycle.parse_extras(extra_pairs)
    result = lifecycle.val(weights, data, imgsz=opt.rounded_imgsz(imgsz) if imgsz else None, batch=batch,
                           device=device, split=split, project=project, allow_download=allow_download,
                           extras=extras)
    _render(result)
    opt.emit_json(json_out, result.to_dict(), force)


def _render(result) -> None:
    from rich.table import Table

    from bracli.ui import console, success

    table = Table(title=f"{Path(result.weights).name} on {Path(result.data).name}", title_justify="left")
    for column in ("class", "images", "instances", "precision", "recall", "mAP50", "mAP50-95"):
        table.add_column(column, justify="left" if column == "class" else "right")
    m = result.metrics
    table.add_row("[bold]all[/]", "", str(sum(c.instances for c in result.per_class)),
                  *(f"[bold]{m.get(k, float('nan')):.3f}[/]" for k in ("precision", "recall", "mAP50", "mAP50-95")),
                  end_section=True)
    for c in result.per_class:
        table.add_row(c.name, str(c.images), str(c.instances), f"{c.precision:.3f}", f"{c.recall:.3f}",
                      f"{c.mAP50:.3f}", f"{c.mAP50_95:.3f}")
    console.print(table)
    success(f"results and plots: {result.save_dir}")
