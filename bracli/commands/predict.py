"""`bra predict`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bracli import options
from bracli.errors import BracliError
from bracli.output import Output

NAME = "predict"
EPILOG = "Example: bra predict imgs/ --model runs/detect/train/weights/best.pt --conf 0.4 --show"
OWN_EXTRAS = {"imgsz": "--imgsz", "device": "--device", "conf": "--conf", "iou": "--iou", "show": "--show",
              "save": "--save"}
SHOWN_ROWS = 50


def command(
    source: Annotated[str | None, typer.Argument(help="Image, folder, glob, video, camera index (0) or rtsp:// "
                                                 "stream (default: ultralytics' bundled sample images).",
                                                 show_default=False)] = None,
    extra: Annotated[list[str] | None, typer.Argument(metavar="[KEY=VALUE]...",
                                                      help="Any ultralytics predict argument.")] = None,
    model: Annotated[Path | None, typer.Option("--model", help="Checkpoint (default: the newest best.pt under "
                                               "the runs folder).", show_default=False)] = None,
    show: Annotated[bool, typer.Option("--show", help="Open a window per result (saves instead when no display "
                                       "answers).")] = False,
    save: Annotated[bool, typer.Option("--save/--no-save", help="Save annotated images/videos.")] = True,
    conf: options.Conf = None,
    iou: options.Iou = None,
    imgsz: options.Imgsz = 640,
    device: options.Device = None,
    project: options.Project = None,
    trust_checkpoint: options.TrustCheckpoint = False,
    json_out: options.JsonOut = None,
    force: options.Force = False,
) -> None:
    """Detect objects in images, folders, videos or a camera."""
    out = Output(json_out, force=force)
    _, extra_pairs = options.split_positionals(extra, 0, "extra sources")
    if source and "=" in source and not Path(source).exists():
        extra_pairs.insert(0, source)
        source = None
    extras = options.parse_extras(extra_pairs, OWN_EXTRAS)
    imgsz = options.imgsz(imgsz, notice=out.warn)
    device = options.device(device)

    from bracli.engine.setup import setup

    setup(trust_checkpoints=options.trust_checkpoints(trust_checkpoint))
    from bracli.engine import predict

    with out.library_output():
        result = predict.predict(source, model, show=show, save=save, conf=conf, iou=iou, imgsz=imgsz,
                                 device=device, project=project, extras=extras)
    render(result, out)
    out.emit(result)
    if result.unreadable:
        raise BracliError(f"{len(result.unreadable)} image(s) could not be read and were skipped (named above)")


def render(result, out: Output) -> None:
    from rich.table import Table

    for note in result.notes:
        out.warn(note)
    for image, why in result.unreadable.items():
        out.warn(f"cannot read image {image}: {why}")
    classes = sorted({name for p in result.predictions for name in p.counts})
    table = Table(title=f"detections by {Path(result.weights).name}", title_justify="left")
    table.add_column("source")
    for name in classes:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right")
    shown = result.predictions[:SHOWN_ROWS]
    for p in shown:
        table.add_row(Path(p.source).name, *(str(p.counts.get(c, 0)) for c in classes), str(sum(p.counts.values())))
    if len(result.predictions) > len(shown):
        table.add_row(f"… {len(result.predictions) - len(shown)} more", *([""] * (len(classes) + 1)))
    out.print(table)
    if result.save_dir:
        saved = [p.saved for p in result.predictions if p.saved]
        out.ok(f"annotated results saved to {result.save_dir} ({len(saved) or 'video'} file(s))")
        for path in saved[:10]:
            out.info(f"  {path}")
