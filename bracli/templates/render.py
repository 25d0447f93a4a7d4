"""Model YAMLs from templates: a family's graph with BRA layers inserted after chosen features.

Pure data in, data out — no torch, no ultralytics — so every option is checked, and a mistake reported
with exit 2, before anything heavy is imported. ultralytics hands modules it does not know their YAML
args unchanged (no width scaling, no input channels), so each rendered BRA layer carries the real
channel count of the feature it follows at the chosen scale.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from bracli import __version__
from bracli.errors import UsageError
from bracli.nn.options import check_bra_options, check_region_size
from bracli.options import MAX_CLASSES
from bracli.templates.graphs import (
    FAMILY_TITLES,
    NO_BRA,
    TASK_SUFFIXES,
    channels,
    check_family,
    check_scale,
    check_task,
    parse_placements,
    template,
)

BRA_MODULE = "BiLevelRoutingAttention"
BRA_ARGS = ("dim", "n_win", "num_heads", "topk", "qk_dim", "side_dwconv", "auto_pad", "region_size")  # positional
AUTO, PER_32 = "auto", "per32"
HEAD_WIDTH = 32  # channels per head in BiFormer's own models
REGION_REFERENCE_IMGSZ = 640  # region_size "auto": the grid is exactly n_win × n_win up to this input size
# Measured on this project's machines (docs/bra.md, benchmarks/README.md): bracli's defaults cost ~1.1× the
# plain detector on CPU at any input size; the blog's configuration is one flag away.
PRESETS: dict[str, dict[str, Any]] = {
    "bracli": {"n_win": 10, "topk": 4, "heads": PER_32, "side_dwconv": 3, "qk_dim": None, "region_size": AUTO},
    "blog": {"n_win": 7, "topk": 4, "heads": 8, "side_dwconv": 3, "qk_dim": None, "region_size": None},
}
DEFAULT_PRESET = "bracli"
METADATA_KEY = "bra"  # where a rendered dict records its BRA layers; ultralytics ignores keys it does not read
GRAPH_KEYS = ("scale", "scales", "backbone", "head")  # written by the renderer; other template keys are copied
TASK_TITLES = {"detect": "object detection", "segment": "instance segmentation"}
SCALE_IN_NAME = re.compile(r"yolo(e-)?v?\d+([nslmx])")  # how ultralytics reads the scale from a file name


def model_filename(scale: str, placements: Sequence[str], family: str = "yolov8", task: str = "detect") -> str:
    """The file name for a rendered model, e.g. ``yolo26s-seg-bra-p3-p4.yaml``; no placements gives the vanilla
    ``yolo11n.yaml``. ultralytics reads the scale from the ``yolo…<digits><scale>`` prefix."""
    check_scale(scale)
    chosen = parse_placements(placements, family, task)
    stem = f"{family}{scale}{TASK_SUFFIXES[task]}"
    return f"{stem}-bra-{'-'.join(chosen)}.yaml" if chosen else f"{stem}.yaml"


def scale_in_name(path: str | Path) -> str | None:
    """The scale ultralytics will read from a model file's name, or None when the name has none."""
    match = SCALE_IN_NAME.search(Path(path).stem)
    return match.group(2) if match else None


def index_map(placements: Sequence[str], family: str = "yolov8", task: str = "detect") -> dict[int, int]:
    """Template (vanilla) layer index -> its index once BRA layers are inserted at ``placements``."""
    graph = template(family, task)
    follows = {graph.placement(name).follows for name in parse_placements(placements, family, task)}
    mapping, shift = {}, 0
    for old in range(len(graph.rows)):
        mapping[old] = old + shift
        shift += old in follows
    return mapping


def render(scale: str, placements: Sequence[str] = ("p3",), *, family: str = "yolov8", task: str = "detect",
           nc: int = 80, preset: str = DEFAULT_PRESET, n_win: int | None = None, topk: int | None = None,
           heads: int | None = None, side_dwconv: int | None = None, qk_dim: int | None = None,
           region_size: int | str | None = None) -> dict[str, Any]:
    """The model dict of ``family``/``task`` at ``scale`` with a BRA layer after each placement, ready for
    ultralytics' ``DetectionModel`` / ``SegmentationModel``.

    BRA options left ``None`` come from ``preset`` (``PRESETS``): bracli's measured defaults, or the blog's
    configuration. Under bracli's preset, heads are one per 32 channels of each layer, and ``region_size``
    is ``"auto"``: ``⌈640 / (stride · n_win)⌉`` tokens per region side for each layer (the grid is
    ``n_win × n_win`` up to a 640 input and grows beyond). ``region_size="none"`` keeps the grid fixed.

    Every consumer of a feature that gets BRA now reads BRA's output: absolute ``from`` indices and the
    head's inputs are remapped, relative ones stay relative. No placements (or ``["none"]``) gives the plain
    graph. Top-level keys the family needs (YOLO26: ``end2end``, ``reg_max``) are kept. Raises
    ``UsageError`` naming the offending value for any option the model could not be built with.
    """
    check_family(family)
    check_task(task)
    check_scale(scale)
    chosen = parse_placements(placements, family, task)
    if not isinstance(nc, int) or isinstance(nc, bool) or not 1 <= nc <= MAX_CLASSES:
        raise UsageError(f"nc={nc!r} is invalid; it must be a whole number of classes from 1 to {MAX_CLASSES:,}")
    options = resolve_options(preset, n_win=n_win, topk=topk, heads=heads, side_dwconv=side_dwconv,
                              qk_dim=qk_dim, region_size=region_size)
    graph = template(family, task)
    data = graph.data
    new_index = index_map(chosen, family, task)
    bra_after = {graph.placement(name).follows: name for name in chosen}
    # Where each template layer's output is read from now: the BRA layer right after it, if any.
    source = {old: new + (old in bra_after) for old, new in new_index.items()}

    backbone, head, layers = [], [], []
    n_backbone = len(data["backbone"])
    for old, (frm, repeats, module, args) in enumerate(graph.rows):
        part = backbone if old < n_backbone else head
        part.append([_remap(frm, old, new_index[old], source), repeats, module, list(args)])
        if old in bra_after:
            name, stride = bra_after[old], graph.strides[old]
            dim = channels(graph.rows[old], scale, data["scales"])
            layer = layer_options(options, dim, stride, where=f" at {name} for scale {scale}")
            part.append([-1, 1, BRA_MODULE, bra_args(dim, layer)])
            layers.append({"index": new_index[old] + 1, "placement": name, "follows": new_index[old],
                           "channels": dim, "stride": stride, **layer})
    extra = {key: value for key, value in data.items() if key not in ("nc", *GRAPH_KEYS)}
    return {
        "nc": nc,
        **extra,
        "scale": scale,
        "scales": {name: list(values) for name, values in data["scales"].items()},
        "backbone": backbone,
        "head": head,
        METADATA_KEY: {"family": family, "task": task, "template": graph.file, "placements": chosen,
                       **options.to_dict(), "layers": layers},
    }


@dataclass(frozen=True)
class BraSettings:
    """BRA options as given or taken from a preset; ``heads``/``region_size`` may be per-layer rules."""

    preset: str
    n_win: int
    topk: int
    heads: int | str  # a number, or PER_32: one head per 32 channels of each layer
    side_dwconv: int
    qk_dim: int | None
    region_size: int | str | None  # a number, AUTO (from the stride), or None (fixed n_win × n_win grid)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_options(preset: str = DEFAULT_PRESET, **given: Any) -> BraSettings:
    """``given`` BRA options over the preset's, checked; ``region_size`` ``"none"`` means a fixed grid."""
    if preset not in PRESETS:
        raise UsageError(f"unknown preset '{preset}'; choose {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in given.items() if v is not None}}
    region = values.get("region_size")
    if isinstance(region, str):
        if region.strip().lower() == "none":
            region = None
        elif region.strip().lower() == AUTO:
            region = AUTO
        elif region.strip().isdigit():
            region = int(region)
        else:
            raise UsageError(f"region_size={region!r} is invalid; give tokens per region side, {AUTO} or none")
    settings = BraSettings(preset=preset, n_win=values["n_win"], topk=values["topk"], heads=values["heads"],
                           side_dwconv=values["side_dwconv"], qk_dim=values.get("qk_dim"), region_size=region)
    check_bra_options(n_win=settings.n_win, num_heads=1 if settings.heads == PER_32 else settings.heads,
                      topk=settings.topk, side_dwconv=settings.side_dwconv, qk_dim=settings.qk_dim)
    if region not in (None, AUTO):
        check_region_size(region)
    return settings


def layer_options(settings: BraSettings, dim: int, stride: int, where: str = "") -> dict[str, Any]:
    """The BRA options of one layer: heads from its channels, region size from its stride, all checked."""
    qk_dim = dim if settings.qk_dim is None else settings.qk_dim
    heads = heads_for(dim, qk_dim) if settings.heads == PER_32 else settings.heads
    region = settings.region_size
    if region == AUTO:
        region = -(-REGION_REFERENCE_IMGSZ // (stride * settings.n_win))
    check_bra_options(n_win=settings.n_win, num_heads=heads, topk=settings.topk, side_dwconv=settings.side_dwconv,
                      qk_dim=qk_dim, dim=dim, where=where)
    return {"n_win": settings.n_win, "heads": heads, "topk": settings.topk, "qk_dim": qk_dim,
            "side_dwconv": settings.side_dwconv, "region_size": region}


def heads_for(dim: int, qk_dim: int | None = None) -> int:
    """One head per 32 channels (BiFormer's own models), at least one: the largest count up to ``dim // 32``
    that divides both ``dim`` and ``qk_dim`` (rendered channels are multiples of 8)."""
    qk_dim = dim if qk_dim is None else qk_dim
    heads = max(1, dim // HEAD_WIDTH)
    while dim % heads or qk_dim % heads:
        heads -= 1
    return heads


def bra_args(dim: int, layer: dict[str, Any]) -> list[Any]:
    """The module's positional arguments; the region size (and auto_pad before it) only when it is set."""
    args = [dim, layer["n_win"], layer["heads"], layer["topk"], layer["qk_dim"], layer["side_dwconv"]]
    return [*args, True, layer["region_size"]] if layer["region_size"] is not None else args


def command_line(model: dict[str, Any]) -> str:
    """The ``bra init`` command that renders ``model`` (read from its metadata)."""
    meta = model[METADATA_KEY]
    family, task = meta.get("family", "yolov8"), meta.get("task", "detect")
    parts = ["bra init"]
    if family != "yolov8":
        parts.append(f"--family {family}")
    if task != "detect":
        parts.append(f"--task {task}")
    parts += [f"--scale {model['scale']}", f"--bra-after {','.join(meta['placements']) or NO_BRA}",
              f"--nc {model['nc']}"]
    if meta["placements"]:
        preset = meta.get("preset", DEFAULT_PRESET)
        if preset != DEFAULT_PRESET:
            parts.append(f"--preset {preset}")
        differs = {key: meta.get(key) for key in ("n_win", "topk", "heads", "side_dwconv", "qk_dim", "region_size")
                   if meta.get(key) != PRESETS[preset].get(key)}
        for key, value in differs.items():
            parts.append(f"--{key.replace('_', '-')} {'none' if value is None else value}")
    return " ".join(parts)


def title(model: dict[str, Any]) -> str:
    """``YOLO11n-seg``: the family, scale and task a rendered dict is."""
    meta = model[METADATA_KEY]
    return (f"{FAMILY_TITLES[meta.get('family', 'yolov8')]}{model['scale']}"
            f"{TASK_SUFFIXES[meta.get('task', 'detect')]}")


def default_header(model: dict[str, Any]) -> str:
    """The comment that opens a rendered YAML: what it is, how it was made, how to use it."""
    meta = model[METADATA_KEY]
    scale, family, task = model["scale"], meta.get("family", "yolov8"), meta.get("task", "detect")
    if meta["layers"]:
        bra = ", ".join(f"layer {layer['index']} after {layer['placement']} ({layer['channels']} ch)"
                        for layer in meta["layers"])
        what = (f"{title(model)} {TASK_TITLES[task]} with BiFormer's Bi-Level Routing Attention (arXiv 2303.08810); "
                f"BRA: {bra}.")
    else:
        what = f"{title(model)} {TASK_TITLES[task]}, plain (no BRA layer): the baseline for BRA experiments."
    lines = [
        what,
        f"Made by: {command_line(model)}",
        f"with bracli {__version__} from its template {meta['template']}.",
        f"Channel counts are for scale '{scale}'. ultralytics reads the scale from the file name: keep "
        f"'{family}{scale}' in it,",
        "and run bra init again for another scale.",
    ]
    if meta["layers"]:
        lines[-1] += (" BRA args: [dim, n_win, num_heads, topk, qk_dim, side_dwconv] (then auto_pad, region_size "
                      "when regions have a fixed size).")
        lines.append("Use: `import bracli`, then YOLO('<this file>') in Python, or give this file to bra.")
    return "\n".join(lines)


def to_yaml(model: dict[str, Any], header: str) -> str:
    """YAML text for a model dict in ultralytics' layout (one flow row per layer, index comments)."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines.append("")
    placed = {layer["index"]: layer["placement"] for layer in model.get(METADATA_KEY, {}).get("layers", [])}
    index = 0
    for key, value in model.items():
        if key in ("backbone", "head"):
            lines += [f"{key}:", "  # [from, repeats, module, args]"]
            for row in value:
                note = f"{index} BRA after {placed[index]}" if index in placed else str(index)
                lines.append(f"  - {_flow(row)} # {note}")
                index += 1
        elif key == "scales":
            lines.append("scales: # [depth, width, max_channels]")
            lines += [f"  {name}: {_flow(values)}" for name, values in value.items()]
        else:  # leaf collections in flow style; a bare scalar must stay block style to remain a mapping entry
            flow = None if isinstance(value, (dict, list)) else False
            lines.append(yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=flow, width=10**9).rstrip())
    return "\n".join(lines) + "\n"


def _flow(value: list[Any]) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()


def _remap(frm: int | list[int], old: int, new: int, source: dict[int, int]) -> int | list[int]:
    """Point ``from`` at where its sources are read from now; relative stays relative, -1 (input) at layer 0 too."""

    def one(s: int) -> int:
        absolute = old + s if s < 0 else s
        if absolute < 0:  # the image input
            return s
        return source[absolute] - new if s < 0 else source[absolute]

    return one(frm) if isinstance(frm, int) else [one(s) for s in frm]
