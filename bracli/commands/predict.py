"""`bra predict`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bracli.commands import _shared as opt

NAME = "predict"
EPILOG = "Example: bra predict imgs/ --model runs/detect/train/weights/best.pt --conf 0.4 --show"


def command(
    source: Annotated[str | None, typer.Argument(help="Image, folder, glob, video, camera index (0) or rtsp:// "
                                                 "stream (default: ultralytics' bundled sample images).")] = None,
    extra: Annotated[list[str] | None, typer.Argument(metavar="[KEY=VALUE]...",
                                                      help="Any ultralytics predict argument.")] = None,
    model: Annotated[Path | None, typer.Option("--model", help="Checkpoint (default: the newest best.pt under "
                                               "the runs folder).")] = None,
    show: Annotated[bool, typer.Option("--show", help="Open a window per result (saves instead when there is "
                                       "no display).")] = False,
    save: Annotated[bool, typer.Option("--save/--no-save", help="Save annotated images/videos.")] = True,
    conf: Annotated[float, typer.Option("--conf", min=0.0, max=1.0, help="Confidence threshold.")] = 0.25,
    iou: Annotated[float, typer.Option("--iou", min=0.0, max=1.0, help="NMS IoU threshold.")] = 0.7,
    imgsz: opt.Imgsz = 640,
    device: opt.Device = None,
    project: opt.Project = None,
    json_out: opt.JsonOut = None,
    force: opt.Force = False,
) -> None:
    """Detect objects in images, folders, videos or a camera."""
    _, extra_pairs = opt.split_positionals(extra, 0, "extra sources")
    if source and "=" in source and not Path(source).exists():
        extra_pairs.insert(0, source)
        source = None
    opt.check_json_target(json_out, force)
    from bracli.engine import lifecycle

    extras = lifecycle.parse_extras(extra_pairs)
    result = lifecycle.predict(source, model, show=show, save=save, conf=conf, iou=iou,
                               imgsz=opt.rounded_imgsz(imgsz), device=device, project=project, extras=extras)
    _render(result)
    opt.emit_json(json_out, result.to_dict(), force)


def _render(result) -> None:
    from rich.table import Table

    from bracli.ui import console, success, warn

    for note in result.notes:
        warn(note)
    classes = sorted({name for p in result.predictions for name in p.counts})
    table = Table(title=f"detections by {Path(result.weights).name}", title_justify="left")
    table.add_column("source")
    for name in classes:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right")
    shown = result.predictions[:50]
    for p in shown:
        table.add_row(Path(p.source).name, *(str(p.counts.get(c, 0)) for c in classes), str(sum(p.counts.values())))
    if len(result.predictions) > len(shown):
        table.add_row(f"… {len(result.predictions) - len(shown)} more", *([""] * (len(classes) + 1)))
    console.print(table)
    if result.save_dir:
        saved = [p.saved for p in result.predictions if p.saved]
        success(f"annotated results saved to {result.save_dir} ({len(saved) or 'video'} file(s))")
        for path in saved[:10]:
            console.print(f"  {path}")
