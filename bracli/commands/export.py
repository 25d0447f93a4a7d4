"""`bra export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bracli import options
from bracli.errors import BracliError
from bracli.output import Output

NAME = "export"
EPILOG = "Example: bra export runs/detect/train/weights/best.pt --format onnx --dynamic"


def command(
    weights: Annotated[Path, typer.Argument(help="Checkpoint to export (.pt).")],
    format: Annotated[str, typer.Option("--format", help="onnx, torchscript or openvino.")] = "onnx",
    imgsz: options.Imgsz = 640,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Dynamic batch and image size (ONNX).")] = False,
    half: Annotated[bool, typer.Option("--half", help="FP16 weights (needs a GPU --device).")] = False,
    simplify: Annotated[bool | None, typer.Option("--simplify/--no-simplify", show_default=False,
                                                  help="Simplify the ONNX graph (ONNX only; default: on).")] = None,
    opset: Annotated[int | None, typer.Option("--opset", min=17, show_default=False,
                                              help="ONNX opset, 17 up to the newest the installed torch writes "
                                              "(ONNX only; default: ultralytics' choice).")] = None,
    device: options.Device = None,
    conf: options.Conf = None,
    iou: options.Iou = None,
    out_path: options.Out = None,
    trust_checkpoint: options.TrustCheckpoint = False,
    json_out: options.JsonOut = None,
    force: options.Force = False,
) -> None:
    """Export weights to ONNX/TorchScript/OpenVINO, then check the export matches torch.

    The export goes next to the weights (best.onnx, best.torchscript, best_openvino_model/) unless --out says
    otherwise; --conf/--iou set the NMS of the detection-agreement check.
    """
    out = Output(json_out, force=force)
    imgsz = options.imgsz(imgsz, notice=out.warn)
    device = options.device(device)

    from bracli.engine.setup import setup

    setup(trust_checkpoints=options.trust_checkpoints(trust_checkpoint))
    from bracli.engine import export

    with out.library_output():
        result = export.export(weights, format=format, imgsz=imgsz, dynamic=dynamic, half=half, simplify=simplify,
                               opset=opset, device=device, out=out_path, force=force, conf=conf, iou=iou)
    render(result, out)
    out.emit(result)
    if not result.ok:
        raise BracliError(f"the {result.format} export does not match the torch model (tolerance "
                          f"{result.tolerance:g} × output scale); it was written to {result.path} — do not deploy it")


def render(result, out: Output) -> None:
    from rich.table import Table

    table = Table(title=f"parity: {result.format} vs torch on {Path(result.image).name}, letterboxed",
                  title_justify="left")
    for column in ("input h×w", "max |Δ|", "allowed", "detections torch", "detections export", "agree"):
        table.add_column(column, justify="right")
    for p in result.parity:
        allowed = result.tolerance * p.scale
        table.add_row(f"{p.imgsz[0]}×{p.imgsz[1]}", f"{p.max_abs_diff:.2e}", f"{allowed:.2e}",
                      str(p.detections_torch), str(p.detections_export),
                      "[green]yes[/]" if p.detections_agree else "[red]no[/]")
    out.print(table)
    if result.ok:
        out.ok(f"exported {result.path}")
