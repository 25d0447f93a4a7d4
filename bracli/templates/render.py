"""Model YAMLs from templates: a family's graph with BRA layers inserted after chosen features.

Pure data in, data out — no torch, no ultralytics — so every option is checked, and a mistake reported
with exit 2, before anything heavy is imported. ultralytics hands modules it does not know their YAML
args unchanged (no width scaling, no input channels), so each rendered BRA layer carries the real
channel count of the feature it follows at the chosen scale.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from bracli import __version__
from bracli.errors import UsageError
from bracli.nn.options import check_bra_options
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
BRA_ARGS = ("dim", "n_win", "num_heads", "topk", "qk_dim", "side_dwconv")  # the module's positional args
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
           nc: int = 80, n_win: int = 8, topk: int = 4, heads: int = 8, side_dwconv: int = 3,
           qk_dim: int | None = None) -> dict[str, Any]:
    """The model dict of ``family``/``task`` at ``scale`` with a BRA layer after each placement, ready for
    ultralytics' ``DetectionModel`` / ``SegmentationModel``.

    Every consumer of a feature that gets BRA now reads BRA's output: absolute ``from`` indices and the
    head's inputs are remapped, relative ones stay relative. No placements (or ``["none"]``) gives the plain
    graph. Top-level keys the family needs (YOLO26: ``end2end``, ``reg_max``) are kept. Raises
    ``UsageError`` naming the offending value for any option the model could not be built with.
    """
    check_family(family)
    check_task(task)
    check_scale(scale)
    chosen = parse_placements(placements, family, task)
    if not isinstance(nc, int) or isinstance(nc, bool) or nc < 1:
        raise UsageError(f"nc={nc!r} is invalid; it must be a positive integer")
    check_bra_options(n_win=n_win, num_heads=heads, topk=topk, side_dwconv=side_dwconv, qk_dim=qk_dim)
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
            name = bra_after[old]
            dim = channels(graph.rows[old], scale, data["scales"])
            layer_qk_dim = dim if qk_dim is None else qk_dim
            check_bra_options(n_win=n_win, num_heads=heads, topk=topk, side_dwconv=side_dwconv, qk_dim=layer_qk_dim,
                              dim=dim, where=f" at {name} for scale {scale}")
            part.append([-1, 1, BRA_MODULE, [dim, n_win, heads, topk, layer_qk_dim, side_dwconv]])
            layers.append({"index": new_index[old] + 1, "placement": name, "follows": new_index[old],
                           "channels": dim, "stride": graph.strides[old]})
    extra = {key: value for key, value in data.items() if key not in ("nc", *GRAPH_KEYS)}
    return {
        "nc": nc,
        **extra,
        "scale": scale,
        "scales": {name: list(values) for name, values in data["scales"].items()},
        "backbone": backbone,
        "head": head,
        METADATA_KEY: {"family": family, "task": task, "template": graph.file, "placements": chosen, "n_win": n_win,
                       "topk": topk, "heads": heads, "side_dwconv": side_dwconv, "qk_dim": qk_dim, "layers": layers},
    }


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
        parts += [f"--n-win {meta['n_win']}", f"--topk {meta['topk']}", f"--heads {meta['heads']}",
                  f"--side-dwconv {meta['side_dwconv']}"]
        if meta["qk_dim"] is not None:
            parts.append(f"--qk-dim {meta['qk_dim']}")
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
        lines[-1] += " BRA args: [dim, n_win, num_heads, topk, qk_dim, side_dwconv]."
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
