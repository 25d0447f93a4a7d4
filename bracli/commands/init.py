"""`bra init`: write a YOLOv8 / YOLO11 / YOLO26 (+ BRA) model YAML rendered from the templates, then summarise it.

Order matters for "nothing written on error": options are checked by the pure renderer (exit 2
before torch is imported), the output path is checked, the model is built, and only then is the file
written atomically.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from bracli import options
from bracli.errors import UsageError
from bracli.output import Output

if TYPE_CHECKING:
    from torch import nn

    from bracli.templates.graphs import PlacementInfo

NAME = "init"
EPILOG = "Example: bra init --family yolo11 --task segment --scale n --bra-after p3"
SUMMARY_IMGSZ = 640


def command(
    ctx: typer.Context,
    family: options.Family = "yolov8",
    task: options.Task = "detect",
    scale: options.Scale = None,
    bra_after: options.BraAfter = None,
    nc: int = typer.Option(80, "--nc", max=options.MAX_CLASSES, help="Number of classes."),
    preset: options.Preset = "bracli",
    region_size: options.RegionSize = None,
    n_win: options.NWin = None,
    topk: options.Topk = None,
    heads: options.Heads = None,
    side_dwconv: options.SideDwconv = None,
    qk_dim: options.QkDim = None,
    out_path: options.Out = None,
    force: options.Force = False,
    json_out: options.JsonOut = None,
    list_choices: bool = typer.Option(False, "--list", help="Show the family's placements and scales, then exit."),
) -> None:
    """Render a model YAML (with BRA, or plain with --bra-after none) from templates and summarise it.

    The file goes to ./<family><scale>[-seg]-bra-<placements>.yaml unless --out names another; its name must
    keep the scale (ultralytics reads it from there).
    """
    from bracli import templates

    out = Output(json_out, force=force)
    templates.check_family(family)
    templates.check_task(task)
    if list_choices:
        options.refuse_given(ctx, ("scale", "bra_after", "nc", *options.BRA_OPTION_NAMES, "out_path"),
                             "--list shows a family's choices and writes no model; drop {flags}")
        if not json_out or json_out == "-":
            options.refuse_given(ctx, ("force",), "--list writes no file but its --json; drop {flags}")
        choices = Choices(family, task, templates.template_file(family, task),
                          templates.describe_placements(family, task), templates.scale_table(family, task))
        _print_choices(choices, out)
        out.emit(choices)
        return
    from bracli.files import atomic_write_text, check_writable

    scale = scale or "n"
    given = bra_after if bra_after is not None else ["p3"]
    placements = templates.parse_placements(given, family, task)
    asked_for_none = any(piece.strip().lower() == templates.NO_BRA for value in given for piece in value.split(","))
    if not placements and not asked_for_none:
        raise UsageError(f"--bra-after got no placement; give at least one, or {templates.NO_BRA} for the plain model "
                         "(see bra init --list)")
    if not placements:
        options.refuse_given(ctx, options.BRA_OPTION_NAMES, "--bra-after none renders a model without a BRA layer; "
                             "drop {flags}")
    bra = options.bra_options(preset, n_win=n_win, topk=topk, heads=heads, side_dwconv=side_dwconv, qk_dim=qk_dim,
                              region_size=region_size)
    model = templates.render(scale, placements, family=family, task=task, nc=nc, **bra)
    path = out_path if out_path is not None else Path(templates.model_filename(scale, placements, family, task))
    _check_name(path, scale, family)
    check_writable(path, force)
    text = templates.to_yaml(model, templates.default_header(model))

    from bracli.engine.setup import setup

    setup()
    from bracli.engine import models

    built = models.build(model)
    atomic_write_text(path, text, force=force)
    summary = _summarise(path, model, built)
    _print_summary(summary, model, out)
    out.emit(summary)


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


@dataclass
class Choices:
    """What `bra init --list` shows: a family's placements and scales."""

    family: str
    task: str
    template: str
    placements: list[PlacementInfo]
    scales: dict[str, tuple[float, float, int]]  # scale -> (depth, width, max channels)

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "task": self.task, "template": self.template,
                "placements": [p.to_dict() for p in self.placements],
                "scales": {scale: dict(zip(("depth", "width", "max_channels"), values, strict=True))
                           for scale, values in self.scales.items()}}


@dataclass
class InitSummary:
    """What `bra init` wrote and built: the file, the model's size and cost, and each BRA layer's."""

    path: Path
    title: str
    layers: int
    params: int
    gflops: float
    imgsz: int
    bra_layers: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


def _summarise(path: Path, model: dict[str, Any], built: nn.Module) -> InitSummary:
    from bracli.measure.flops import count_flops
    from bracli.templates import METADATA_KEY, title

    meta = model[METADATA_KEY]
    flops = count_flops(built, SUMMARY_IMGSZ)  # one shape-only forward: true FLOPs and the real BRA input shapes
    layers = []
    for layer in meta["layers"]:
        index = layer["index"]
        _, channels, height, width = flops.bra_input_shapes[index]
        layers.append({**layer, "module": type(built.model[layer["follows"]]).__name__,
                       "input": [channels, height, width], "gflops": flops.bra_layers[index],
                       "params": sum(p.numel() for p in built.model[index].parameters())})
    return InitSummary(path=path, title=title(model), layers=len(built.model),
                       params=sum(p.numel() for p in built.parameters()), gflops=flops.total_gflops,
                       imgsz=SUMMARY_IMGSZ, bra_layers=layers)


def _print_summary(summary: InitSummary, model: dict[str, Any], out: Output) -> None:
    from rich import box
    from rich.table import Table

    from bracli.nn.options import region_grid
    from bracli.templates import METADATA_KEY

    meta = model[METADATA_KEY]
    out.wrote(summary.path)
    size = f"{summary.layers} layers, {summary.params:,} parameters"
    if not summary.bra_layers:
        out.info(f"{summary.title}, nc={model['nc']}, no BRA layer (the baseline): {size}, {summary.gflops:.2f} "
                 f"GFLOPs at {summary.imgsz} (a multiply-add counts 2)")
        return
    bra_params = sum(layer["params"] for layer in summary.bra_layers)
    bra_gflops = sum(layer["gflops"] for layer in summary.bra_layers)
    out.info(f"{summary.title} + BRA, nc={model['nc']}: {size} ({bra_params:,} in BRA), {summary.gflops:.2f} GFLOPs "
             f"at {summary.imgsz} ({bra_gflops:.2f} in BRA; a multiply-add counts 2); preset {meta['preset']}: "
             f"n_win={meta['n_win']}, topk={meta['topk']}, side_dwconv={meta['side_dwconv']}")
    table = Table(title=f"BRA layers, feature maps at {summary.imgsz}×{summary.imgsz} input", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)  # fits 80 columns: the layer it follows is layer - 1
    for column in ("layer", "placement", "C×H×W", "heads", "regions", "params", "GFLOPs"):
        table.add_column(column, justify="right" if column in ("layer", "heads", "params", "GFLOPs") else "left",
                         no_wrap=True)
    any_padded = False
    for layer in summary.bra_layers:
        channels, height, width = layer["input"]
        n_win = layer["n_win"]
        rows, cols, region_h, region_w = region_grid(height, width, n_win, layer["region_size"])
        padded = "*" if (rows * region_h, cols * region_w) != (height, width) else ""
        any_padded = any_padded or bool(padded)
        table.add_row(str(layer["index"]), layer["placement"], f"{channels}×{height}×{width}", str(layer["heads"]),
                      f"{rows}×{cols} of {region_h}×{region_w}{padded}", f"{layer['params']:,}",
                      f"{layer['gflops']:.3f}")
        if n_win > min(height, width):
            out.warn(f"n_win={n_win} exceeds the {height}×{width} map at {layer['placement']} for {summary.imgsz} "
                     "input: most regions would be padding; try a smaller --n-win")
    if any_padded:
        table.caption, table.caption_justify = "* the map is zero-padded to whole regions", "left"
    out.print(table)


def _print_choices(choices: Choices, out: Output) -> None:
    from rich import box
    from rich.table import Table

    from bracli.templates import FAMILY_TITLES, NO_BRA, SCALES
    name = FAMILY_TITLES[choices.family]
    placements = Table(title=f"{name} {choices.task} placements (--bra-after; combine any, each once; {NO_BRA} = "
                       "plain model)", title_justify="left", box=box.SIMPLE_HEAD)
    channels = f"channels {'/'.join(SCALES)}"
    for column in ("placement", "after layer", "stride", channels, "that layer is"):
        placements.add_column(column, justify="right" if column == "stride" else "left",
                              no_wrap=column != "that layer is")
    for info in choices.placements:
        placements.add_row(info.name, f"{info.follows} {info.module}", str(info.stride),
                           "/".join(str(info.channels[s]) for s in SCALES), info.description)
    scales = Table(title="Scales (--scale)", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("scale", "depth", "width", "max channels"):
        scales.add_column(column, justify="right")
    for scale, (depth, width, max_channels) in choices.scales.items():
        scales.add_row(scale, f"{depth:g}", f"{width:g}", str(max_channels))
    out.print(placements)
    out.print(scales)
    out.info(f"Layer numbers are those of plain {name} ({choices.template}); channels are the BRA "
             "layer's at each scale. Other families: --family yolov8|yolo11|yolo26, --task detect|segment.")
