"""Model YAMLs bracli did not render, read in the dialect of BiFormer's released code as the blog posts use it.

Two dialects use the module name ``BiLevelRoutingAttention``:
- **bracli's**: the row carries every argument, ``[dim, n_win, num_heads, topk, qk_dim, side_dwconv]``, and the
  file carries a top-level ``bra:`` mapping (``bra init``, ``bra train`` and ``bra migrate`` write it; ultralytics
  ignores keys it does not read). :func:`is_bracli_dialect` tells the two apart by that key alone.
- **the blog's**: a patched ``parse_model`` injected the input channels, so a row lists what follows ``dim`` in
  BiFormer's signature (:mod:`bracli.engine.legacy`), usually nothing: ``[-1, 1, BiLevelRoutingAttention, []]``.

:func:`read_foreign` turns the second into the first. The channels each BRA row receives are found by
ultralytics itself: a copy of the graph, with every BRA row a pass-through ``nn.Identity`` (which ultralytics
hands its input channels on unchanged, as the patched parser did), is built and run on the meta device, so no
name is registered and no weights are allocated. Nothing in a YAML is evaluated here, and ``activation:`` (which
ultralytics ``eval``s when it builds) must be a plain ``nn.Name(literals)`` call.

(About 390 lines, on purpose: reading a foreign file, refusing what cannot be built faithfully and probing
its channels change together when the dialect does; the size limits both dialects share live here because the
probe builds a foreign graph and must come after them.)
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from ultralytics.nn import tasks as ultralytics_tasks
from ultralytics.nn.tasks import _SafeLoad

from bracli.engine.legacy import LegacySettings, is_int, is_number, parse_legacy_arguments, unsupported_message
from bracli.errors import BracliError, UsageError
from bracli.nn.options import BraOptionError, check_bra_options
from bracli.options import MAX_CLASSES
from bracli.templates import BRA_MODULE, METADATA_KEY, SCALES, scale_in_name, to_yaml

MAX_ACTIVATION_PARAMS = 65_536
DATA_KEYS = frozenset({"train", "val", "test", "names", "path", "download"})
MAX_REPEATS = 100  # blocks per row after the depth gain; YOLO's largest is 9, a billion never finishes building
PROBE_SIZE = 256  # the input side of the channel probe (meta tensors: no memory, no compute)
NOT_BRACLI = {  # look-alikes from model zoos, and why they do not map onto bracli's module
    "BiLevelRoutingAttention_nchw": "BiFormer's NCHW variant computes differently (it pads after the projection)",
    "BRABlock": "a BiFormer block (norms, MLP, residuals) around the attention",
    "C2BRA": "a C2f-style block around the attention", "C2fBRA": "a C2f-style block around the attention",
    "CSPStage": "a CSP stage that may hold attention",
}
NEVER_DOWNLOADS = {"TorchVision": "it loads torchvision weights, which are downloaded; bracli never downloads"}


@dataclass
class ConvertedLayer:
    """A BRA row read in the blog's dialect: its index, the layer it follows, and its settings."""

    index: int
    follows: int
    settings: LegacySettings

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "follows": self.follows, **self.settings.to_dict()}


@dataclass
class ForeignModel:
    """A foreign model YAML in bracli's dialect: ``model`` builds with ultralytics once bracli is imported."""

    model: dict[str, Any]
    source: Path
    scale: str | None
    notice: str | None = None  # one line to show the user (the scale bracli chose), or None
    layers: list[ConvertedLayer] = field(default_factory=list)

    @property
    def filename(self) -> str:
        """A file name for the converted model that carries its scale (ultralytics reads it from the name)."""
        return foreign_filename(self.source, self.scale)

    def to_yaml(self) -> str:
        return to_yaml(self.model, f"Converted by bracli from {self.source.name} (the blog's dialect: BiFormer's "
                                   "signature, channels injected).\nBRA args: [dim, n_win, num_heads, topk, qk_dim, "
                                   "side_dwconv]. Use: `import bracli`, then YOLO('<this file>'), or give it to bra.")

    def to_dict(self) -> dict[str, Any]:
        return {"source": str(self.source), "scale": self.scale, "notice": self.notice, "filename": self.filename,
                "layers": [layer.to_dict() for layer in self.layers]}


def is_bracli_dialect(model: dict[str, Any]) -> bool:
    """True for a model bracli wrote (top-level ``bra:`` mapping); anything else is read with :func:`read_foreign`."""
    return isinstance(model.get(METADATA_KEY), dict)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A model YAML as plain data, refusing what a model file has no use for: aliases, anchors, merge keys, tags."""
    path = Path(path)
    if not path.is_file():
        raise BracliError(f"model file not found: {path}")
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise UsageError(f"{path} is not a model YAML (.yaml)")
    try:
        text = path.read_bytes().decode("utf-8")
        _refuse_yaml_tricks(text, path)
        model = yaml.safe_load(text)
    except UnicodeDecodeError as e:
        raise UsageError(f"{path} is not UTF-8 text (byte {e.start})") from e
    except ValueError as e:  # a number too long for Python (over 4,300 digits)
        raise UsageError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UsageError(f"{path} is not valid YAML{where}: {getattr(e, 'problem', None) or e}") from e
    if not isinstance(model, dict):
        raise UsageError(f"{path} is not a model YAML: expected a mapping with backbone: and head:")
    check_is_model(model, path)
    return model


def read_foreign(model: dict[str, Any], *, source: str | Path, scale: str | None = None) -> ForeignModel:
    """A model in the blog's dialect → the same graph in bracli's, for the scale ``scale`` (or the file name's).

    Without a scale letter in the name and without ``scale``, builds scale ``n`` and says so in ``notice``.
    Raises ``UsageError`` (one line naming the layer, argument and value) for anything bracli cannot build
    faithfully: unknown modules, keyword-style or mistyped BRA arguments, settings bracli does not implement.
    """
    source = Path(source)
    if is_bracli_dialect(model):
        raise UsageError(f"{source.name} is already in bracli's dialect (it has a top-level {METADATA_KEY}: key)")
    check_is_model(model, source)
    check_top_level(model, source)
    chosen, notice = choose_scale(model, source, scale)
    rows = model["backbone"] + model["head"]
    parsed = {}
    for index, row in enumerate(rows):
        where = f"{source.name}, layer {index}"
        _check_row(row, where)
        if row[2] == BRA_MODULE:
            if not isinstance(row[0], int):
                raise UsageError(f"{where}: BiLevelRoutingAttention takes one input; 'from' is {row[0]!r}")
            parsed[index] = parse_legacy_arguments(row[3], f"{where} ({BRA_MODULE})")
    converted = copy.deepcopy(model)
    converted_rows = converted["backbone"] + converted["head"]
    layers = []
    for index, dim in _input_channels(model, list(parsed), chosen, source).items():
        where = f"{source.name}, layer {index} ({BRA_MODULE})"
        settings = LegacySettings(dim=dim, **parsed[index])
        if (problem := settings.unsupported()) is not None:
            raise UsageError(unsupported_message(where, *problem))
        try:
            check_bra_options(dim=dim, n_win=settings.n_win, num_heads=settings.num_heads, topk=settings.topk,
                              qk_dim=settings.effective_qk_dim, side_dwconv=settings.side_dwconv,
                              where=f" it receives at scale {chosen}" if chosen else "")
        except BraOptionError as e:
            raise UsageError(f"{where}: {e}") from e
        frm = converted_rows[index][0]
        converted_rows[index][3] = settings.bracli_args()
        layers.append(ConvertedLayer(index=index, follows=index + frm if frm < 0 else frm, settings=settings))
    if chosen is not None:
        converted["scale"] = chosen
    converted[METADATA_KEY] = {"dialect": "blog", "source": source.name,
                               "layers": [layer.settings.metadata(layer.index, layer.follows) for layer in layers]}
    return ForeignModel(model=converted, source=source, scale=chosen, notice=notice, layers=layers)


def foreign_filename(source: str | Path, scale: str | None) -> str:
    """``yolov8-BiLevelRoutingAttention.yaml`` + ``n`` → ``yolov8n-BiLevelRoutingAttention.yaml``."""
    source = Path(source)
    if scale is None or scale_in_name(source) == scale:
        return source.name
    named = re.sub(r"(yolo(?:e-)?v?\d+)", rf"\g<1>{scale}", source.stem, count=1)
    if scale_in_name(named) != scale:
        named = f"yolov8{scale}-{source.stem}"
    return named + ".yaml"


# ------------------------------------------------------------------------------------------------ checks


def _refuse_yaml_tricks(text: str, path: Path) -> None:
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            raise UsageError(f"{path} line {line}: YAML aliases (*{event.anchor}) are not accepted in a model file; "
                             "write the values out")
        if getattr(event, "anchor", None):
            raise UsageError(f"{path} line {line}: YAML anchors (&{event.anchor}) are not accepted in a model file; "
                             "write the values out")
        if getattr(event, "tag", None) and not isinstance(event, yaml.DocumentStartEvent):
            raise UsageError(f"{path} line {line}: YAML tags ({event.tag}) are not accepted in a model file")
        if isinstance(event, yaml.ScalarEvent) and event.value == "<<" and event.style is None:
            raise UsageError(f"{path} line {line}: YAML merge keys (<<) are not accepted in a model file; "
                             "write the values out")


def check_is_model(model: dict[str, Any], source: Path) -> None:
    if "backbone" in model or "head" in model:
        return
    data_keys = sorted(DATA_KEYS & set(model))
    if data_keys:
        raise UsageError(f"{source} is a dataset YAML (it has {', '.join(data_keys)}), not a model YAML; "
                         "give it as DATA (e.g. bra train data.yaml --model MODEL.yaml)")
    raise UsageError(f"{source} is not a model YAML: it has no backbone: and head:")


def check_top_level(model: dict[str, Any], source: Path) -> None:
    for part in ("backbone", "head"):
        if not isinstance(model.get(part), list) or not model[part]:
            raise UsageError(f"{source.name}: {part}: must be a list of [from, repeats, module, args] rows")
    scales = model.get("scales")
    if scales is not None:
        if not isinstance(scales, dict) or not scales:
            raise UsageError(f"{source.name}: scales: must map scale letters to [depth, width, max_channels]")
        for name, values in scales.items():
            if not (isinstance(values, list) and len(values) == 3 and all(is_number(v) for v in values)):
                raise UsageError(f"{source.name}: scales: {name} must be [depth, width, max_channels] numbers, "
                                 f"got {values!r}")
    for key in ("depth_multiple", "width_multiple"):
        if key in model and not is_number(model[key]):
            raise UsageError(f"{source.name}: {key} must be a number, got {model[key]!r}")
    if "channels" in model and (not is_int(model["channels"]) or model["channels"] < 1):
        raise UsageError(f"{source.name}: channels must be a positive integer, got {model['channels']!r}")
    if "activation" in model:
        check_activation(model["activation"], source)
    check_sizes(model, source)


def check_sizes(model: dict[str, Any], source: Path) -> None:
    """The numbers that decide how much ultralytics builds — class count, repeats after the depth gain — within
    bounds, for both dialects and before anything is built (the channel probe builds the foreign graph too).
    Rows that are not ``[from, repeats, module, args]`` are left to the row checks."""
    nc = model.get("nc")
    if nc is not None and (not is_int(nc) or not 1 <= nc <= MAX_CLASSES):
        raise UsageError(f"{source.name}: nc {shown(nc)} must be the number of classes, a whole number from 1 to "
                         f"{MAX_CLASSES:,}")
    gains = [model.get("depth_multiple", 1.0)]
    if isinstance(model.get("scales"), dict):
        gains += [row[0] for row in model["scales"].values() if isinstance(row, list) and row]
    depth = max(_depth_gain(gain, source) for gain in gains)
    for index, row in enumerate(model["backbone"] + model["head"]):
        if not (isinstance(row, list) and len(row) == 4):
            continue
        repeats = row[1]
        if not is_int(repeats) or repeats < 1 or (repeats > 1 and round(repeats * depth) > MAX_REPEATS):
            raise UsageError(f"{source.name}: row {index} repeats {shown(repeats)} times (after the depth gain); a "
                             f"row repeats a block 1 to {MAX_REPEATS} times")


def _depth_gain(gain: Any, source: Path) -> float:
    """``depth_multiple`` or a ``scales`` row's first number: how many times each row's repeats are taken."""
    if not is_number(gain) or not 0 < gain < float("inf"):
        raise UsageError(f"{source.name}: depth gain {shown(gain)} must be a positive number")
    return float(gain)


def check_activation(activation: Any, source: str | Path = "model") -> None:
    """``activation:`` must be a plain ``nn.Name(literals)`` call of a small module; parsed, never evaluated.

    It is instantiated on the meta device (no memory) to count its weights: ultralytics builds one per Conv.
    """
    if not isinstance(activation, str):
        raise UsageError(f"{source}: activation {shown(activation)} is not a plain nn.Name(...) call")
    text = activation
    try:
        with torch.device("meta"):
            module = _SafeLoad.activation(text)
    except TypeError as e:
        raise UsageError(f"{source}: activation {text[:60]!r} is not a plain nn.Name(...) call; "
                         "bracli never evaluates YAML strings") from e
    weights = sum(t.numel() for t in (*module.parameters(), *module.buffers()))
    if weights > MAX_ACTIVATION_PARAMS:
        raise UsageError(f"{source}: activation {text[:60]!r} has {weights:,} weights; an activation is elementwise "
                         "(nn.SiLU(), nn.ReLU(), nn.LeakyReLU(0.1))")


def shown(value: Any) -> str:
    """A value from a file, for a message: short, and never expanded (a YAML alias bomb prints as its type)."""
    if isinstance(value, (str, bool, float, type(None))) or (isinstance(value, int) and abs(value) < 10**40):
        return repr(value)[:60]
    return f"(a {'huge number' if isinstance(value, int) else type(value).__name__})"


def _check_row(row: Any, where: str) -> None:
    if not isinstance(row, list) or len(row) != 4:
        raise UsageError(f"{where}: a row is [from, repeats, module, args], got {row!r}")
    frm, _, module, args = row
    sources = frm if isinstance(frm, list) else [frm]
    if not sources or not all(is_int(s) for s in sources):
        raise UsageError(f"{where}: 'from' must be a layer index or a list of them, got {frm!r}")
    if not isinstance(module, str):
        raise UsageError(f"{where}: module must be a name, got {module!r}")
    if not isinstance(args, list):
        kind = "keyword-style arguments" if isinstance(args, dict) else f"{args!r}"
        raise UsageError(f"{where} ({module}): args must be a list of positional values, got {kind}")
    if module != BRA_MODULE:
        _check_module(module, where)


def yaml_module(name: str) -> Any:
    """What ultralytics' ``parse_model`` resolves a YAML module name to — ``nn.X`` in torch.nn,
    ``torchvision.ops.X``, else a name in ``ultralytics.nn.tasks`` — or None. Only looked up, never called:
    callers accept it only when it is a ``torch.nn.Module`` class."""
    if name.startswith("nn."):
        return getattr(torch.nn, name[3:], None)
    if name.startswith("torchvision.ops."):
        import torchvision

        return getattr(torchvision.ops, name[16:], None)
    return vars(ultralytics_tasks).get(name)


def _check_module(name: str, where: str) -> None:
    """A module name ultralytics resolves to a torch module class (its YAML vocabulary), else one line saying why."""
    if name in NEVER_DOWNLOADS:
        raise UsageError(f"{where}: module {name} is refused: {NEVER_DOWNLOADS[name]}")
    found = None if name.startswith("_") else yaml_module(name)
    if isinstance(found, type) and issubclass(found, torch.nn.Module):
        return
    why = f" ({NOT_BRACLI[name]})" if name in NOT_BRACLI else ""
    raise UsageError(f"{where}: unknown module {name}{why}; bracli supports ultralytics' own modules and "
                     f"{BRA_MODULE} rows in BiFormer's signature — replace the row with "
                     f"[-1, 1, {BRA_MODULE}, []] for BiFormer's defaults")


def choose_scale(model: dict[str, Any], source: Path, scale: str | None) -> tuple[str | None, str | None]:
    if scale is not None and scale not in SCALES:
        raise UsageError(f"unknown scale '{scale}'; choose one of {', '.join(SCALES)}")
    scales = model.get("scales")
    named = scale_in_name(source)
    if not scales:
        if scale is not None:
            raise UsageError(f"--scale {scale}: {source.name} has no scales: table to choose from")
        return None, None
    if scale is not None and named is not None and named != scale:
        raise UsageError(f"--scale {scale}: the name {source.name} says scale '{named}'; rename the file or drop "
                         "--scale")
    chosen = scale or named
    notice = None
    if chosen is None:
        chosen = "n"
        notice = f"{source.name} has no scale letter in its name; building scale n (choose with --scale n|s|m|l|x)"
    if chosen not in scales:
        raise UsageError(f"scale '{chosen}' is not in the scales: of {source.name} ({', '.join(map(str, scales))})")
    return chosen, notice


# ------------------------------------------------------------------------------------------------ channels


class _Reached(Exception):
    """Stops the probe once the last BRA row has seen its input."""


def _input_channels(model: dict[str, Any], indices: list[int], scale: str | None, source: Path) -> dict[int, int]:
    """Channels entering each BRA row, as ultralytics computes them, with pass-throughs in those rows."""
    if not indices:
        return {}
    import torch

    tasks = ultralytics_tasks
    probe = copy.deepcopy(model)
    probe.pop("activation", None)  # channels do not depend on it; ultralytics would eval it
    probe.setdefault("nc", 80)  # nor on the class count
    if scale is not None:
        probe["scale"] = scale
    rows = probe["backbone"] + probe["head"]
    for index in indices:
        rows[index][2], rows[index][3] = "nn.Identity", []
    channels = probe.get("channels", 3)
    seen: dict[int, int] = {}

    def record(index: int):
        def hook(_module, inputs):
            seen[index] = int(inputs[0].shape[1])
            if len(seen) == len(indices):
                raise _Reached
        return hook

    try:
        with torch.device("meta"):
            layers, save = tasks.parse_model(probe, ch=channels, verbose=False)
            for index in indices:
                layers[index].register_forward_pre_hook(record(index))
            net = tasks.BaseModel()
            net.model, net.save = layers, save
            net._predict_once(torch.zeros(1, channels, PROBE_SIZE, PROBE_SIZE))
    except _Reached:
        pass
    except Exception as e:  # the user's graph does not build: name it in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UsageError(f"{source.name} does not build with ultralytics: {type(e).__name__}: {first}") from e
    return {index: seen[index] for index in indices}
