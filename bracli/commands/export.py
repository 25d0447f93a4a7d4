"""`bra export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bracli.commands import _shared as opt

NAME = "export"
EPILOG = "Example: bra export runs/detect/train/weights/best.pt --format onnx --dynamic"


def command(
    weights: Annotated[Path, typer.Argument(help="Checkpoint to export (.pt).")],
    format: Annotated[str, typer.Option("--format", "-f", help="onnx, torchscript or openvino.")] = "onnx",
    imgsz: opt.Imgsz = 640,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Dynamic batch and image size (ONNX).")] = False,
    half: Annotated[bool, typer.Option("--half", help="FP16 weights (needs a GPU --device).")] = False,
    simplify: Annotated[bool, typer.Option("--simplify/--no-simplify", help="Simplify the ONNX graph.")] = True,
    opset: Annotated[int | None, typer.Option("--opset", min=17, help="ONNX opset (≥17).")] = None,
    device: opt.Device = None,
    json_out: opt.JsonOut = None,
    force: opt.Force = False,
) -> None:
    """Export weights to ONNX/TorchScript/OpenVINO, then check the export matches torch."""
    from bracli.errors import BracliError, UsageError
    if half and (device is None or device == "cpu"):
        raise UsageError("--half needs a GPU: pass --device 0 (FP16 export is not supported on CPU)")
    opt.check_json_target(json_out, force)
    from bracli.engine import lifecycle

    result = lifecycle.export(weights, format=format, imgsz=opt.rounded_imgsz(imgsz), dynamic=dynamic, half=half,
                              simplify=simplify, opset=opset, device=device, force=force)
    _render(result)
    opt.emit_json(json_out, result.to_dict(), force)
    if not result.ok:
        raise BracliError(f"the {result.format} export does not match the torch model (tolerance "
                          f"{result.tolerance:g} × output scale); it was written to {result.path} — do not deploy it")


def _render(result) -> None:
    from rich.table import Table

    from bracli.ui import console, success

    table = Table(title=f"parity: {result.format} vs torch on {Path(result.image).name}, letterboxed",
                  title_justify="left")
    for column in ("input h×w", "max |Δ|", "allowed", "detections torch", "detections export", "agree"):
        table.add_column(column, justify="right")
    for p in result.parity:
        allowed = result.tolerance * p.scale
        table.add_row(f"{p.imgsz[0]}×{p.imgsz[1]}", f"{p.max_abs_diff:.2e}", f"{allowed:.2e}",
                      str(p.detections_torch), str(p.detections_export),
                      "[green]yes[/]" if p.detections_agree else "[red]no[/]")
    console.print(table)
    if result.ok:
        success(f"exported {result.path}")
