"""Model YAMLs read as data and built by ultralytics, with one-line reasons when they cannot be.

A model YAML from someone else is parsed (``yaml.safe_load``, no anchors, merge keys or tags), never
evaluated: its ``activation:`` must be a plain ``nn.Name(literals)`` call and every row must name a layer
class, whatever the trust setting for checkpoints. Files bracli did not write are read in BiFormer's
released dialect (``foreign``). ultralytics reads the scale from the file name; bracli says so, and fills
in a missing letter from ``--scale`` (or ``n``, with a notice) instead of letting it be guessed silently.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn
from ultralytics.nn.tasks import DetectionModel, SegmentationModel, guess_model_task

from bracli.engine import foreign
from bracli.engine.foreign import check_activation, shown
from bracli.errors import BracliError, UsageError
from bracli.options import MAX_CLASSES

YAML_SUFFIXES = (".yaml", ".yml")
MODEL_CLASSES = {"detect": DetectionModel, "segment": SegmentationModel}
# An activation is elementwise (PReLU has one weight per channel at most); a "activation" with millions of
# weights is a memory bomb that ultralytics would allocate once per Conv.
MAX_REPEATS = 100  # blocks per row after the depth gain; YOLO's largest is 9, a billion never finishes building


def read_model_yaml(path: str | Path, *, scale: str | None = None,
                    notice: Callable[[str], None] | None = None) -> dict[str, Any]:
    """A model YAML file as the dict ultralytics builds from, checked, with its scale decided.

    bracli's own files (a top-level ``bra:`` key) are read as they are; any other file — the blog's BRA rows,
    a plain ultralytics model — is read in BiFormer's released dialect (``foreign.read_foreign``). ``scale``
    (``--scale``) fills in a name without a scale letter and must agree with one that has it.
    """
    path = Path(path).expanduser()
    data = foreign.read_yaml(path)
    if not foreign.is_bracli_dialect(data):
        converted = foreign.read_foreign(data, source=path, scale=scale)
        if converted.notice and notice:
            notice(converted.notice)
        model = {**converted.model, "scale": converted.scale or "", "yaml_file": str(path)}
        check_model_dict(model, path)
        return model
    check_model_dict(data, path)
    chosen, message = foreign.choose_scale(data, path, scale)
    if message and notice:
        notice(message)
    return {**data, "scale": chosen or "", "yaml_file": str(path)}


def check_model_dict(data: Any, source: str | Path = "model") -> None:
    """The shape of a model YAML, and nothing in it that would be evaluated, called or that exhausts memory."""
    if not isinstance(data, dict):
        raise UsageError(f"{source} is not a model YAML (expected a mapping with backbone and head)")
    foreign.check_is_model(data, Path(source))
    foreign.check_top_level(data, Path(source))
    for key in ("backbone", "head"):
        if not all(isinstance(r, list) and len(r) == 4 for r in data[key]):
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
    found = foreign.yaml_module(module)
    if found is None:
        raise UsageError(f"unknown module '{module}' (row {index}) in the model YAML; bracli adds "
                         "BiLevelRoutingAttention to ultralytics' modules")
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise UsageError(f"{source}: row {index} module '{module}' is not a model layer (a torch.nn.Module class); "
                         "bracli never calls other names from a model YAML")


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

