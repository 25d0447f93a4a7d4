"""Model YAMLs read as data and built by ultralytics, with one-line reasons when they cannot be.

A model YAML from someone else is parsed (``yaml.safe_load``), never evaluated: its ``activation:`` must
be a plain ``nn.Name(literals)`` call, as ultralytics' restricted parser accepts, whatever the trust
setting for checkpoints. ultralytics reads the scale from the file name; bracli says so, and fills in a
missing letter from ``--scale`` (or ``n``, with a notice) instead of letting it be guessed silently.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
import yaml
from torch import nn
from ultralytics.nn import tasks
from ultralytics.nn.tasks import DetectionModel, SegmentationModel, _SafeLoad, guess_model_task

from bracli.errors import BracliError, UsageError
from bracli.options import MAX_CLASSES
from bracli.templates import scale_in_name

YAML_SUFFIXES = (".yaml", ".yml")
MODEL_CLASSES = {"detect": DetectionModel, "segment": SegmentationModel}
# An activation is elementwise (PReLU has one weight per channel at most); a "activation" with millions of
# weights is a memory bomb that ultralytics would allocate once per Conv.
MAX_ACTIVATION_PARAMS = 65_536
MAX_REPEATS = 100  # blocks per row after the depth gain; YOLO's largest is 9, a billion never finishes building


def read_model_yaml(path: str | Path, *, scale: str | None = None,
                    notice: Callable[[str], None] | None = None) -> dict[str, Any]:
    """A model YAML file as the dict ultralytics builds from, checked, with its scale decided.

    ``scale`` (``--scale``) fills in a name without a scale letter and must agree with one that has it.
    """
    path = Path(path).expanduser()
    if path.suffix.lower() not in YAML_SUFFIXES:
        raise UsageError(f"{path} is not a model YAML (.yaml)")
    if not path.is_file():
        raise BracliError(f"model file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as e:  # ValueError: an integer of over 4,300 digits
        raise UsageError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from e
    check_model_dict(data, path)
    in_name = scale_in_name(path)
    scales = data.get("scales") or {}
    if in_name and scale and in_name != scale:
        raise UsageError(f"{path.name} is scale '{in_name}' (ultralytics reads it from the file name) but --scale "
                         f"is '{scale}'; drop --scale or use a file of that scale")
    chosen = in_name or scale
    if scales and chosen is None:
        chosen = "n" if "n" in scales else next(iter(scales))
        if notice:
            notice(f"{path.name} has no scale letter in its name; building scale '{chosen}' (pass --scale to choose)")
    if scales and chosen not in scales:
        raise UsageError(f"{path.name} defines scales {', '.join(scales)}, not '{chosen}'")
    return {**data, "scale": chosen or "", "yaml_file": str(path)}


def check_model_dict(data: Any, source: str | Path = "model") -> None:
    """The shape of a model YAML, and nothing in it that would be evaluated, called or that exhausts memory."""
    if not isinstance(data, dict):
        raise UsageError(f"{source} is not a model YAML (expected a mapping with backbone and head)")
    if "backbone" not in data and ({"train", "val"} & set(data) or "names" in data):
        raise UsageError(f"{source} is a dataset YAML (train/val/names), not a model; give it as the data argument")
    for key in ("backbone", "head"):
        rows = data.get(key)
        if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) == 4 for r in rows):
            raise UsageError(f"{source}: '{key}' must be a list of [from, repeats, module, args] rows")
    nc = data.get("nc")
    if nc is not None and (not isinstance(nc, int) or isinstance(nc, bool) or not 1 <= nc <= MAX_CLASSES):
        raise UsageError(f"{source}: nc {shown(nc)} must be a whole number of classes from 1 to {MAX_CLASSES:,}")
    gains = [data.get("depth_multiple", 1.0)]
    if isinstance(data.get("scales"), dict):
        gains += [row[0] for row in data["scales"].values() if isinstance(row, list) and row]
    depth = max(_depth_gain(gain, source) for gain in gains)
    for index, (_, repeats, module, _) in enumerate(data["backbone"] + data["head"]):
        _check_layer(module, index, source)
        if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1 or \
                (repeats > 1 and round(repeats * depth) > MAX_REPEATS):
            raise UsageError(f"{source}: row {index} repeats {shown(repeats)} times (after the depth gain); a "
                             f"row repeats a block 1 to {MAX_REPEATS} times")
    activation = data.get("activation")
    if activation is not None:
        check_activation(activation, source)


def _depth_gain(gain: Any, source: str | Path) -> float:
    """``depth_multiple`` or a ``scales`` row's first number: how many times each row's repeats are taken."""
    if not isinstance(gain, (int, float)) or isinstance(gain, bool) or not 0 < gain < float("inf"):
        raise UsageError(f"{source}: depth gain {shown(gain)} must be a positive number")
    return float(gain)


def _check_layer(module: Any, index: int, source: str | Path) -> None:
    """A row's module must name a layer class the way ultralytics resolves it — never a function it would call
    (``torch_safe_load`` of a pickle, say) whatever the trust setting."""
    if not isinstance(module, str):
        raise UsageError(f"{source}: row {index} names its module {shown(module)}; expected a name such as Conv")
    if module.startswith("nn."):
        found = getattr(torch.nn, module[3:], None)
    elif module.startswith("torchvision.ops."):
        found = getattr(torchvision.ops, module[16:], None)
    else:
        found = vars(tasks).get(module)
    if found is None:
        raise UsageError(f"unknown module '{module}' (row {index}) in the model YAML; bracli adds "
                         "BiLevelRoutingAttention to ultralytics' modules")
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise UsageError(f"{source}: row {index} module '{module}' is not a model layer (a torch.nn.Module class); "
                         "bracli never calls other names from a model YAML")


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


def model_dict(spec: str | Path | dict[str, Any], *, scale: str | None = None,
               notice: Callable[[str], None] | None = None) -> dict[str, Any]:
    """A model as the dict ultralytics builds from: a rendered dict (copied) or a YAML file."""
    if isinstance(spec, dict):
        check_model_dict(spec)
        return copy.deepcopy(spec)
    return read_model_yaml(spec, scale=scale, notice=notice)


def task_of(cfg: dict[str, Any]) -> str:
    """detect or segment, from the head module (as ultralytics decides)."""
    task = guess_model_task(cfg)
    if task not in MODEL_CLASSES:
        raise UsageError(f"bracli builds detect and segment models; this model's head is for '{task}'")
    return task


def build(spec: str | Path | dict[str, Any], nc: int | None = None, verbose: bool = False, *,
          scale: str | None = None) -> DetectionModel:
    """Build a detection or segmentation model; errors become one-line messages."""
    cfg = model_dict(spec, scale=scale)  # checked: every module name is a known layer
    task = task_of(cfg)
    try:
        return MODEL_CLASSES[task](cfg, nc=nc, verbose=verbose)
    except (ValueError, TypeError, RuntimeError, IndexError, AttributeError, KeyError) as e:
        raise BracliError(f"cannot build the model: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
