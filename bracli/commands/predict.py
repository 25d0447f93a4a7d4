"""`bra predict`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from bracli import options
from bracli.errors import BracliError, UsageError
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
    routing: Annotated[bool, typer.Option("--routing", help="Also draw each BRA layer's routing per image (video: "
                                          "per frame read), into the predictions' routing/ folder.")] = False,
    routing_query: Annotated[str | None, typer.Option(
        "--routing-query", metavar="X,Y", help="Draw the routes of the region under this image pixel (implies "
        "--routing; default: under the top detection).", show_default=False)] = None,
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
    query = _point(routing_query) if routing_query is not None else None

    from bracli.engine.setup import setup

    setup(trust_checkpoints=options.trust_checkpoints(trust_checkpoint))
    from bracli.engine import predict

    with out.library_output():
        result = predict.predict(source, model, show=show, save=save, conf=conf, iou=iou, imgsz=imgsz,
                                 device=device, project=project, extras=extras, routing=routing,
                                 routing_query=query)
    render(result, out)
    out.emit(result)
    if result.unreadable:
        raise BracliError(f"{len(result.unreadable)} image(s) could not be read and were skipped (named above)")


def _point(text: str) -> tuple[float, float]:
    """``--routing-query X,Y``: a pixel of the image (x right, y down)."""
    parts = text.replace(" ", "").split(",")
    try:
        x, y = (float(p) for p in parts)
    except ValueError:
        raise UsageError(f"--routing-query '{text}' is not a point; write X,Y in image pixels, e.g. 320,240") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise UsageError(f"--routing-query '{text}': --routing-query takes finite pixel coordinates X,Y")
    if x < 0 or y < 0:
        raise UsageError(f"--routing-query '{text}' lies left of or above the image; pixels count from 0")
    return x, y


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
    pictures = [picture for p in result.predictions for picture in p.routing]
    if pictures:
        out.ok(f"routing pictures saved to {Path(pictures[0]).parent} ({len(pictures)} file(s): one per image "
               "and BRA layer)")
