"""Model YAMLs from templates: the YOLOv8 detect graph with BRA layers inserted after chosen features.

Pure data in, data out — no torch, no ultralytics — so every option is checked, and a mistake reported
with exit 2, before anything heavy is imported. ultralytics hands modules it does not know their YAML
args unchanged (no width scaling, no input channels), so each rendered BRA layer carries the real
channel count of the feature it follows at the chosen scale.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from bracli import __version__
from bracli.errors import BracliError, UsageError
from bracli.nn.options import check_bra_options

TEMPLATE = "yolov8.yaml"
BRA_MODULE = "BiLevelRoutingAttention"
BRA_ARGS = ("dim", "n_win", "num_heads", "topk", "qk_dim", "side_dwconv")  # the module's positional args
METADATA_KEY = "bra"  # where a rendered dict records its BRA layers; ultralytics ignores keys it does not read
SCALES = ("n", "s", "m", "l", "x")
SCALE_IN_NAME = re.compile(r"yolo(e-)?v?\d+([nslmx])")  # how ultralytics reads the scale from a file name
BASE_MODULES = frozenset({"Conv", "C2f", "SPPF"})  # template modules whose args[0] ultralytics width-scales


@dataclass(frozen=True)
class Placement:
    """A place a BRA layer can go: right after template layer ``follows``, which ``description`` names."""

    name: str
    follows: int
    description: str


# Canonical order is graph order, so a set of placements always renders to the same file name.
_PLACEMENTS = (
    Placement("backbone-p3", 4, "the backbone C2f at stride 8"),
    Placement("backbone-p4", 6, "the backbone C2f at stride 16"),
    Placement("backbone-p5", 8, "the backbone C2f at stride 32"),
    Placement("sppf", 9, "SPPF, the end of the backbone"),
    Placement("p3", 15, "the head C2f feeding Detect at P3/8 (small objects)"),
    Placement("p4", 18, "the head C2f feeding Detect at P4/16 (medium objects)"),
    Placement("p5", 21, "the head C2f feeding Detect at P5/32 (large objects)"),
)
PLACEMENTS = tuple(p.name for p in _PLACEMENTS)
_BY_NAME = {p.name: p for p in _PLACEMENTS}


@dataclass(frozen=True)
class PlacementInfo:
    """What ``bra init --list`` shows for one placement."""

    name: str
    follows: int
    module: str
    stride: int
    description: str
    channels: dict[str, int]  # scale -> channels of the feature (= BRA dim)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def template_dir() -> Path:
    """Where the templates are: shipped inside the wheel, else the repository's ``templates/`` (editable)."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "_templates", package.parent / "templates"):
        if (candidate / TEMPLATE).is_file():
            return candidate
    raise BracliError(f"bracli's model template {TEMPLATE} is missing (looked in {package / '_templates'}); "
                      "reinstall bracli")


@lru_cache(maxsize=1)
def _template() -> dict[str, Any]:
    with open(template_dir() / TEMPLATE, encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_template() -> dict[str, Any]:
    """The plain YOLOv8 detect graph (a fresh copy: callers may edit it)."""
    return copy.deepcopy(_template())


def scale_table() -> dict[str, tuple[float, float, int]]:
    """Scale letter -> (depth, width, max_channels), as in the template."""
    return {name: tuple(values) for name, values in _template()["scales"].items()}


def parse_placements(values: Iterable[str]) -> list[str]:
    """Placements from repeated flags and/or comma lists, validated, in canonical (graph) order."""
    seen: list[str] = []
    for value in [values] if isinstance(values, str) else values:
        for piece in str(value).split(","):
            name = piece.strip().lower()
            if not name:
                continue
            if name not in _BY_NAME:
                raise UsageError(f"unknown placement '{piece.strip()}'; choose from {', '.join(PLACEMENTS)} "
                                 "(see bra init --list)")
            if name in seen:
                raise UsageError(f"placement '{name}' given more than once; each placement takes one BRA layer")
            seen.append(name)
    return [name for name in PLACEMENTS if name in seen]


def model_filename(scale: str, placements: Sequence[str]) -> str:
    """The file name for a rendered model, e.g. ``yolov8s-bra-p3-p4.yaml`` (ultralytics reads the scale from it)."""
    _check_scale(scale)
    chosen = parse_placements(placements)
    return f"yolov8{scale}-bra-{'-'.join(chosen)}.yaml" if chosen else f"yolov8{scale}.yaml"


def scale_in_name(path: str | Path) -> str | None:
    """The scale ultralytics will read from a model file's name, or None when the name has none."""
    match = SCALE_IN_NAME.search(Path(path).stem)
    return match.group(2) if match else None


def index_map(placements: Sequence[str]) -> dict[int, int]:
    """Template (vanilla YOLOv8) layer index -> its index once BRA layers are inserted at ``placements``."""
    follows = {_BY_NAME[name].follows for name in parse_placements(placements)}
    mapping, shift = {}, 0
    for old in range(len(_rows(_template()))):
        mapping[old] = old + shift
        shift += old in follows
    return mapping


def render(scale: str, placements: Sequence[str] = ("p3",), *, nc: int = 80, n_win: int = 8, topk: int = 4,
           heads: int = 8, side_dwconv: int = 3, qk_dim: int | None = None) -> dict[str, Any]:
    """The YOLOv8 model dict for ``scale`` with a BRA layer after each placement, ready for ``DetectionModel``.

    Every consumer of a feature that gets BRA now reads BRA's output: absolute ``from`` indices and
    Detect's inputs are remapped, relative ones stay relative. No placements gives plain YOLOv8.
    Raises ``UsageError`` naming the offending value for any option the model could not be built with.
    """
    _check_scale(scale)
    chosen = parse_placements(placements)
    if not isinstance(nc, int) or isinstance(nc, bool) or nc < 1:
        raise UsageError(f"nc={nc!r} is invalid; it must be a positive integer")
    check_bra_options(n_win=n_win, num_heads=heads, topk=topk, side_dwconv=side_dwconv, qk_dim=qk_dim)
    template = load_template()
    rows = _rows(template)
    strides = _strides(rows)
    new_index = index_map(chosen)
    bra_after = {_BY_NAME[name].follows: name for name in chosen}
    # Where each template layer's output is read from now: the BRA layer right after it, if any.
    source = {old: new + (old in bra_after) for old, new in new_index.items()}

    backbone, head, layers = [], [], []
    n_backbone = len(template["backbone"])
    for old, (frm, repeats, module, args) in enumerate(rows):
        part = backbone if old < n_backbone else head
        part.append([_remap(frm, old, new_index[old], source), repeats, module, args])
        if old in bra_after:
            name = bra_after[old]
            dim = _channels(rows[old], scale)
            layer_qk_dim = dim if qk_dim is None else qk_dim
            check_bra_options(n_win=n_win, num_heads=heads, topk=topk, side_dwconv=side_dwconv, qk_dim=layer_qk_dim,
                              dim=dim, where=f" at {name} for scale {scale}")
            part.append([-1, 1, BRA_MODULE, [dim, n_win, heads, topk, layer_qk_dim, side_dwconv]])
            layers.append({"index": new_index[old] + 1, "placement": name, "follows": new_index[old],
                           "channels": dim, "stride": strides[old]})
    return {
        "nc": nc,
        "scale": scale,
        "scales": template["scales"],
        "backbone": backbone,
        "head": head,
        METADATA_KEY: {"template": TEMPLATE, "placements": chosen, "n_win": n_win, "topk": topk, "heads": heads,
                       "side_dwconv": side_dwconv, "qk_dim": qk_dim, "layers": layers},
    }


def describe_placements() -> list[PlacementInfo]:
    """Every placement with the layer it follows, its stride and its channels at each scale."""
    rows = _rows(_template())
    strides = _strides(rows)
    return [PlacementInfo(p.name, p.follows, rows[p.follows][2], strides[p.follows], p.description,
                          {s: _channels(rows[p.follows], s) for s in SCALES}) for p in _PLACEMENTS]


def command_line(model: dict[str, Any]) -> str:
    """The ``bra init`` command that renders ``model`` (read from its metadata)."""
    meta = model[METADATA_KEY]
    parts = ["bra init", f"--scale {model['scale']}"]
    if meta["placements"]:
        parts.append(f"--bra-after {','.join(meta['placements'])}")
    parts += [f"--nc {model['nc']}", f"--n-win {meta['n_win']}", f"--topk {meta['topk']}",
              f"--heads {meta['heads']}", f"--side-dwconv {meta['side_dwconv']}"]
    if meta["qk_dim"] is not None:
        parts.append(f"--qk-dim {meta['qk_dim']}")
    return " ".join(parts)


def default_header(model: dict[str, Any]) -> str:
    """The comment that opens a rendered YAML: what it is, how it was made, how to use it."""
    meta = model[METADATA_KEY]
    scale = model["scale"]
    bra = ", ".join(f"layer {layer['index']} after {layer['placement']} ({layer['channels']} ch)"
                    for layer in meta["layers"]) or "none"
    return "\n".join([
        f"YOLOv8{scale} detect with BiFormer's Bi-Level Routing Attention (arXiv 2303.08810); BRA: {bra}.",
        f"Made by: {command_line(model)}",
        f"with bracli {__version__} from its template {meta['template']}.",
        f"Channel counts are for scale '{scale}'. ultralytics reads the scale from the file name: keep "
        f"'yolov8{scale}' in it,",
        "and run bra init again for another scale. BRA args: [dim, n_win, num_heads, topk, qk_dim, side_dwconv].",
        "Use: `import bracli`, then YOLO('<this file>') in Python, or give this file to bra.",
    ])


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


def _rows(model: dict[str, Any]) -> list[list[Any]]:
    return model["backbone"] + model["head"]


def _channels(row: list[Any], scale: str) -> int:
    """Output channels of a width-scaled template layer, computed as ultralytics does."""
    module, args = row[2], row[3]
    if module not in BASE_MODULES:
        raise BracliError(f"template layer {row} is not a width-scaled module; cannot place BRA after it")
    _, width, max_channels = scale_table()[scale]
    return math.ceil(min(args[0], max_channels) * width / 8) * 8


def _strides(rows: list[list[Any]]) -> list[int]:
    """Output stride of every template layer: stride-2 convs halve the map, upsampling doubles it."""
    strides: list[int] = []
    for i, (frm, _, module, args) in enumerate(rows):
        absolute = [i + s if s < 0 else s for s in ([frm] if isinstance(frm, int) else frm)]
        inputs = [strides[s] if s >= 0 else 1 for s in absolute]  # below 0: the image itself
        if module == "Conv" and len(args) > 2:
            strides.append(inputs[0] * args[2])
        elif module == "nn.Upsample":
            strides.append(inputs[0] // args[1])
        else:
            strides.append(max(inputs))
    return strides


def _remap(frm: int | list[int], old: int, new: int, source: dict[int, int]) -> int | list[int]:
    """Point ``from`` at where its sources are read from now; relative stays relative, -1 (input) at layer 0 too."""

    def one(s: int) -> int:
        absolute = old + s if s < 0 else s
        if absolute < 0:  # the image input
            return s
        return source[absolute] - new if s < 0 else source[absolute]

    return one(frm) if isinstance(frm, int) else [one(s) for s in frm]


def _check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise UsageError(f"unknown scale '{scale}'; choose one of {', '.join(SCALES)} (see bra init --list)")
