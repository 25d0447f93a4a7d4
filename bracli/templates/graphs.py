"""The model graphs bracli renders from: ultralytics' YOLOv8, YOLO11 and YOLO26, for detection and segmentation.

Why bracli ships copies (``templates/*.yaml``, ``bracli/_templates`` in the wheel) instead of reading the
installed ultralytics' ``cfg/models`` files: a bracli release then renders the same YAML, with BRA at the
same layer, whatever ultralytics patch release is installed, so a BRA run and its baseline stay comparable
and a placement never silently moves because an upstream file changed shape. The copies are ultralytics
8.4.190's files with the graph unchanged; the tests compare them with the installed package's, so drift
is caught when the pinned ultralytics moves.

Placements are found in each graph by structure, not by a per-family index table: ``p3``/``p4``/``p5``
are the layers the head reads, ``backbone-pN`` the last backbone CSP block (C2f, C3k2) at that stride,
``sppf`` and ``psa`` the SPPF and C2PSA layers. So a placement means the same thing in every family.
Pure data: no torch, no ultralytics.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from bracli.errors import BracliError, UsageError

FAMILIES = ("yolov8", "yolo11", "yolo26")
TASKS = ("detect", "segment")
SCALES = ("n", "s", "m", "l", "x")
FAMILY_TITLES = {"yolov8": "YOLOv8", "yolo11": "YOLO11", "yolo26": "YOLO26"}
TASK_SUFFIXES = {"detect": "", "segment": "-seg"}  # as in ultralytics' file names: yolo11n-seg.yaml
# Every placement any family has, in graph order: a set of placements always renders to the same file name.
PLACEMENTS = ("backbone-p3", "backbone-p4", "backbone-p5", "sppf", "psa", "p3", "p4", "p5")
NO_BRA = "none"  # --bra-after none: the vanilla graph, the baseline of every BRA experiment
BASE_MODULES = frozenset({"Conv", "C2f", "C3k2", "SPPF", "C2PSA"})  # modules whose args[0] ultralytics width-scales
CSP_BLOCKS = frozenset({"C2f", "C3k2"})
LEVELS = {8: 3, 16: 4, 32: 5}  # output stride -> pyramid level
OBJECT_SIZES = {8: "small", 16: "medium", 32: "large"}


@dataclass(frozen=True)
class Placement:
    """A place a BRA layer can go: right after template layer ``follows``."""

    name: str
    follows: int
    module: str
    stride: int
    description: str


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


@dataclass(frozen=True)
class Template:
    """One family × task graph as shipped, with what bracli derives from it."""

    family: str
    task: str
    file: str
    data: dict[str, Any]
    strides: tuple[int, ...]
    placements: tuple[Placement, ...]

    @property
    def rows(self) -> list[list[Any]]:
        return self.data["backbone"] + self.data["head"]

    def placement(self, name: str) -> Placement:
        return next(p for p in self.placements if p.name == name)


def check_family(family: str) -> str:
    if family not in FAMILIES:
        raise UsageError(f"unknown family '{family}'; choose one of {', '.join(FAMILIES)}")
    return family


def check_task(task: str) -> str:
    if task not in TASKS:
        raise UsageError(f"unknown task '{task}'; choose one of {', '.join(TASKS)}")
    return task


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise UsageError(f"unknown scale '{scale}'; choose one of {', '.join(SCALES)} (see bra init --list)")
    return scale


def template_file(family: str = "yolov8", task: str = "detect") -> str:
    """The template's file name, ultralytics' own: ``yolo11-seg.yaml``."""
    return f"{check_family(family)}{TASK_SUFFIXES[check_task(task)]}.yaml"


def template_dir() -> Path:
    """Where the templates are: shipped inside the wheel, else the repository's ``templates/`` (editable)."""
    package = Path(__file__).resolve().parent.parent
    probe = template_file()
    for candidate in (package / "_templates", package.parent / "templates"):
        if (candidate / probe).is_file():
            return candidate
    raise BracliError(f"bracli's model templates are missing (looked in {package / '_templates'}); reinstall bracli")


def template(family: str = "yolov8", task: str = "detect") -> Template:
    """The shipped graph of ``family`` and ``task`` (cached; callers must not edit it — see ``load_template``)."""
    return _template(check_family(family), check_task(task))


@cache
def _template(family: str, task: str) -> Template:
    file = template_file(family, task)
    path = template_dir() / file
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise BracliError(f"bracli's model template {path} cannot be read ({e.strerror}); reinstall bracli") from e
    strides = _strides(data["backbone"] + data["head"])
    return Template(family, task, file, data, strides, _find_placements(data, strides))


def load_template(family: str = "yolov8", task: str = "detect") -> dict[str, Any]:
    """The plain graph as a dict (a fresh copy: callers may edit it)."""
    return copy.deepcopy(template(family, task).data)


def scale_table(family: str = "yolov8", task: str = "detect") -> dict[str, tuple[float, float, int]]:
    """Scale letter -> (depth, width, max_channels), as in the template."""
    return {name: tuple(values) for name, values in template(family, task).data["scales"].items()}


def placements_for(family: str = "yolov8", task: str = "detect") -> tuple[str, ...]:
    """The placements ``family``/``task`` has, in graph order (YOLOv8 has no ``psa``)."""
    return tuple(p.name for p in template(family, task).placements)


def parse_placements(values: Iterable[str] | str, family: str = "yolov8", task: str = "detect") -> list[str]:
    """Placements from repeated flags and/or comma lists, validated for the family, in graph order.

    ``none`` alone means no BRA layer at all (the vanilla graph) and gives an empty list.
    """
    available = placements_for(family, task)
    seen: list[str] = []
    for value in [values] if isinstance(values, str) else values:
        for piece in str(value).split(","):
            name = piece.strip().lower()
            if not name:
                continue
            if name in seen:
                raise UsageError(f"placement '{name}' given more than once; each placement takes one BRA layer")
            if name not in available and name != NO_BRA:
                if name in PLACEMENTS:
                    raise UsageError(f"{FAMILY_TITLES[family]} has no placement '{name}'; it has "
                                     f"{', '.join(available)} (see bra init --list --family {family})")
                raise UsageError(f"unknown placement '{piece.strip()}'; choose from {', '.join(available)}, "
                                 f"or {NO_BRA} (see bra init --list)")
            seen.append(name)
    if NO_BRA in seen and len(seen) > 1:
        raise UsageError(f"placement '{NO_BRA}' (no BRA layer) cannot be combined with other placements")
    return [name for name in available if name in seen]


def channels(row: list[Any], scale: str, scales: dict[str, list[float]]) -> int:
    """Output channels of a width-scaled layer, as ultralytics' ``parse_model`` computes them:
    ``make_divisible(min(c, max_channels) * width, 8)`` (C3k2 and C2PSA follow the same rule as C2f)."""
    module, args = row[2], row[3]
    if module not in BASE_MODULES:
        raise BracliError(f"template layer {row} is not a width-scaled module; cannot place BRA after it")
    _, width, max_channels = scales[scale]
    return math.ceil(min(args[0], max_channels) * width / 8) * 8


def describe_placements(family: str = "yolov8", task: str = "detect") -> list[PlacementInfo]:
    """Every placement of ``family``/``task`` with the layer it follows, its stride and its channels per scale."""
    graph = template(family, task)
    rows = graph.rows
    return [PlacementInfo(p.name, p.follows, p.module, p.stride, p.description,
                          {s: channels(rows[p.follows], s, graph.data["scales"]) for s in SCALES})
            for p in graph.placements]


def catalogue() -> dict[str, dict[str, tuple[str, ...]]]:
    """family -> task -> placements: everything a command may offer, for option validation and help."""
    return {family: {task: placements_for(family, task) for task in TASKS} for family in FAMILIES}


def _strides(rows: list[list[Any]]) -> tuple[int, ...]:
    """Output stride of every layer: stride-2 convs halve the map, upsampling doubles it."""
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
    return tuple(strides)


def _find_placements(data: dict[str, Any], strides: tuple[int, ...]) -> tuple[Placement, ...]:
    """The placements a graph has, found by structure (see the module docstring)."""
    rows = data["backbone"] + data["head"]
    n_backbone = len(data["backbone"])
    head_inputs, head = rows[-1][0], rows[-1][2]
    found: dict[str, tuple[int, str]] = {}
    for index in head_inputs:
        stride = strides[index]
        found[f"p{LEVELS[stride]}"] = (index, f"the head {rows[index][2]} feeding {head} at "
                                              f"P{LEVELS[stride]}/{stride} ({OBJECT_SIZES[stride]} objects)")
    for index in range(n_backbone):
        module, stride = rows[index][2], strides[index]
        if module in CSP_BLOCKS and stride in LEVELS:
            found[f"backbone-p{LEVELS[stride]}"] = (index, f"the backbone {module} at stride {stride}")  # last wins
        elif module == "SPPF":
            end = ", the end of the backbone" if index == n_backbone - 1 else ""
            found["sppf"] = (index, f"SPPF (spatial pyramid pooling){end}")
        elif module == "C2PSA":
            found["psa"] = (index, "C2PSA (the backbone's own attention), the end of the backbone")
    return tuple(Placement(name, found[name][0], rows[found[name][0]][2], strides[found[name][0]], found[name][1])
                 for name in PLACEMENTS if name in found)
