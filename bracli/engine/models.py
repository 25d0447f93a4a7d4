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

import yaml
from torch import nn
from ultralytics.nn.tasks import DetectionModel, SegmentationModel, _SafeLoad, guess_model_task

from bracli.errors import BracliError, UsageError
from bracli.templates import scale_in_name

YAML_SUFFIXES = (".yaml", ".yml")
MODEL_CLASSES = {"detect": DetectionModel, "segment": SegmentationModel}


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
    except (yaml.YAMLError, UnicodeDecodeError) as e:
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
    """The shape of a model YAML, and nothing in it that would be evaluated."""
    if not isinstance(data, dict):
        raise UsageError(f"{source} is not a model YAML (expected a mapping with backbone and head)")
    if "backbone" not in data and ({"train", "val"} & set(data) or "names" in data):
        raise UsageError(f"{source} is a dataset YAML (train/val/names), not a model; give it as the data argument")
    for key in ("backbone", "head"):
        rows = data.get(key)
        if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) == 4 for r in rows):
            raise UsageError(f"{source}: '{key}' must be a list of [from, repeats, module, args] rows")
    activation = data.get("activation")
    if activation is not None:
        try:
            _SafeLoad.activation(str(activation))
        except TypeError as e:
            raise UsageError(f"{source}: activation {str(activation)[:60]!r} is not a plain nn.Name(...) call; "
                             "bracli never evaluates YAML strings") from e


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
    cfg = model_dict(spec, scale=scale)
    task = task_of(cfg)
    rows = cfg["backbone"] + cfg["head"]
    try:
        return MODEL_CLASSES[task](cfg, nc=nc, verbose=verbose)
    except KeyError as e:
        name = str(e.args[0]) if e.args else str(e)
        where = next((f" (row {i})" for i, row in enumerate(rows) if row[2] == name), "")
        raise UsageError(f"unknown module '{name}'{where} in the model YAML; bracli adds BiLevelRoutingAttention "
                         "to ultralytics' modules") from e
    except (ValueError, TypeError, RuntimeError, IndexError, AttributeError) as e:
        raise BracliError(f"cannot build the model: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
