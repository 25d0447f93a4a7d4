"""`bra init`: write a YOLOv8 / YOLO11 / YOLO26 (+ BRA) model YAML rendered from the templates, then summarise it.

Order matters for "nothing written on error": options are checked by the pure renderer (exit 2
before torch is imported), the output path is checked, the model is built, and only then is the file
written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from bracli.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

NAME = "init"
EPILOG = "Example: bra init --family yolo11 --task segment --scale n --bra-after p3"
SUMMARY_IMGSZ = 640


def command(
    family: str = typer.Option("yolov8", "--family", help="Model family: yolov8, yolo11 or yolo26."),
    task: str = typer.Option("detect", "--task", help="detect (boxes) or segment (boxes and instance masks)."),
    scale: str = typer.Option("n", "--scale", "-s", help="Model scale: n, s, m, l or x."),
    bra_after: list[str] | None = typer.Option(
        None, "--bra-after", "-a", help="Where to insert BRA: p3, p4, p5, sppf, backbone-p3/p4/p5, psa (YOLO11/26), "
        "or none for the plain model (the baseline). Repeat the flag or give a comma list; default p3.",
        show_default=False),
    nc: int = typer.Option(80, "--nc", help="Number of classes."),
    n_win: int = typer.Option(8, "--n-win", help="Regions per side (the map is split into n_win × n_win)."),
    topk: int = typer.Option(4, "--topk", help="Regions each query region attends to (≤ n_win²)."),
    heads: int = typer.Option(8, "--heads", help="Attention heads; must divide every BRA layer's channels."),
    side_dwconv: int = typer.Option(3, "--side-dwconv", help="Kernel of the local context conv on v (odd; 0 = off)."),
    qk_dim: int | None = typer.Option(None, "--qk-dim", help="q/k channels; default: each BRA layer's channels.",
                                      show_default=False),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output YAML; default ./<family><scale>-bra-<...>.yaml. "
                                    "Its name must keep the scale (ultralytics reads it from there).",
                                    show_default=False),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite an existing output file."),
    list_choices: bool = typer.Option(False, "--list", help="Show the family's placements and scales, then exit."),
) -> None:
    """Render a model YAML (with BRA, or plain with --bra-after none) from templates and summarise it."""
    from bracli import templates

    templates.check_family(family)
    templates.check_task(task)
    if list_choices:
        _print_choices(family, task)
        return
    from bracli.files import atomic_write_text, check_writable

    given = bra_after if bra_after is not None else ["p3"]
    placements = templates.parse_placements(given, family, task)
    asked_for_none = any(piece.strip().lower() == templates.NO_BRA for value in given for piece in value.split(","))
    if not placements and not asked_for_none:
        raise UsageError(f"--bra-after got no placement; give at least one, or {templates.NO_BRA} for the plain model "
                         "(see bra init --list)")
    model = templates.render(scale, placements, family=family, task=task, nc=nc, n_win=n_win, topk=topk, heads=heads,
                             side_dwconv=side_dwconv, qk_dim=qk_dim)
    path = out if out is not None else Path(templates.model_filename(scale, placements, family, task))
    _check_name(path, scale, family)
    check_writable(path, force)
    text = templates.to_yaml(model, templates.default_header(model))

    from bracli.engine import models

    built = models.build(model)
    atomic_write_text(path, text, force=force)
    _print_summary(path, model, built)


def _check_name(path: Path, scale: str, family: str) -> None:
    """ultralytics takes the scale from the file name; a name without it, or with another, builds the wrong model."""
    from bracli.templates import scale_in_name

    if path.suffix not in (".yaml", ".yml"):
        raise UsageError(f"--out {path}: a model file must end in .yaml")
    found = scale_in_name(path)
    if found is None:
        raise UsageError(f"--out {path}: the file name must contain the scale, e.g. {family}{scale}-custom.yaml "
                         "(ultralytics reads the scale from the name)")
    if found != scale:
        raise UsageError(f"--out {path}: the name says scale '{found}' but --scale is '{scale}'; ultralytics would "
                         f"build scale '{found}' with channels for '{scale}'")


def _print_summary(path: Path, model: dict[str, Any], built: nn.Module) -> None:
    from rich import box
    from rich.table import Table

    from bracli.profile import count_flops
    from bracli.templates import METADATA_KEY, title
    from bracli.ui import console, success, warn

    meta = model[METADATA_KEY]
    flops = count_flops(built, SUMMARY_IMGSZ)  # one shape-only forward: true FLOPs and the real BRA input shapes
    params = sum(p.numel() for p in built.parameters())
    success(f"wrote {path}")
    if not meta["layers"]:
        console.print(f"{title(model)}, nc={model['nc']}, no BRA layer (the baseline): {len(built.model)} layers, "
                      f"{params:,} parameters, {flops.total_gflops:.2f} GFLOPs at {SUMMARY_IMGSZ} "
                      "(a multiply-add counts 2)", soft_wrap=True)
        return
    bra_params = {layer["index"]: sum(p.numel() for p in built.model[layer["index"]].parameters())
                  for layer in meta["layers"]}
    qk_dim = f", qk_dim={meta['qk_dim']}" if meta["qk_dim"] is not None else ""
    console.print(f"{title(model)} + BRA, nc={model['nc']}: {len(built.model)} layers, {params:,} parameters "
                  f"({sum(bra_params.values()):,} in BRA), {flops.total_gflops:.2f} GFLOPs at {SUMMARY_IMGSZ} "
                  f"({flops.bra_gflops:.2f} in BRA; a multiply-add counts 2); n_win={meta['n_win']}, "
                  f"topk={meta['topk']}, heads={meta['heads']}, side_dwconv={meta['side_dwconv']}{qk_dim}",
                  soft_wrap=True)
    table = Table(title=f"BRA layers, feature maps at {SUMMARY_IMGSZ}×{SUMMARY_IMGSZ} input", title_justify="left",
                  box=box.SIMPLE_HEAD)
    for column in ("layer", "placement", "after", "C×H×W", "region", "params", "GFLOPs"):
        table.add_column(column, justify="right" if column in ("layer", "params", "GFLOPs") else "left")
    for layer in meta["layers"]:
        index, follows = layer["index"], layer["follows"]
        _, channels, height, width = flops.bra_input_shapes[index]
        region_h, region_w = -(-height // meta["n_win"]), -(-width // meta["n_win"])
        padded = " padded" if height % meta["n_win"] or width % meta["n_win"] else ""
        table.add_row(str(index), layer["placement"], f"{follows} {type(built.model[follows]).__name__}",
                      f"{channels}×{height}×{width}", f"{region_h}×{region_w}{padded}", f"{bra_params[index]:,}",
                      f"{flops.bra_layers[index]:.3f}")
        if meta["n_win"] > min(height, width):
            warn(f"n_win={meta['n_win']} exceeds the {height}×{width} map at {layer['placement']} for "
                 f"{SUMMARY_IMGSZ} input: most regions would be padding; try a smaller --n-win")
    console.print(table)


def _print_choices(family: str, task: str) -> None:
    from rich import box
    from rich.table import Table

    from bracli.templates import FAMILY_TITLES, NO_BRA, SCALES, describe_placements, scale_table, template_file
    from bracli.ui import console

    name = FAMILY_TITLES[family]
    placements = Table(title=f"{name} {task} placements (--bra-after; combine any, each once; {NO_BRA} = plain model)",
                       title_justify="left", box=box.SIMPLE_HEAD)
    channels = f"channels {'/'.join(SCALES)}"
    for column in ("placement", "after layer", "stride", channels, "that layer is"):
        placements.add_column(column, justify="right" if column == "stride" else "left",
                              no_wrap=column != "that layer is")
    for info in describe_placements(family, task):
        placements.add_row(info.name, f"{info.follows} {info.module}", str(info.stride),
                           "/".join(str(info.channels[s]) for s in SCALES), info.description)
    scales = Table(title="Scales (--scale)", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("scale", "depth", "width", "max channels"):
        scales.add_column(column, justify="right")
    for scale, (depth, width, max_channels) in scale_table(family, task).items():
        scales.add_row(scale, f"{depth:g}", f"{width:g}", str(max_channels))
    console.print(placements)
    console.print(scales)
    console.print(f"Layer numbers are those of plain {name} ({template_file(family, task)}); channels are the BRA "
                  "layer's at each scale. Other families: --family yolov8|yolo11|yolo26, --task detect|segment.",
                  soft_wrap=True)
