"""`bra val`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bracli import options
from bracli.output import Output

NAME = "val"
EPILOG = "Example: bra val runs/detect/train/weights/best.pt --data data.yaml --conf 0.001 --json metrics.json"
OWN_EXTRAS = {"imgsz": "--imgsz", "batch": "--batch", "device": "--device", "split": "--split", "conf": "--conf",
              "iou": "--iou"}


def command(
    weights: Annotated[Path, typer.Argument(help="Checkpoint to validate (.pt).")],
    extra: Annotated[list[str] | None, typer.Argument(metavar="[KEY=VALUE]...",
                                                      help="Any ultralytics val argument.")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="data.yaml (default: the one the checkpoint was "
                                              "trained on, if it exists here).", show_default=False)] = None,
    imgsz: options.ImgszOrDefault = None,
    batch: options.Batch = 16,
    device: options.Device = None,
    split: Annotated[str, typer.Option("--split", help="val or test.")] = "val",
    conf: options.Conf = None,
    iou: options.Iou = None,
    project: options.Project = None,
    allow_download: options.AllowDownload = False,
    trust_checkpoint: options.TrustCheckpoint = False,
    json_out: options.JsonOut = None,
    force: options.Force = False,
) -> None:
    """Validate weights: mAP50, mAP50-95, precision, recall, overall and per class."""
    out = Output(json_out, force=force)
    _, extra_pairs = options.split_positionals(extra, 0, "extra paths")
    extras = options.parse_extras(extra_pairs, OWN_EXTRAS)
    imgsz = options.imgsz(imgsz, notice=out.warn) if imgsz is not None else None
    device = options.device(device)

    from bracli.engine.setup import setup

    setup(trust_checkpoints=options.trust_checkpoints(trust_checkpoint))
    from bracli.engine import val

    with out.library_output():
        result = val.val(weights, data, imgsz=imgsz, batch=batch, device=device, split=split, conf=conf, iou=iou,
                         project=project, allow_download=allow_download, extras=extras)
    render(result, out)
    out.emit(result)


def render(result, out: Output) -> None:
    from rich.table import Table

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
    out.print(table)
    if "mask_mAP50" in m:
        out.info(f"masks: precision {m['mask_precision']:.3f}, recall {m['mask_recall']:.3f}, "
                 f"mAP50 {m['mask_mAP50']:.3f}, mAP50-95 {m['mask_mAP50-95']:.3f}")
    if result.save_dir:
        out.ok(f"results and plots: {result.save_dir}")
